"""One IRP round of the ResNet-18 / CIFAR-10 recipe on generated data: speed and memory.

Command (``make gpu-check`` runs the ``gpu`` tests, this script and the
training benchmark in one call, on a machine with an accelerator):

    python -m experiments.gpu_check [--epochs 2] [--num-train 50000]
        [--config experiments/configs/cifar10_resnet18.py] [--model NAME]

It builds the config's recipe (model, optimizer, batch size, augmentation),
replaces the dataset by ``data.generated_like`` data of the same shape (no
download: accelerator machines here have no network), runs one IRP round of
``--epochs`` epochs through ``irp_study.run_rounds`` (the study's own path:
checkpoint, compile count) and prints the device, the epoch time, the
compile time, the peak device memory and what a full round of the config's
epochs would take. Accuracy on generated data means nothing and is not shown.
Results also go to ``<workdir>/gpu_check.json``.

Hardware: one GPU; about 1-2 minutes on an H100-class GPU (estimate). On CPU
use a small model (``--model lenet5 --num-train 512``), as the test does.
"""

import argparse
import json
import os
import time

import jax

from autosparse_jax import data
from experiments import common, irp_study

DEFAULT_CONFIG = "experiments/configs/cifar10_resnet18.py"


def memory_gib() -> float | None:
    """Peak memory in use on the first device, GiB (``None`` where unknown)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--model", default=None, help="default: the config's")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=50_000)
    parser.add_argument("--num-test", type=int, default=10_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or time.strftime("runs/gpu-check-%Y%m%d-%H%M%S")

    config = common.load_config(args.config)
    full_epochs = config.irp.epochs_per_round
    config.model = args.model or config.model
    config.irp.num_rounds = 1
    config.irp.epochs_per_round = args.epochs
    config.train.num_epochs = args.epochs
    host = (
        data.generated_like(config.dataset, args.num_train, seed=0),
        data.generated_like(config.dataset, args.num_test, seed=1),
    )
    print(f"devices: {jax.devices()}; {common.device_name()}")
    print(
        f"{config.model}, {config.dataset}-shaped generated data: "
        f"{args.num_train} train / {args.num_test} test images, batch "
        f"{config.train.batch_size}, one IRP round of {args.epochs} epochs"
    )
    setup = irp_study.make_setup(config, host)
    _, rows, info = irp_study.run_rounds(config, setup, workdir, progress=True)
    row = rows[0]
    epoch_s = (row["seconds"] - row["compile_seconds"]) / args.epochs
    result = {
        "device": common.device_name(),
        "model": config.model,
        "dataset_shape": config.dataset,
        "num_train": args.num_train,
        "batch_size": config.train.batch_size,
        "epochs": args.epochs,
        "epoch_seconds": epoch_s,
        "compile_seconds": row["compile_seconds"],
        "round_program_compiles": sum(
            n for name, n in info["compiles"].items() if "run_round" in name
        ),
        "peak_memory_gib": memory_gib(),
        "full_round_minutes": epoch_s * full_epochs / 60,
    }
    memory = result["peak_memory_gib"]
    print(
        f"epoch {epoch_s:.2f} s (round incl. scoring and evaluation, compile "
        f"{row['compile_seconds']:.1f} s excluded); peak device memory "
        + ("not reported by this backend" if memory is None else f"{memory:.2f} GiB")
        + f"; a round of the config's {full_epochs} epochs: about "
        f"{result['full_round_minutes']:.1f} min"
    )
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
