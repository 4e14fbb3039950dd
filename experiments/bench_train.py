"""Training-speed benchmark: epoch time and achieved GFLOP/s against a big matmul.

Command (2 CPU cores here: about 1-2 minutes):

    .venv/bin/python -m experiments.bench_train [--models lenet300_100 lenet5]

For each model it times full training epochs (conv models with and without
``fast_conv_grad``, see ``autosparse_jax/conv.py``) of the jitted masked epoch program
on Fashion-MNIST (60,000 images, batch 128, SGD momentum 0.9) after one warm-up
epoch, counts the FLOPs of one train step with XLA's cost analysis, and divides
by a 2048^3 float32 matmul's GFLOP/s measured in the same run. When PyTorch
is installed (``pip install -e '.[bench]'``, never a dependency of the
package) it also times the same masked SGD loop in plain PyTorch
(``experiments/torch_peer.py``) on the same data and prints the ratio to the
faster JAX variant. Timings on shared machines are noisy: compare the ratios,
which are measured side by side. ``--generated`` times on random data of
Fashion-MNIST's shape (no dataset needed).
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


def bench_model(
    name: str, dataset, *, batch_size: int, epochs: int, fast_conv_grad: bool
) -> dict:
    """Times ``epochs`` epochs (after a warm-up) of ``name`` on ``dataset``."""
    info = data.DATASETS["fashion_mnist"]
    model = models.get_model(
        name, num_classes=info.num_classes, fast_conv_grad=fast_conv_grad
    )
    params, model_state = models.init_params(jax.random.key(0), model, info.input_shape)
    optimizer = train.sgd(0.01, momentum=0.9)
    preprocess = data.preprocess_config("fashion_mnist")
    state = train.init_train_state(
        params, masks.dense_mask(params), optimizer, model_state
    )
    batch = jax.tree.map(lambda x: jnp.asarray(x[:batch_size]), dataset)
    flops_per_step = _step_flops(model, optimizer, state, batch, preprocess)
    train_epoch = train.make_train_epoch(
        model, optimizer, batch_size=batch_size, preprocess=preprocess
    )
    device_data = train.to_device(dataset)
    key = jax.random.key(0)
    start = time.perf_counter()
    state, metrics = train_epoch(state, device_data, key, 0)
    jax.block_until_ready(metrics)
    compile_and_first = time.perf_counter() - start
    times = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state, metrics = train_epoch(state, device_data, key, epoch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    steps = len(dataset["label"]) // batch_size
    epoch_s = float(np.median(times))
    return {
        "model": name,
        "fast_conv_grad": fast_conv_grad,
        "params": models.count_params(params),
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "first_epoch_s": compile_and_first,
        "epoch_s": epoch_s,
        "mflop_per_step": flops_per_step / 1e6,
        "gflops": flops_per_step * steps / epoch_s / 1e9,
        "compiles": train_epoch._cache_size(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300_100", "lenet5"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--generated",
        action="store_true",
        help="time on generated Fashion-MNIST-shaped data (no dataset needed)",
    )
    args = parser.parse_args(argv)

    if args.generated:
        dataset = data.generated_like("fashion_mnist", 60_000, seed=0)
    else:
        dataset = data.load_dataset("fashion_mnist", "train")
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    peak = _matmul_gflops()
    print(f"2048^3 float32 matmul: {peak:.1f} GFLOP/s")
    rows = []
    for name in args.models:
        for fast in (False, True) if name != "lenet300_100" else (False,):
            row = bench_model(
                name,
                dataset,
                batch_size=args.batch_size,
                epochs=args.epochs,
                fast_conv_grad=fast,
            )
            row["matmul_gflops"] = peak
            row["ratio_to_matmul"] = row["gflops"] / peak
            rows.append(row)
            label = f"{name}{' fast_conv_grad' if fast else ''}"
            print(
                f"{label:>28}: epoch {row['epoch_s']:.2f} s "
                f"({row['steps_per_epoch']} steps x {row['mflop_per_step']:.1f} "
                f"MFLOP), {row['gflops']:.1f} GFLOP/s = "
                f"{100 * row['ratio_to_matmul']:.0f}% of matmul; first epoch incl. "
                f"compile {row['first_epoch_s']:.1f} s; compiled {row['compiles']}x"
            )
    if torch_peer.available():
        print(f"the same masked SGD loop in {torch_peer.version()}:")
        info = data.DATASETS["fashion_mnist"]
        for name in [m for m in args.models if m in torch_peer.MODELS]:
            torch_s = torch_peer.epoch_seconds(
                name, dataset["image"], dataset["label"], mean=info.mean[0],
                std=info.std[0], batch_size=args.batch_size, epochs=args.epochs,
            )  # fmt: skip
            best = min((r for r in rows if r["model"] == name), key=_epoch)
            best.update(torch_epoch_s=torch_s, speedup=torch_s / best["epoch_s"])
            label = f"{name}{' fast_conv_grad' if best['fast_conv_grad'] else ''}"
            print(
                f"{name:>28}: epoch {torch_s:.2f} s in PyTorch; JAX ({label}) "
                f"{best['epoch_s']:.2f} s is {best['speedup']:.2f}x as fast"
            )
    else:
        print("PyTorch not installed: pip install -e '.[bench]' adds its peer loop")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _epoch(row: dict) -> float:
    return row["epoch_s"]


if __name__ == "__main__":
    main()
