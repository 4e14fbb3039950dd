"""One end-to-end smoke test per experiment script, on small splits.

Each runs the script's ``--quick`` config variant (``get_config(quick=True)``)
on real Fashion-MNIST slices and checks that it runs, writes what it promises
and resumes without redoing work; none asserts anything about accuracy.
"""

import json
import os

import jax
import pytest

from autosparse_jax import irp, masks, models
from experiments import (
    bench_train,
    common,
    demo,
    gpu_check,
    run_allocation,
    run_benchmark,
    run_pai_baselines,
    runner,
)


def _runs(workdir) -> list[dict]:
    return runner.RunLog(str(workdir / "runs.jsonl")).records()


def _no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


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


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> list[str]:
    """``--source`` and ``--held-out`` arguments naming two synthetic runs."""
    tmp_path = tmp_path_factory.mktemp("labels")
    _synthetic_labels(str(tmp_path / "source"), seed=0)
    _synthetic_labels(str(tmp_path / "held_out"), seed=1)
    return [
        "--source",
        str(tmp_path / "source"),
        "--held-out",
        str(tmp_path / "held_out"),
    ]


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_pai_baselines_quick_runs_resumes_and_writes_outputs(tmp_path, monkeypatch):
    argv = ["--quick", "--workdir", str(tmp_path)]
    run_pai_baselines.main(argv)
    runs = _runs(tmp_path)
    criteria = ("random", "magnitude", "snip", "grasp", "synflow")
    assert [(r["method"], r["sparsity"]) for r in runs] == [("dense", 0.0)] + [
        (c, s) for s in (0.9, 0.99) for c in criteria
    ]
    assert {r["seed"] for r in runs} == {0}
    outputs = {"table.md", "accuracy.png", "layer_density.png", "config.json"}
    assert outputs <= set(os.listdir(tmp_path))
    monkeypatch.setattr(common, "train_masked", _no_training)
    run_pai_baselines.main(argv)  # everything done: nothing trained, nothing lost
    assert _runs(tmp_path) == runs


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_allocation_quick_runs_and_resumes_without_refitting(
    tmp_path, synthetic_runs, monkeypatch
):
    argv = ["--quick", "--workdir", str(tmp_path), *synthetic_runs]
    run_allocation.main(argv)
    runs = _runs(tmp_path)
    # The IRP oracle only exists where a synthetic round is within 0.002 of
    # 0.99 (none here): those methods are skipped, not logged.
    assert [r["method"] for r in runs] == ["dense", "global+autos", "learned+random"]
    for r in runs[1:]:
        assert r["measured_sparsity"] == pytest.approx(0.99, abs=1e-5)
        assert max(r["sparsity_by_layer"].values()) < 1.0  # no empty layer
    assert {"table.md", "accuracy.png", "learners.json", "learners"} <= set(
        os.listdir(tmp_path)
    )
    # Resume after losing the last run: it is retrained with the saved learners.
    lines = (tmp_path / "runs.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "runs.jsonl").write_text("".join(lines[:-1]))

    def no_fit(*args, **kwargs):
        raise AssertionError("the learners were fitted again")

    monkeypatch.setattr(common, "fit_learners", no_fit)
    run_allocation.main(argv)
    resumed = _runs(tmp_path)
    assert [r["method"] for r in resumed] == [r["method"] for r in runs]
    assert resumed[-1]["final_test_accuracy"] == runs[-1]["final_test_accuracy"]


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_benchmark_quick_runs_resumes_and_writes_outputs(
    tmp_path, synthetic_runs, monkeypatch
):
    argv = ["--quick", "--workdir", str(tmp_path), *synthetic_runs]
    run_benchmark.main(argv)
    runs = _runs(tmp_path)
    config = common.load_config(run_benchmark.DEFAULT_CONFIG, quick=True)
    assert [(r["method"], r["sparsity"]) for r in runs] == [("dense", 0.0)] + [
        (m, 0.99) for m in config.methods[1:]
    ]
    by_run = {r["method"]: r for r in runs}
    for method, r in by_run.items():
        if method not in ("dense", "irp"):
            assert r["measured_sparsity"] == pytest.approx(0.99, abs=1e-5)
        if method != "dense":
            assert max(r["sparsity_by_layer"].values()) < 1.0  # no empty layer
    shuffled = by_run["autos_learned_shuffled"]["sparsity_by_layer"]
    assert shuffled == by_run["autos_learned"]["sparsity_by_layer"]
    # IRP (3 quick rounds to 0.99 on the target seed) at its nearest round.
    assert by_run["irp"]["measured_sparsity"] == pytest.approx(0.99, abs=1e-4)
    assert len(common.read_jsonl(str(tmp_path / "irp_seed2.jsonl"))) == 3
    outputs = {"table.md", "accuracy.png", "layer_density.png", "learners.json"}
    assert outputs <= set(os.listdir(tmp_path))
    assert "| autos_learned |" in (tmp_path / "table.md").read_text()
    monkeypatch.setattr(common, "train_masked", _no_training)
    run_benchmark.main(argv)  # resumes: nothing retrained, nothing lost
    assert _runs(tmp_path) == runs


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_demo_quick_runs_the_whole_pipeline_and_says_how_autos_compares(
    tmp_path, capsys
):
    demo.main(["--quick", "--workdir", str(tmp_path)])
    labels = irp.load_labels(tmp_path / "irp" / "labels")
    assert labels.metadata["num_rounds"] == 2
    runs = _runs(tmp_path / "benchmark")
    methods = ("autos_global", "autos_learned", "synflow", "snip", "magnitude")
    expected = [("dense", 0.0)] + [
        (m, s) for s in (0.9, 0.99) for m in (*methods, "random")
    ]
    assert [(r["method"], r["sparsity"]) for r in runs] == expected
    out = capsys.readouterr().out
    assert "| synflow |" in out and "IRP, the source run" in out
    assert "SynFlow" in out and "experiments/RESULTS.md" in out
    assert (tmp_path / "benchmark" / "accuracy.png").exists()


@pytest.mark.slow
def test_gpu_check_times_one_round_on_generated_data(tmp_path, capsys):
    """On CPU with a small model (the GPU path is the same code)."""
    result = gpu_check.main(
        ["--model", "lenet5", "--num-train", "1024", "--num-test", "256",
         "--epochs", "1", "--workdir", str(tmp_path)]
    )  # fmt: skip
    assert result["round_program_compiles"] == 1
    assert result["epoch_seconds"] > 0 and result["compile_seconds"] > 0
    assert result["model"] == "lenet5" and result["num_train"] == 1024
    assert (tmp_path / "gpu_check.json").exists()
    out = capsys.readouterr().out
    assert "a round of the config's 160 epochs: about" in out


def test_bench_train_builds_only_the_variants_a_model_has():
    assert bench_train.variants_of("lenet300_100") == ["plain"]
    assert bench_train.variants_of("vgg11") == ["plain", "fast_conv_grad"]
    assert bench_train.variants_of("lenet5") == list(bench_train.VARIANTS)
    twin = bench_train.build_variant("lenet5", "batch_parts", 10)
    assert isinstance(twin, models.BatchParts) and twin.parts == 2
    assert twin.module.batch_minor and twin.module.num_classes == 10
    assert bench_train.build_variant("lenet5", "batch_minor", 10).batch_minor


@pytest.mark.slow
def test_bench_train_times_the_chosen_variants_once_compiled(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    bench_train.main(
        ["--generated", "--num-train", "256", "--epochs", "1", "--batch-size", "64",
         "--models", "lenet5", "--variants", "plain", "batch_minor", "batch_parts",
         "--json", str(out_json)]
    )  # fmt: skip
    rows = json.loads(out_json.read_text())
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("lenet5", "plain"),
        ("lenet5", "batch_minor"),
        ("lenet5", "batch_parts"),
    ]
    # All credited with the plain step's FLOPs (the tiled convs multiply zeros).
    assert rows[0]["mflop_per_step"] == rows[2]["mflop_per_step"] > 0
    assert rows[1]["mflop_per_step"] == rows[2]["mflop_per_step"]
    for row in rows:
        assert row["compiles"] == 1 and row["steps_per_epoch"] == 4
        assert row["epoch_s"] > 0 and 0 < row["ratio_to_matmul"]
        assert ("speedup" in row) == bench_train.torch_peer.available()
    assert "lenet5 batch_minor: epoch" in capsys.readouterr().out
