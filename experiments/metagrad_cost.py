"""Cost of the meta-gradient and of the summed g0 beside one dense epoch.

For each validation target (seed 5, the ``variants_metagrad_<target>``
configs): the median wall time of ``variants_metagrad``'s meta-gradient
(``PROSPR_STEPS`` differentiable SGD steps on the scoring batches), of the
summed ``g0`` over one pass through the training set (``autos_gsum``'s
features) and of one dense epoch of the recipe, all jitted, in one process so
the three share the machine's load. Writes ``<workdir>/cost.json``.

    .venv/bin/python -m experiments.metagrad_cost \\
        --workdir experiments/results/variants_metagrad_cost
"""

import argparse
import json
import os

import jax

from autosparse_jax import criteria, data, masks, train
from experiments import common
from experiments import variants_metagrad as vm

TARGETS = ("fmnist_lenet300", "fmnist_mlp4", "mnist1d_lenet300")


def measure(target: str) -> dict[str, float | str]:
    config = common.load_config(f"experiments/configs/variants_metagrad_{target}.py")
    host = data.load_dataset(config.dataset, config.train_split)
    recipe = common.make_recipe(config, len(host["label"]))
    t = common.make_target(5, recipe, host, config)
    lr = config.train.learning_rate
    epoch = vm.epoch_batches(
        jax.random.key(0), host, config.dataset, config.train.batch_size
    )
    grad = jax.jit(lambda p, b: criteria.loss_gradient(p, b, apply_fn=t.apply_fn))
    train_data = train.to_device(host)

    def dense_epoch():
        p = jax.tree.map(lambda x: x.copy(), t.params)  # the epoch donates them
        state = train.init_train_state(
            p, masks.dense_mask(p), recipe.optimizer, t.model_state
        )
        return recipe.train_epoch(state, train_data, t.data_key, 0)[1]["loss"]

    return {
        "metagradient_s": common.timed(
            lambda: vm._dense_metagradient(t.params, t.batches, t.apply_fn, lr)
        ),
        "summed_g0_s": common.timed(lambda: grad(t.params, epoch), repeats=3),
        "dense_epoch_s": common.timed(dense_epoch, repeats=3),
        "device": common.device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default="experiments/results/variants_metagrad_cost"
    )
    args = parser.parse_args()
    out = {target: measure(target) for target in TARGETS}
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "cost.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
