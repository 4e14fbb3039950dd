"""Is batching independent runs with ``jax.vmap`` faster than running them in turn?

Command (part of ``make bench``; about a minute on 2 CPU cores):

    .venv/bin/python -m experiments.bench_vmap [--models lenet300_100] [--k 1 3 7]

For ``K`` masked LeNet-300-100 runs (``K`` seeds' params, each with its own
99 %-sparse random mask and data key, as the benchmark's seeds and sparsity
levels are), it times one training epoch on Fashion-MNIST two ways: the
jitted epoch called ``K`` times in turn, and one jitted ``jax.vmap`` of the
same epoch over the ``K`` states and keys. Both are warmed up (compiled)
first; the median of ``--repeats`` timings is reported, with the ratio
measured side by side in the same run.
"""

import argparse
import json

import jax

from autosparse_jax import criteria, data, masks, models, train
from experiments import common


def bench(name: str, k: int, device_data, *, batch_size: int, repeats: int) -> dict:
    info = data.DATASETS["fashion_mnist"]
    model = models.get_model(name, num_classes=info.num_classes)
    optimizer = train.sgd(0.05, momentum=0.9)
    preprocess = data.preprocess_config("fashion_mnist")
    keys = jax.random.split(jax.random.key(0), k)

    def make_state(key):
        params, model_state = models.init_params(key, model, info.input_shape)
        scores = criteria.random(key, params, None, apply_fn=None, mask=None)
        mask = masks.mask_from_scores(scores, 0.99)
        return train.init_train_state(params, mask, optimizer, model_state)

    states = [make_state(key) for key in keys]
    epoch_fn = train.train_epoch_fn(
        model, optimizer, batch_size=batch_size, preprocess=preprocess
    )
    one = jax.jit(epoch_fn)
    batched = jax.jit(jax.vmap(epoch_fn, in_axes=(0, None, 0, None)))
    stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)

    def in_turn():
        return [
            one(s, device_data, key, 0) for s, key in zip(states, keys, strict=True)
        ]

    sequential = common.timed(in_turn, repeats)
    vmapped = common.timed(lambda: batched(stacked, device_data, keys, 0), repeats)
    return {
        "model": name,
        "k": k,
        "sequential_s": sequential,
        "vmapped_s": vmapped,
        "speedup": sequential / vmapped,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300_100"])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 3, 7])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    host = data.load_dataset("fashion_mnist", args.train_split)
    device_data = train.to_device(host)
    device = f"{jax.devices()[0].device_kind}"
    rows = []
    print(f"One epoch of K masked runs on {device}, median of {args.repeats}:")
    for name in args.models:
        for k in args.k:
            row = bench(name, k, device_data, batch_size=128, repeats=args.repeats)
            rows.append(row)
            print(
                f"  {name:14s} K={k}: in turn {row['sequential_s']:.2f} s, "
                f"vmapped {row['vmapped_s']:.2f} s, speedup x{row['speedup']:.2f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
