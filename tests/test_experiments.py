"""Smoke tests of the experiment scripts on real Fashion-MNIST at tiny budgets.

They check that the scripts run end to end and write what they promise; they
assert nothing about accuracy.
"""

import csv
import json
import os

import jax
import pytest

from autosparse_jax import _tfds_datasets, irp, masks, models, scorer
from experiments import (
    common,
    demo,
    run_allocation,
    run_benchmark,
    run_irp,
    run_pai_baselines,
    run_scorer,
)

needs_fashion_mnist = pytest.mark.skipif(
    _tfds_datasets.find_source_dir(_tfds_datasets.candidate_dirs(None)) is None,
    reason="Fashion-MNIST IDX files missing: apt-get install dataset-fashion-mnist",
)


@pytest.mark.slow
@needs_fashion_mnist
def test_pai_baselines_quick_runs_resumes_and_writes_outputs(tmp_path):
    argv = ["--quick", "--workdir", str(tmp_path)]
    run_pai_baselines.main(argv)
    runs = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(runs) == 1 + 5 * 3  # dense + 5 criteria x 3 sparsities, 1 seed
    assert {"table.md", "accuracy_vs_sparsity.png", "config.json"} <= set(
        os.listdir(tmp_path)
    )
    # Resuming with everything done trains nothing and keeps every run.
    run_pai_baselines.main(argv)
    assert (tmp_path / "runs.jsonl").read_text().splitlines() == runs


def test_runs_file_survives_a_partial_line(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    common.append_jsonl(path, {"method": "snip", "sparsity": 0.9, "seed": 0})
    with open(path, "a") as f:
        f.write('{"method": "grasp", "spar')  # killed while appending
    common.append_jsonl(path, {"method": "random", "sparsity": 0.9, "seed": 1})
    assert set(run_pai_baselines.read_runs(path)) == {
        ("snip", 0.9, 0),
        ("random", 0.9, 1),
    }


def test_workdir_with_another_config_is_refused(tmp_path):
    config = run_pai_baselines.load_config(run_pai_baselines.DEFAULT_CONFIG, False)
    common.prepare_workdir(str(tmp_path), config)
    other = run_pai_baselines.load_config(run_pai_baselines.DEFAULT_CONFIG, True)
    with pytest.raises(ValueError, match="different config"):
        common.prepare_workdir(str(tmp_path), other)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        json.dumps(config.to_dict())
    )


@pytest.mark.slow
@needs_fashion_mnist
def test_irp_quick_runs_resumes_and_writes_outputs(tmp_path):
    argv = [
        "--config",
        "experiments/configs/irp_fmnist_lenet300.py",
        "--quick",
        "--workdir",
        str(tmp_path),
    ]
    run_irp.main(argv)
    rounds = common.read_jsonl(str(tmp_path / "history.jsonl"))
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[-1]["sparsity"] == pytest.approx(0.99, abs=1e-4)
    assert {"summary.md", "irp_curve.png", "config.json"} <= set(os.listdir(tmp_path))
    run_irp.main(argv)  # everything done: resumes, trains nothing new
    assert common.read_jsonl(str(tmp_path / "history.jsonl")) == rounds


def _synthetic_labels(path, seed: int, num_rounds: int = 3) -> None:
    """A labelled 'IRP run' of LeNet-300-100 whose counts are random (plumbing)."""
    model = models.get_model("lenet300_100", num_classes=10)
    params, state = models.init_params(jax.random.key(seed), model, (28, 28, 1))
    keys = iter(jax.random.split(jax.random.key(100 + seed), 16))
    counts = jax.tree.map(
        lambda p: jax.random.randint(next(keys), p.shape, 0, num_rounds + 1), params
    )
    round_masks = tuple(
        jax.tree.map(lambda c, r=r: c >= r, counts) for r in range(num_rounds + 1)
    )
    history = tuple(
        {"round": r, "sparsity": float(masks.sparsity(m))}
        for r, m in enumerate(round_masks[1:])
    )
    result = irp.IRPResult(
        masks=round_masks,
        counts=counts,
        rewind_params=params,
        rewind_model_state=state,
        final_state=None,
        history=history,
    )
    irp.save_labels(
        path,
        result,
        config=irp.IRPConfig(num_rounds=num_rounds),
        init_params=params,
        init_model_state=state,
        metadata={
            "model": "lenet300_100",
            "dataset": "fashion_mnist",
            "train_split": "train[:2000]",
            "seed": seed,
        },
    )


@pytest.fixture
def synthetic_runs(tmp_path) -> list[str]:
    """``--source`` and ``--held-out`` arguments naming two synthetic runs."""
    _synthetic_labels(str(tmp_path / "source"), seed=0)
    _synthetic_labels(str(tmp_path / "held_out"), seed=1)
    return [
        "--source",
        str(tmp_path / "source"),
        "--held-out",
        str(tmp_path / "held_out"),
    ]


@pytest.mark.slow
@needs_fashion_mnist
def test_scorer_quick_runs_resumes_and_saves_scorers(tmp_path, synthetic_runs):
    workdir = tmp_path / "work"
    argv = ["--quick", "--workdir", str(workdir), *synthetic_runs]
    run_scorer.main(argv)
    with open(workdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    splits = ["random", "layer:Dense_0/kernel", "layer:Dense_1/kernel"]
    splits += ["layer:head/kernel", "seed"]
    methods = [*run_scorer.HEURISTICS, "default/paper"]
    assert [(r["split"], r["method"]) for r in rows] == [
        (s, m) for s in splits for m in methods
    ]
    assert int(rows[-1]["n"]) == 266_200
    assert {"summary.md", "iou.png", "config.json"} <= set(os.listdir(workdir))
    loaded = scorer.load_scorer(workdir / "scorers" / "default__paper")
    assert loaded.feature_config.feature_set == "paper"
    run_scorer.main(argv)  # everything done: nothing is recomputed or lost
    with open(workdir / "metrics.csv") as f:
        assert list(csv.DictReader(f)) == rows


@pytest.mark.slow
@needs_fashion_mnist
def test_allocation_quick_runs_and_resumes(tmp_path, synthetic_runs):
    workdir = tmp_path / "work"
    argv = ["--quick", "--workdir", str(workdir), *synthetic_runs]
    run_allocation.main(argv)
    runs = common.read_jsonl(str(workdir / "runs.jsonl"))
    # dense + 5 allocations x 2 rankings at 0.99; the IRP oracle only exists
    # where a synthetic round is within 0.002 of 0.99 (none here).
    pairs = [(r["allocation"], r["ranking"]) for r in runs]
    expected = [
        (a, k)
        for a in ("global", "learned", "erk", "snip")
        for k in ("autos", "random")
    ]
    assert pairs == [("dense", "-"), *expected]
    for r in runs[1:]:
        assert r["measured_sparsity"] == pytest.approx(0.99, abs=1e-5)
        assert max(r["sparsity_by_layer"].values()) < 1.0  # no empty layer
    assert {"table.md", "accuracy.png", "scorers.json"} <= set(os.listdir(workdir))
    run_allocation.main(argv)  # resumes: nothing retrained
    assert common.read_jsonl(str(workdir / "runs.jsonl")) == runs


@pytest.mark.slow
@needs_fashion_mnist
def test_benchmark_quick_runs_resumes_and_writes_outputs(tmp_path, synthetic_runs):
    workdir = tmp_path / "work"
    argv = ["--quick", "--workdir", str(workdir), *synthetic_runs]
    run_benchmark.main(argv)
    rows = run_benchmark.read_csv(str(workdir / "runs.csv"))
    config = run_benchmark.common.load_config(run_benchmark.DEFAULT_CONFIG)
    expected = [("dense", 0.0)] + [(m, s) for s in (0.9, 0.99) for m in config.methods]
    assert [(r["method"], r["sparsity"]) for r in rows] == expected
    assert {r["seed"] for r in rows} == {2}
    by_run = {(r["method"], r["sparsity"]): r for r in rows}
    layers = [k for k in rows[0] if k.startswith(run_benchmark.DENSITY_PREFIX)]
    assert len(layers) == 3
    for (method, sparsity), r in by_run.items():
        if method not in ("dense", "irp"):
            assert r["measured_sparsity"] == pytest.approx(sparsity, abs=1e-5)
        assert min(r[k] for k in layers) > 0.0  # no empty layer
        base = method.removesuffix("_shuffled").removesuffix("_reinit")
        if base != method:  # sanity checks keep AutoS's per-layer densities
            assert [r[k] for k in layers] == [by_run[base, sparsity][k] for k in layers]
    # IRP (3 quick rounds to 0.99 on the target seed) at its nearest round.
    assert by_run["irp", 0.99]["measured_sparsity"] == pytest.approx(0.99, abs=1e-4)
    assert len(common.read_jsonl(str(workdir / "irp_seed2.jsonl"))) == 3
    outputs = {"table.md", "accuracy.png", "layer_density.png", "scorers.json"}
    assert outputs <= set(os.listdir(workdir))
    assert "| autos_learned |" in (workdir / "table.md").read_text()
    run_benchmark.main(argv)  # resumes: nothing retrained, nothing lost
    assert run_benchmark.read_csv(str(workdir / "runs.csv")) == rows


def test_benchmark_csv_drops_only_a_partial_row(tmp_path):
    path = str(tmp_path / "runs.csv")
    fields = ["method", "sparsity", "seed", "final_test_accuracy"]
    row = {"method": "snip", "sparsity": 0.9, "seed": 2, "final_test_accuracy": 0.8}
    run_benchmark.append_csv(path, row, fields)
    with open(path, "a") as f:
        f.write("grasp,0.9")  # killed while appending
    run_benchmark.append_csv(path, {**row, "method": "random"}, fields)
    assert [r["method"] for r in run_benchmark.read_csv(path)] == ["snip", "random"]
    assert run_benchmark.read_csv(path)[0] == row


def test_benchmark_config_errors_name_the_fix():
    config = run_benchmark.common.load_config(run_benchmark.DEFAULT_CONFIG)
    bad = config.copy_and_resolve_references()
    bad.methods = ("snip", "autos_magic")
    with pytest.raises(ValueError, match="autos_magic.*choose from"):
        run_benchmark.check_config(bad)
    bad = config.copy_and_resolve_references()
    bad.sparsities = (0.9, 1.0)
    with pytest.raises(ValueError, match="must lie in"):
        run_benchmark.check_config(bad)
    bad = config.copy_and_resolve_references()
    bad.irp.final_sparsity = 0.99
    with pytest.raises(ValueError, match="raise config.irp.final_sparsity"):
        run_benchmark.check_config(bad)
    run_benchmark.check_config(config)  # the committed config is valid


@pytest.mark.slow
@needs_fashion_mnist
def test_demo_quick_runs_the_whole_pipeline(tmp_path, capsys):
    demo.main(["--quick", "--workdir", str(tmp_path)])
    labels = irp.load_labels(tmp_path / "irp" / "labels")
    assert labels.metadata["num_rounds"] == 2
    rows = run_benchmark.read_csv(str(tmp_path / "benchmark" / "runs.csv"))
    methods = ("autos_global", "autos_learned", "snip", "magnitude", "random")
    expected = [("dense", 0.0)] + [(m, s) for s in (0.9, 0.98, 0.99) for m in methods]
    assert [(r["method"], r["sparsity"]) for r in rows] == expected
    out = capsys.readouterr().out
    assert "| autos_learned |" in out and "Results:" in out
    assert (tmp_path / "benchmark" / "accuracy.png").exists()
