"""The main job: AutoSparse end to end on Fashion-MNIST, in a few minutes.

Command (from the repository root; ``make demo`` installs everything first):

    .venv/bin/python -m experiments.demo [--workdir runs/demo-<time>] [--quick]

Steps: prepare Fashion-MNIST; run a short IRP on LeNet-300-100 (seed 0) and
save its survival labels; fit AutoS (scorers and layer-allocation model) on
them; prune a fresh LeNet-300-100 (seed 1) at 90 and 99 % with AutoS
(global threshold and learned allocation), SynFlow, SNIP, magnitude and
random; train each mask with the one shared recipe; print the table, the IRP
source run's own accuracy as a reference, and how AutoS compares. Writes
``irp/`` and ``benchmark/`` (``runs.jsonl``, ``table.md``, ``accuracy.png``,
``layer_density.png``) to the work directory; the same ``--workdir`` resumes.

Hardware: 2 CPU cores. Runtime and expected table: ``experiments/README.md``
(config: ``experiments/configs/demo.py``).
"""

import os
import time

from autosparse_jax import data, evaluation
from experiments import common, irp_study, runner

DEFAULT_CONFIG = "experiments/configs/demo.py"


def irp_reference(rows: list[dict], sparsities) -> str:
    """The IRP source run's test accuracy at its rounds nearest ``sparsities``."""
    at = [
        rows[evaluation.irp_round_at([r["sparsity"] for r in rows], s)]
        for s in sparsities
    ]
    cells = ", ".join(
        f"{100 * r['sparsity']:.1f} %: {100 * r['test_accuracy']:.2f}" for r in at
    )
    return f"IRP, the source run (seed 0, not retrained; the reference): {cells}"


def verdict(records: list[dict], sparsity: float, irp_acc: float) -> str:
    """One sentence: AutoS against SynFlow and IRP at ``sparsity``."""
    acc = {
        r["method"]: 100 * r["final_test_accuracy"]
        for r in records
        if round(r["sparsity"], 6) == round(sparsity, 6)
    }
    autos = max(("autos_learned", "autos_global"), key=lambda m: acc.get(m, -1.0))
    if autos not in acc or "synflow" not in acc:
        return ""
    order = "ahead of" if acc[autos] > acc["synflow"] else "behind"
    return (
        f"At {100 * sparsity:g} % sparsity the better AutoS ({autos}, "
        f"{acc[autos]:.2f} %) is {order} SynFlow ({acc['synflow']:.2f} %) and "
        f"{irp_acc - acc[autos]:.2f} points below IRP ({irp_acc:.2f} %) on this "
        "one seed; experiments/RESULTS.md compares every AutoS variant with "
        "SynFlow and IRP over 3 seeds on three targets."
    )


def main(argv: list[str] | None = None) -> None:
    args, config, _ = common.parse_args(__doc__.splitlines()[0], DEFAULT_CONFIG, argv)
    workdir = args.workdir or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    tic = time.perf_counter()
    print(f"[1/3] Fashion-MNIST ({data.DATASETS['fashion_mnist'].input_shape})")
    data.load_dataset("fashion_mnist", "test")  # prepares the dataset once
    ic = config.irp
    print(
        f"[2/3] IRP on {ic.model}, seed {ic.seed}: {ic.irp.num_rounds} rounds x "
        f"{ic.irp.epochs_per_round} epochs to {ic.irp.final_sparsity:.0%} sparsity"
    )
    source = irp_study.run(ic, os.path.join(workdir, "irp"), baselines=False)

    bench = config.benchmark
    bench.source = source.labels_dir
    print(
        f"[3/3] AutoS fitted on those labels; a fresh {bench.model} (seed "
        f"{bench.seeds[0]}) pruned by {', '.join(bench.methods[1:])} at "
        f"{', '.join(f'{s:.0%}' for s in bench.sparsities)}, each trained "
        f"{bench.train.num_epochs} epochs"
    )
    bench_dir = os.path.join(workdir, "benchmark")
    print(runner.run_study(bench, bench_dir))
    print(irp_reference(source.rows, bench.sparsities))
    top = max(bench.sparsities)
    rows = source.rows
    irp_acc = (
        100
        * rows[evaluation.irp_round_at([r["sparsity"] for r in rows], top)][
            "test_accuracy"
        ]
    )
    print(
        verdict(
            runner.RunLog(os.path.join(bench_dir, "runs.jsonl")).records(), top, irp_acc
        )
    )
    print(
        f"Done in {(time.perf_counter() - tic) / 60:.1f} min. Results: "
        f"{bench_dir}/ (runs.jsonl, table.md, accuracy.png, layer_density.png); "
        f"IRP labels: {source.labels_dir}"
    )


if __name__ == "__main__":
    main()
