"""Training-speed benchmark: epoch time and achieved GFLOP/s against a big matmul.

Command (2 CPU cores here: about 10 minutes; ``--num-train 5120`` for a quick look;
Conv-2/4/6 take minutes per epoch here, so time them on ``--num-train 1280``):

    .venv/bin/python -m experiments.bench_train [--models lenet300_100 lenet5 conv2] \\
        [--variants batch_minor] [--num-train N] [--epochs E]

For each model it times full training epochs of the jitted masked epoch program
on Fashion-MNIST (60,000 images, batch 128, SGD momentum 0.9), for every way
the model can be built (conv models: plain ``nn.Conv``, ``fast_conv_grad`` and
``batch_minor``, see ``autosparse_jax/conv.py``, and ``batch_parts``:
``batch_minor`` on two batch slices at once, ``models.BatchParts``), counts the
FLOPs of one train step with XLA's cost analysis (the plain model's step for
every variant: the same useful work), and divides by a 2048^3 float32
matmul's GFLOP/s measured in the same run. When PyTorch is installed (``pip
install -e '.[bench]'``, never a dependency of the package) it also times the
same masked SGD loop in plain PyTorch (``experiments/torch_peer.py``) and prints
each JAX variant's speed relative to it. After one warm-up epoch each, the
timed epochs interleave (one epoch of every loop per round; medians reported),
so the ratios are measured side by side even on a noisy shared machine.
``--generated`` times on random data of Fashion-MNIST's shape (no dataset needed).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import data, masks, models, train
from experiments import torch_peer


def _matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a jitted ``size``^3 float32 matmul."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def _step_flops(model, optimizer, state, batch, preprocess) -> float:
    """FLOPs of one masked train step, from XLA's cost analysis."""
    step = train.make_train_step(model, optimizer, preprocess=preprocess)
    cost = step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


# The ways a model can be built for training: ``get_model`` options, and how
# many batch slices run at once (``models.BatchParts``; 1: the batch whole).
VARIANTS = {
    "plain": ({}, 1),
    "fast_conv_grad": ({"fast_conv_grad": True}, 1),
    "batch_minor": ({"batch_minor": True}, 1),
    "batch_parts": ({"batch_minor": True}, 2),
}


def variants_of(name: str) -> list[str]:
    """The ``VARIANTS`` model ``name`` has: conv options only where they apply."""
    module = models.get_model(name, num_classes=10)
    if isinstance(module, models.MLP):
        return ["plain"]
    return [v for v in VARIANTS if all(hasattr(module, f) for f in VARIANTS[v][0])]


def build_variant(name: str, variant: str, num_classes: int):
    """Model ``name`` built the ``VARIANTS[variant]`` way."""
    options, parts = VARIANTS[variant]
    model = models.get_model(name, num_classes=num_classes, **options)
    return models.BatchParts(model, parts) if parts > 1 else model


class _JaxEpoch:
    """One model variant's jitted masked epoch on ``dataset``, warmed up.

    ``device_data`` is ``dataset`` already on the device (shared by all loops).
    """

    def __init__(self, name, variant, dataset, device_data, *, batch_size):
        info = data.DATASETS["fashion_mnist"]
        model = build_variant(name, variant, info.num_classes)
        params, model_state = models.init_params(
            jax.random.key(0), model, info.input_shape
        )
        optimizer = train.sgd(0.01, momentum=0.9)
        preprocess = data.preprocess_config("fashion_mnist")
        self.state = train.init_train_state(
            params, masks.dense_mask(params), optimizer, model_state
        )
        batch = jax.tree.map(lambda x: jnp.asarray(x[:batch_size]), dataset)
        # Every variant is credited with the FLOPs of the plain model's step:
        # the tiled batch-minor convolutions also multiply zeros (conv.py), and
        # counting those would flatter their share of the matmul peak.
        plain = models.get_model(name, num_classes=info.num_classes)
        flops = _step_flops(plain, optimizer, self.state, batch, preprocess)
        self.epoch_fn = train.make_train_epoch(
            model, optimizer, batch_size=batch_size, preprocess=preprocess
        )
        self.data = device_data
        self.epoch = 0
        self.row = {
            "model": name,
            "variant": variant,
            "params": models.count_params(params),
            "batch_size": batch_size,
            "steps_per_epoch": len(dataset["label"]) // batch_size,
            "mflop_per_step": flops / 1e6,
            "first_epoch_s": _seconds(self),
        }

    def __call__(self) -> None:
        """Trains one more epoch and waits for it."""
        self.state, metrics = self.epoch_fn(
            self.state, self.data, jax.random.key(0), self.epoch
        )
        jax.block_until_ready(metrics)
        self.epoch += 1


def bench(
    names, dataset, *, batch_size: int, epochs: int, peak: float, variants=VARIANTS
) -> list[dict]:
    """Times each of ``variants`` every model has, and its PyTorch peer where
    there is one.

    After one warm-up epoch each, the ``epochs`` rounds interleave: each round
    runs one epoch of every timed loop in turn, so a slow spell of a shared
    machine hits all of them alike; the medians are reported.
    """
    loops, rows = [], []
    device_data = train.to_device(dataset)
    for name in names:
        for variant in [v for v in variants_of(name) if v in variants]:
            loop = _JaxEpoch(name, variant, dataset, device_data, batch_size=batch_size)
            loops.append((loop.row, loop))
            rows.append(loop.row)
    peers = {}
    if torch_peer.available():
        info = data.DATASETS["fashion_mnist"]
        for name in [m for m in names if m in torch_peer.MODELS]:
            one_epoch, _, _ = torch_peer.make_epoch(
                name, dataset["image"], dataset["label"], mean=info.mean[0],
                std=info.std[0], batch_size=batch_size,
            )  # fmt: skip
            one_epoch()  # warm-up
            peers[name] = {}
            loops.append((peers[name], one_epoch))
    times = {id(row): [] for row, _ in loops}
    for _ in range(epochs):
        for row, loop in loops:
            times[id(row)].append(_seconds(loop))
    for row, _ in loops:
        row["epoch_s"] = float(np.median(times[id(row)]))
    for row, loop in loops:
        if isinstance(loop, _JaxEpoch):
            row["compiles"] = loop.epoch_fn._cache_size()
    for row in rows:
        steps = row["steps_per_epoch"]
        row["gflops"] = row["mflop_per_step"] * 1e6 * steps / row["epoch_s"] / 1e9
        row["matmul_gflops"] = peak
        row["ratio_to_matmul"] = row["gflops"] / peak
        if row["model"] in peers:
            row["torch_epoch_s"] = peers[row["model"]]["epoch_s"]
            row["speedup"] = row["torch_epoch_s"] / row["epoch_s"]
    return rows


def _seconds(fn) -> float:
    """Wall-clock seconds of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300_100", "lenet5"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="time only these ways of building a model (default: all it has)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--generated",
        action="store_true",
        help="time on generated Fashion-MNIST-shaped data (no dataset needed)",
    )
    parser.add_argument(
        "--num-train",
        type=int,
        help="time epochs of the first N training images (default: all 60,000)",
    )
    args = parser.parse_args(argv)

    if args.generated:
        dataset = data.generated_like("fashion_mnist", args.num_train or 60_000, seed=0)
    else:
        dataset = data.load_dataset("fashion_mnist", "train")
        if args.num_train:
            dataset = jax.tree.map(lambda x: x[: args.num_train], dataset)
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    peak = _matmul_gflops()
    print(f"2048^3 float32 matmul: {peak:.1f} GFLOP/s")
    if not torch_peer.available():
        print("PyTorch not installed: pip install -e '.[bench]' adds its peer loop")
    else:
        print(f"peer: the same masked SGD loop in {torch_peer.version()}")
    rows = bench(
        args.models, dataset, batch_size=args.batch_size, epochs=args.epochs,
        peak=peak, variants=args.variants,
    )  # fmt: skip
    for row in rows:
        label = f"{row['model']} {row['variant']}"
        line = (
            f"{label:>28}: epoch {row['epoch_s']:.2f} s "
            f"({row['steps_per_epoch']} steps x {row['mflop_per_step']:.1f} "
            f"MFLOP), {row['gflops']:.1f} GFLOP/s = "
            f"{100 * row['ratio_to_matmul']:.0f}% of matmul; first epoch incl. "
            f"compile {row['first_epoch_s']:.1f} s; compiled {row['compiles']}x"
        )
        if "speedup" in row:
            line += (
                f"; PyTorch {row['torch_epoch_s']:.2f} s, JAX is "
                f"{row['speedup']:.2f}x as fast"
            )
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
