"""experiments.scorer_study (and its script run_scorer): splits, resume, smoke.

The unit tests stand a stub in for the labelled runs; the one end-to-end
test trains the quick scorers on the labels of a quick IRP run on real
Fashion-MNIST slices, resumes, and asserts nothing about ranking quality.
"""

import csv
import json
import os

import numpy as np
import pytest

from autosparse_jax import checkpoint, scorer
from experiments import common, irp_study, run_scorer, scorer_study

CONFIGS = "experiments/configs"
LAYERS = np.array([0] * 10 + [1] * 6 + [2] * 4)
SPLITS = ["random", "layer:a/kernel", "layer:b/kernel", "layer:head/kernel", "seed"]


class StubRun:
    """A labelled run of 20 weights in 3 layers; counts what it computes."""

    computed: list[str] = []

    def __init__(self, path, config):
        del config
        self.path = path
        self.counts = np.zeros(len(LAYERS))
        self.layers = LAYERS
        self.layer_names = ["a/kernel", "b/kernel", "head/kernel"]
        self.num_rounds = 3

    def features(self, fc):
        return np.zeros((len(LAYERS), 2))

    def heuristic(self, name):
        StubRun.computed.append(name)
        return np.arange(len(LAYERS), dtype=float)

    def report(self, scores, idx, sparsities):
        return {"spearman": 0.5, "n_eval": len(idx)}


def _config(**overrides):
    config = common.load_config(f"{CONFIGS}/scorer_fmnist_lenet300.py")
    config.update(overrides)
    return config


def test_evaluations_hold_out_random_weights_each_layer_and_the_other_run():
    config = _config()
    source, held_out = StubRun("s", config), StubRun("h", config)
    splits = list(scorer_study.evaluations(config, source, held_out))
    assert [s[0] for s in splits] == SPLITS
    everything = set(range(len(LAYERS)))
    for name, train_idx, run, test_idx in splits[:-1]:
        assert run is source
        assert not set(train_idx) & set(test_idx), name
        assert set(train_idx) | set(test_idx) == everything, name
    for layer, (_, _, _, test_idx) in enumerate(splits[1:4]):
        assert set(test_idx) == set(np.flatnonzero(LAYERS == layer))
    _, train_idx, run, test_idx = splits[-1]
    assert run is held_out
    assert list(train_idx) == list(test_idx) == list(range(len(LAYERS)))


def test_run_all_computes_only_what_metrics_csv_lacks(tmp_path, monkeypatch):
    """Seed-split-only scorers; finished rows kept; a missing row recomputed."""
    fitted, saved = [], []

    def fake_fit(config, run, fc, sc, train_idx):
        fitted.append(len(train_idx))
        return "scorer", [{"step": 1}]

    monkeypatch.setattr(scorer_study, "Run", StubRun)
    monkeypatch.setattr(scorer_study, "fit", fake_fit)
    monkeypatch.setattr(
        scorer_study.scorer_lib,
        "predict_flat",
        lambda s, x, feature_config: np.zeros(len(x)),
    )
    monkeypatch.setattr(
        scorer_study, "save_scorer", lambda w, name, *a: saved.append(name)
    )
    config = _config()
    StubRun.computed = []
    rows = scorer_study.run_all(config, str(tmp_path))
    names = list(config.scorers)
    expected = [
        (split, m)
        for split in SPLITS
        for m in (*scorer_study.HEURISTICS, *names)
        if split == "seed" or m not in config.seed_split_only
    ]
    assert [(r["split"], r["method"]) for r in rows] == expected
    assert len(StubRun.computed) == 5 * len(SPLITS)
    assert len(fitted) == 4 * (len(names) - 1) + len(names)
    assert saved == names  # split (c)'s scorers only
    on_disk = scorer_study.read_rows(str(tmp_path / "metrics.csv"))
    assert [(r["split"], r["method"]) for r in on_disk] == expected
    assert list(on_disk[0])[:5] == list(scorer_study._FIELDS)

    # Everything done: nothing computed, nothing lost.
    StubRun.computed, fitted[:], saved[:] = [], [], []
    assert scorer_study.run_all(config, str(tmp_path)) == on_disk
    assert StubRun.computed == fitted == saved == []

    # A killed run's missing row is computed, and only it.
    del on_disk[3]
    scorer_study.write_rows(str(tmp_path / "metrics.csv"), on_disk)
    rows = scorer_study.run_all(config, str(tmp_path))
    assert StubRun.computed == [expected[3][1]] and fitted == []
    assert sorted((r["split"], r["method"]) for r in rows) == sorted(expected)


def test_format_summary_has_one_table_per_split():
    config = _config()
    row = {"kind": "heuristic", "spearman": "0.5", "mse": "0.25", "seconds": "1.5"}
    rows = [
        {**row, "split": "random", "method": "|w0|", "n": "100"},
        {**row, "split": "seed", "method": "|w0|", "n": "1000", "iou@0.99": 0.125},
    ]
    text = scorer_study.format_summary(config, rows, 12.0)
    assert "## split = random (100 weights)" in text
    assert "## split = seed (1000 weights)" in text
    assert text.index("split = random") < text.index("split = seed")
    header = "| method | spearman | kendall | spearman_within_layer | iou@0.9 "
    assert header in text
    lines = text.splitlines()
    assert "| |w0| | 0.500 |  |  |  |  |  |  | 0.250 | 1.5 |" in lines
    assert "| |w0| | 0.500 |  |  |  |  |  | 0.125 | 0.250 | 1.5 |" in lines
    assert f"12 s on {common.device_name()}." in text


def test_scorer_config_applies_the_quick_step_count():
    preset = scorer.PRESETS["default"]
    assert scorer_study.scorer_config(_config(), "default") == preset
    quick = common.load_config(f"{CONFIGS}/scorer_fmnist_lenet300.py", quick=True)
    chosen = scorer_study.scorer_config(quick, "default")
    assert chosen.num_steps == quick.num_steps < preset.num_steps
    assert list(quick.scorers) == ["default/paper"]


@pytest.mark.parametrize(
    ("name", "quick"),
    [
        ("scorer_fmnist_lenet300", False),
        ("scorer_snip_fmnist_lenet300", False),
        ("scorer_snip_fmnist_lenet300", True),
    ],
)
def test_workdirs_and_committed_configs(name, quick, monkeypatch):
    """The default workdir; the full config is the committed ``config.json``."""
    calls = []

    def fake_run(config, workdir):
        calls.append((config, workdir))
        return scorer_study.ScorerStudy(summary="", rows=[], scorers_dir="")

    monkeypatch.setattr(scorer_study, "run", fake_run)
    argv = ["--config", f"{CONFIGS}/{name}.py", "--held-out", "elsewhere"]
    run_scorer.main([*argv, "--quick"] if quick else argv)
    ((config, workdir),) = calls
    assert config.held_out == "elsewhere"
    assert workdir == f"experiments/results/{name}" + "/quick" * quick
    if quick:
        assert "quick" not in config and list(config.scorers) == ["default/paper"]
        return
    with open(os.path.join(workdir, "config.json")) as f:
        committed = json.load(f)
    assert committed["held_out"] != "elsewhere"
    config.held_out = committed["held_out"]
    assert committed == json.loads(json.dumps(config.to_dict()))


@pytest.fixture(scope="module")
def quick_labels(tmp_path_factory) -> str:
    """The labels of a quick IRP run (``irp_study.run``, no baselines)."""
    workdir = tmp_path_factory.mktemp("irp")
    config = common.load_config(f"{CONFIGS}/irp_fmnist_lenet300.py", quick=True)
    study = irp_study.run(config, str(workdir), baselines=False, progress=False)
    return study.labels_dir


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_scorer_quick_runs_resumes_and_saves_scorers(tmp_path, quick_labels):
    workdir = tmp_path / "work"
    labels = ["--source", quick_labels, "--held-out", quick_labels]
    argv = ["--quick", "--workdir", str(workdir), *labels]
    run_scorer.main(argv)
    with open(workdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    splits = ["random", "layer:Dense_0/kernel", "layer:Dense_1/kernel"]
    splits += ["layer:head/kernel", "seed"]
    methods = [*scorer_study.HEURISTICS, "default/paper"]
    assert [(r["split"], r["method"]) for r in rows] == [
        (s, m) for s in splits for m in methods
    ]
    assert int(rows[-1]["n"]) == 266_200  # every weight of the held-out run
    assert {"summary.md", "iou.png", "config.json"} <= set(os.listdir(workdir))
    loaded = scorer.load_scorer(workdir / "scorers" / "default__paper")
    assert loaded.feature_config.feature_set == "paper"
    meta = checkpoint.load_metadata(workdir / "scorers" / "default__paper")
    assert meta["source_seed"] == 0 and meta["source_dataset"] == "fashion_mnist"
    run_scorer.main(argv)  # everything done: nothing is recomputed or lost
    with open(workdir / "metrics.csv") as f:
        assert list(csv.DictReader(f)) == rows
