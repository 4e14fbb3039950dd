"""experiments.irp_study (and its script run_irp): tables, resume, configs, smoke.

The unit tests build rows, masks and baselines by hand; the one end-to-end
test runs ``run_irp --quick`` on real Fashion-MNIST slices, resumes it and
asserts nothing about accuracy.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from autosparse_jax import irp, train
from experiments import common, irp_study, run_irp

CONFIGS = "experiments/configs"
ROW_KEYS = {
    "round",
    "sparsity",
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
    "seconds",
    "checkpoint_seconds",
    "compile_seconds",
}


def _mask(dense0_kept: int, head_kept: int) -> dict:
    """A mask of a 2-layer net: ``Dense_0`` 4x5 (20), ``head`` 5x2 (10) kernels."""
    return {
        "Dense_0": {
            "kernel": jnp.arange(20).reshape(4, 5) < dense0_kept,
            "bias": jnp.ones((5,), bool),
        },
        "head": {
            "kernel": jnp.arange(10).reshape(5, 2) < head_kept,
            "bias": jnp.ones((2,), bool),
        },
    }


def _row(r: int, sparsity: float, acc: float, compile_s: float = 0.0) -> dict:
    return {
        "round": r,
        "sparsity": sparsity,
        "test_accuracy": acc,
        "test_loss": 1.0,
        "train_accuracy": acc,
        "train_loss": 0.5,
        "seconds": 2.0,
        "checkpoint_seconds": 0.1,
        "compile_seconds": compile_s,
    }


def _result(round_masks) -> irp.IRPResult:
    return irp.IRPResult(
        masks=(_mask(20, 10), *round_masks),
        counts=None,
        rewind_params=None,
        rewind_model_state=None,
        final_state=None,
        history=(),
    )


def _baseline(method: str, sparsity: float, acc: float) -> dict:
    return {
        "method": method,
        "sparsity": sparsity,
        "seed": 0,
        "measured_sparsity": sparsity,
        "sparsity_by_layer": {"Dense_0/kernel": sparsity, "head/kernel": 1.0},
        "final_test_accuracy": acc,
        "best_test_accuracy_selected_on_test": acc + 0.01,
        "train_s": 3.0,
    }


ROWS = [_row(0, 0.5, 0.80, compile_s=1.0), _row(1, 0.9, 0.70, math.nan)]
RESULT = _result([_mask(10, 5), _mask(1, 0)])
OVERHEADS = {"prune_rewind_s": 0.1, "eval_s": 0.2}
BASELINES = [
    _baseline("dense", 0.0, 0.85),
    _baseline("random", 0.5, 0.6),
    _baseline("random", 0.88, 0.3),
]
INVOCATIONS = [
    {
        "device": "cpu (2 host cores)",
        "wall_s": 12.0,
        "rounds_run": 2,
        "compiles": {"jit(run_round)": 1, "jit(copy)": 3, "jit(_where)": 2},
    }
]


def test_round_table_has_one_row_per_round_with_layers_and_timings():
    lines = irp_study.round_table(ROWS, RESULT, OVERHEADS).splitlines()
    assert "(Dense_0 / head)" in lines[0]
    assert len(lines) == 2 + len(ROWS)
    assert lines[2].startswith("| 0 | 0.5000 | 80.00 | 0.5000 | 0.5000 / 0.5000 |")
    # train s = round s - compile s - prune+rewind - eval; a missing compile
    # time (nan) counts as 0 there but shows as nan.
    assert "| 2.00 | 1.00 | 0.70 |" in lines[2]
    assert "| 0.9500 / 1.0000 EMPTY |" in lines[3]
    assert "| 2.00 | nan | 1.70 |" in lines[3]
    assert "0.20 s / 1.70 s = 11.8% |" in lines[3]


def test_baseline_and_comparison_tables():
    lines = irp_study.baseline_table(BASELINES).splitlines()
    assert len(lines) == 2 + 3
    assert (
        lines[2] == "| dense | 0.0000 | 85.00 | 86.00 | 0.0000 / 1.0000 EMPTY | 3.0 |"
    )
    comparison = irp_study.comparison_table(ROWS, BASELINES).splitlines()
    # Random only, each against the IRP round of nearest sparsity.
    assert comparison[2:] == [
        "| 0.5 | 0 (0.5000) | 80.00 | 60.00 | +20.00 |",
        "| 0.88 | 1 (0.9000) | 70.00 | 30.00 | +40.00 |",
    ]


def test_invocation_lines_count_round_program_compilations():
    (line,) = irp_study.invocation_lines(INVOCATIONS).splitlines()
    assert line.startswith("- invocation 1: 2 round(s) run, round program")
    assert "compiled 1 time(s); 5 other small compilations" in line
    assert "(jit(_where), jit(copy))" in line and "cpu (2 host cores)" in line


def test_format_summary_with_and_without_baselines():
    config = common.load_config(f"{CONFIGS}/irp_fmnist_lenet300.py")
    text = irp_study.format_summary(
        config, ROWS, RESULT, BASELINES, OVERHEADS, INVOCATIONS
    )
    assert text.startswith("# IRP: lenet300_100 on fashion_mnist, seed 0\n")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## IRP rounds",
        "## Baselines (same recipe, seed, initial params and data order)",
        "## IRP against random pruning at the same sparsity",
    ]
    assert irp_study.comparison_table(ROWS, BASELINES) + "\n" in text
    bare = irp_study.format_summary(config, ROWS, RESULT, [], OVERHEADS, INVOCATIONS)
    assert "## Baselines" not in bare and "random pruning" not in bare
    assert text.startswith(bare)  # the same text, less the baseline sections


def test_run_baselines_trains_only_missing_ones(tmp_path, monkeypatch):
    config = common.load_config(f"{CONFIGS}/irp_fmnist_lenet300.py")
    path = str(tmp_path / "baselines.jsonl")
    common.append_jsonl(path, {"method": "random", "sparsity": 0.99, "done": 1})
    trained = []

    def fake_train(setup, mask):
        trained.append(mask)
        return {"final_test_accuracy": 0.5, "train_s": 1.0}

    monkeypatch.setattr(irp_study, "baseline_mask", lambda s, m, sp, sc: (m, sp))
    monkeypatch.setattr(irp_study, "train_baseline", fake_train)
    records = irp_study.run_baselines(config, None, str(tmp_path), progress=False)
    assert trained == [("dense", 0.0), ("random", 0.98)]
    assert [(r["method"], r["sparsity"]) for r in records] == [
        ("dense", 0.0),
        ("random", 0.98),
        ("random", 0.99),
    ]
    assert records[2]["done"] == 1
    assert len(common.read_jsonl(path)) == 3
    trained.clear()
    assert irp_study.run_baselines(config, None, str(tmp_path), False) == records
    assert trained == []  # all done: nothing retrained


def test_save_labels_keeps_existing_labels(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("existing labels were written again")

    monkeypatch.setattr(irp, "save_labels", refuse)
    (tmp_path / "labels").mkdir()
    config = common.load_config(f"{CONFIGS}/irp_fmnist_lenet300.py")
    irp_study.save_labels(config, None, None, str(tmp_path / "labels"))


def test_check_config_refuses_unlinked_epochs():
    config = common.load_config(f"{CONFIGS}/irp_fmnist_lenet300.py")
    irp_study.check_config(config)
    config = ml_collections.ConfigDict(config.to_dict())  # the link resolved
    config.train.num_epochs = 3
    with pytest.raises(ValueError, match="must equal irp.epochs_per_round"):
        irp_study.check_config(config)


@pytest.mark.parametrize(
    ("name", "workdir", "seed"),
    [
        ("irp_fmnist_lenet300", "irp_fmnist_lenet300", None),
        ("irp_fmnist_lenet300", "irp_fmnist_lenet300_seed1", 1),
        ("irp_snip_fmnist_lenet300", "irp_snip_fmnist_lenet300", None),
        ("irp_snip_fmnist_lenet300", "irp_snip_fmnist_lenet300_seed1", 1),
    ],
)
def test_committed_workdirs_are_resumed_by_their_command(
    name, workdir, seed, monkeypatch
):
    """The full config is the committed ``config.json``; the command's workdir."""
    calls = []

    def fake_run(config, workdir):
        calls.append((config, workdir))
        return irp_study.IRPStudy(summary="", rows=[], labels_dir="")

    monkeypatch.setattr(irp_study, "run", fake_run)
    argv = ["--config", f"{CONFIGS}/{name}.py"]
    run_irp.main(argv if seed is None else [*argv, "--seed", str(seed)])
    ((config, path),) = calls
    assert path == f"experiments/results/{workdir}"
    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f) == json.loads(json.dumps(config.to_dict()))


def test_default_workdirs_and_the_quick_variants():
    cifar = f"{CONFIGS}/cifar10_resnet18.py"
    assert (
        run_irp.default_workdir(cifar, False)
        == "experiments/results/irp_cifar10_resnet18"
    )
    assert run_irp.default_workdir(run_irp.DEFAULT_CONFIG, True) == (
        "experiments/results/irp_fmnist_lenet300/quick"
    )  # fmt: skip
    for name in ("irp_fmnist_lenet300", "irp_snip_fmnist_lenet300", "cifar10_vgg16"):
        full = common.load_config(f"{CONFIGS}/{name}.py")
        quick = common.load_config(f"{CONFIGS}/{name}.py", quick=True)
        assert "quick" not in full and "quick" not in quick
        assert quick.train_split.startswith("train[:")
        assert quick.test_split.startswith("test[:")
        assert quick.irp.num_rounds < full.irp.num_rounds
        assert quick.train.num_epochs == quick.irp.epochs_per_round == 1
        irp_study.check_config(quick)


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_irp_quick_runs_resumes_and_writes_outputs(tmp_path, capsys):
    argv = ["--quick", "--workdir", str(tmp_path)]
    run_irp.main(argv)
    assert "## IRP rounds" in capsys.readouterr().out
    rounds = common.read_jsonl(str(tmp_path / "history.jsonl"))
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert {frozenset(r) for r in rounds} == {frozenset(ROW_KEYS)}
    assert rounds[-1]["sparsity"] == pytest.approx(0.99, abs=1e-4)
    assert {
        "summary.md",
        "irp_curve.png",
        "config.json",
        "baselines.jsonl",
        "invocations.jsonl",
        "labels",
        "checkpoints",
    } <= set(os.listdir(tmp_path))
    baselines = common.read_jsonl(str(tmp_path / "baselines.jsonl"))
    assert [(b["method"], b["sparsity"]) for b in baselines] == [
        ("dense", 0.0),
        ("random", 0.98),
        ("random", 0.99),
    ]
    labels = irp.load_labels(tmp_path / "labels")
    assert labels.metadata["num_rounds"] == 3
    assert labels.metadata["train_split"] == "train[:2000]"
    assert len(labels.masks) == 4
    counts = np.concatenate([np.ravel(c) for c in jax.tree.leaves(labels.counts)])
    assert counts.min() == 0 and counts.max() == 3

    # The demo's call on the same directory: everything done, nothing trained.
    config = common.load_config(run_irp.DEFAULT_CONFIG, quick=True)
    with pytest.warns(UserWarning, match="nothing was trained"):
        study = irp_study.run(config, str(tmp_path), baselines=False, progress=False)
    assert study.rows == rounds
    assert study.labels_dir == str(tmp_path / "labels")
    assert "## IRP rounds" in study.summary and "## Baselines" not in study.summary
    assert common.read_jsonl(str(tmp_path / "baselines.jsonl")) == baselines

    with pytest.warns(UserWarning, match="nothing was trained"):
        run_irp.main(argv)  # everything done: resumes, trains nothing new
    assert common.read_jsonl(str(tmp_path / "history.jsonl")) == rounds
    assert common.read_jsonl(str(tmp_path / "baselines.jsonl")) == baselines
    invocations = common.read_jsonl(str(tmp_path / "invocations.jsonl"))
    assert [i["rounds_run"] for i in invocations] == [3, 0, 0]
    assert "## Baselines" in (tmp_path / "summary.md").read_text()


def test_a_diverged_run_raises_its_message_and_saves_no_labels(tmp_path, monkeypatch):
    """The script stops (a non-zero exit) with irp's message and writes no labels."""
    from conftest import TinyMLP

    rng = np.random.default_rng(0)

    def images(n):
        return {
            "image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
            "label": rng.integers(0, 10, (n,)).astype(np.int32),
        }

    model = TinyMLP(num_classes=10)

    def tiny_setup(config):
        params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
        recipe = common.Recipe(
            model=model,
            trained_model=model,
            input_shape=(28, 28, 1),
            optimizer=train.sgd(1e30),  # diverges in round 0
            train_epoch=None,
            evaluate=None,
            num_epochs=1,
        )
        host = images(256)
        return irp_study.Setup(
            host_train=host,
            train_data=train.to_device(host),
            test_data=train.to_device(images(100)),
            recipe=recipe,
            params=params,
            model_state={},
            prune_key=jax.random.key(1),
            data_key=jax.random.key(2),
            irp_key=jax.random.key(3),
        )

    monkeypatch.setattr(irp_study, "make_setup", tiny_setup)
    with pytest.raises(irp.DivergedError, match=r"IRP round 0 diverged.*no round is"):
        run_irp.main(["--quick", "--workdir", str(tmp_path)])
    assert not (tmp_path / "labels").exists()
    assert not (tmp_path / "summary.md").exists()
    (row,) = common.read_jsonl(str(tmp_path / "history.jsonl"))
    assert row["diverged"] is True
