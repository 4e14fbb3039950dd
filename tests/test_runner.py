"""Tests of the study runner: the run log, the plan, checks, resume, divergence."""

import json
import os

import pytest

from experiments import common, methods, runner

PAI = "experiments/configs/pai_fmnist_lenet300.py"
BENCHMARK = "experiments/configs/benchmark_fmnist_lenet300.py"


# ------------------------------------------------------------------ RunLog


def _record(method, sparsity=0.9, seed=0, **extra):
    return {"method": method, "sparsity": sparsity, "seed": seed, **extra}


def test_log_round_trips_records_in_order(tmp_path):
    log = runner.RunLog(str(tmp_path / "runs.jsonl"))
    assert log.records() == [] and log.done() == set()
    log.append(_record("snip", acc=0.5))
    log.append(_record("random", 0.99, 3))
    assert log.records() == [_record("snip", acc=0.5), _record("random", 0.99, 3)]
    assert log.done() == {("snip", 0.9, 0), ("random", 0.99, 3)}


def test_log_drops_only_a_half_written_last_line_and_cuts_it_before_appending(
    tmp_path,
):
    path = tmp_path / "runs.jsonl"
    log = runner.RunLog(str(path))
    log.append(_record("snip"))
    with open(path, "a") as f:
        f.write('{"method": "grasp", "spars')  # killed while appending
    with pytest.warns(UserWarning, match="half-written last line"):
        assert log.records() == [_record("snip")]
    log.append(_record("random"))
    assert path.read_text().count("\n") == 2  # the partial line is gone
    assert log.records() == [_record("snip"), _record("random")]


def test_log_refuses_a_corrupt_middle_line_naming_it(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_record("snip")) + "\nnot json\n" + "{}\n")
    with pytest.raises(ValueError, match=r"line 2, is not valid JSON"):
        runner.RunLog(str(path)).records()


# ------------------------------------------------------------- plan, checks


def test_plan_is_seed_major_dense_first_and_sanity_checks_above_their_floor():
    config = common.load_config(BENCHMARK)
    config.seeds, config.sparsities = (5, 6), (0.5, 0.99)
    config.methods = ("dense", "snip", "autos_learned_shuffled")
    assert runner.planned(config) == [
        ("dense", 0.0, 5),
        ("snip", 0.5, 5),
        ("snip", 0.99, 5),
        ("autos_learned_shuffled", 0.99, 5),
        ("dense", 0.0, 6),
        ("snip", 0.5, 6),
        ("snip", 0.99, 6),
        ("autos_learned_shuffled", 0.99, 6),
    ]


def test_config_errors_name_the_fix():
    config = common.load_config(BENCHMARK)
    bad = config.copy_and_resolve_references()
    bad.methods = ("snip", "autos_magic")
    with pytest.raises(ValueError, match="Unknown method 'autos_magic'"):
        runner.check_config(bad)
    bad = config.copy_and_resolve_references()
    bad.sparsities = (0.9, 1.0)
    with pytest.raises(ValueError, match="must lie in"):
        runner.check_config(bad)
    bad = config.copy_and_resolve_references()
    bad.irp.final_sparsity = 0.99
    with pytest.raises(ValueError, match="raise config.irp.final_sparsity"):
        runner.check_config(bad)
    bad = config.copy_and_resolve_references()
    bad.model = "mlp300_200_100_50"
    bad.methods = ("irp+snip",)
    with pytest.raises(ValueError, match="IRP-oracle allocation"):
        runner.check_config(bad)
    runner.check_config(config)  # the committed config is valid


@pytest.mark.parametrize("quick", [False, True])
def test_every_grid_config_is_valid(quick):
    for name in os.listdir("experiments/configs"):
        if name.startswith(
            ("pai_", "allocation_", "benchmark_", "variants_", "diagnostics_")
        ):
            runner.check_config(
                common.load_config(f"experiments/configs/{name}", quick=quick)
            )


# ---------------------------------------------------------------- end to end


def _tiny(config):
    config.seeds, config.sparsities = (0,), (0.9,)
    config.density_plot_sparsity = 0.9
    config.train.num_epochs = 2
    config.train_split, config.test_split = "train[:1024]", "test[:256]"
    return config


@pytest.mark.fashion_mnist
def test_study_runs_resumes_and_never_retrains(tmp_path, monkeypatch):
    config = _tiny(common.load_config(PAI))
    config.methods = ("dense", "magnitude", "mine")
    calls = []

    def mine(t, sparsity, study):  # a method passed in by a study, not a flag
        calls.append(sparsity)
        return methods.resolve("random")(t, sparsity, study)

    work = str(tmp_path / "study")
    text = runner.run_study(config, work, extra_methods={"mine": mine}, progress=False)
    records = runner.RunLog(os.path.join(work, "runs.jsonl")).records()
    assert [(r["method"], r["sparsity"]) for r in records] == [
        ("dense", 0.0),
        ("magnitude", 0.9),
        ("mine", 0.9),
    ]
    assert calls == [0.9]
    for r in records:
        assert r["diverged"] is None and len(r["history"]) == 2
        if r["method"] != "dense":
            assert r["measured_sparsity"] == pytest.approx(0.9, abs=1e-5)
    assert "| mine |" in text
    assert {"table.md", "accuracy.png", "layer_density.png"} <= set(os.listdir(work))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(common, "train_masked", no_training)
    assert runner.run_study(config, work, extra_methods={"mine": mine}) == text


@pytest.mark.fashion_mnist
def test_a_diverging_run_is_stopped_and_reported(tmp_path):
    config = _tiny(common.load_config(PAI))
    config.train.num_epochs = 4
    config.train.learning_rate = 1e6
    config.methods = ("magnitude",)
    work = str(tmp_path / "nan")
    text = runner.run_study(config, work, progress=False)
    (record,) = runner.RunLog(os.path.join(work, "runs.jsonl")).records()
    assert record["diverged"] is not None
    assert len(record["history"]) == record["diverged"]["epoch"] + 1 < 4
    assert "diverged (1/1)" in text and "## Diverged runs" in text
    assert "nan" not in text.lower()
