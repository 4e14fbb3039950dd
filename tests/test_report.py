"""Tests of the study report on hand-made records (every figure computed here)."""

import math

import pytest

from experiments import report


def _record(method, sparsity, seed, final, best=None, layers=(0.5, 0.5), **extra):
    return {
        "method": method,
        "sparsity": sparsity,
        "seed": seed,
        "final_test_accuracy": final,
        "best_test_accuracy_selected_on_test": final if best is None else best,
        "measured_sparsity": sparsity,
        "sparsity_by_layer": {"a/kernel": layers[0], "b/kernel": layers[1]},
        "history": [{"epoch": 0, "train_loss": 0.5}],
        "train_s": 2.0,
        "prune_s": 0.5,
        **extra,
    }


RECORDS = [
    _record("dense", 0.0, 0, 0.90, layers=(0.0, 0.0)),
    _record("dense", 0.0, 1, 0.92, layers=(0.0, 0.0)),
    _record("snip", 0.9, 0, 0.80, best=0.85, layers=(0.8, 1.0)),
    _record("snip", 0.9, 1, 0.84, best=0.86, layers=(0.9, 0.9)),
    _record("grasp", 0.9, 0, 0.70),
    _record("grasp", 0.9, 1, 0.10, diverged={"epoch": 1, "last_finite_loss": 2.5}),
]


def test_cells_are_mean_and_sample_std_with_diverged_runs_left_out():
    cells = report.summarize(RECORDS)
    snip = cells[("snip", 0.9)]
    assert snip.final[0] == pytest.approx(82.0)
    assert snip.final[1] == pytest.approx(math.sqrt(8.0))  # (2^2 + 2^2) / (2 - 1)
    assert snip.best == pytest.approx((85.5, math.sqrt(0.5)))
    assert snip.kept == pytest.approx({"a/kernel": 15.0, "b/kernel": 5.0})
    assert snip.empty == 1 and snip.n == 2 and snip.diverged == 0
    grasp = cells[("grasp", 0.9)]
    assert grasp.final == (70.0, 0.0) and grasp.n == 1 and grasp.diverged == 1


def test_divergence_is_read_off_the_history_of_an_older_record():
    old = _record("grasp", 0.5, 0, 0.1)
    old["history"] = [
        {"epoch": 0, "train_loss": 2.0},
        {"epoch": 1, "train_loss": float("nan")},
        {"epoch": 2, "train_loss": float("nan")},
    ]
    assert report.divergence(old) == {"epoch": 1, "last_finite_loss": 2.0}
    assert report.summarize([old])[("grasp", 0.5)].final is None


def test_markdown_flags_diverged_and_empty_and_labels_the_best_epoch():
    text = report.markdown(RECORDS, title="t", methods=("dense", "snip", "grasp"))
    assert "| dense | 91.00 ± 1.41 | - |" in text
    assert "| snip | - | 82.00 ± 2.83 |" in text
    assert "| grasp | - | 70.00 (1/2 diverged) |" in text
    assert "selected on the test set" in text
    assert "| snip | 15 / 5 (**1 empty**) |" in text
    assert "| grasp | 0.9 | 1 | 1 | 2.5000 |" in text  # the diverged-runs table
    assert "nan" not in text.lower()
    every = report.markdown(
        [r for r in RECORDS if r["method"] == "grasp" and r["seed"] == 1], title="t"
    )
    assert "| grasp | diverged (1/1) |" in every


def test_plots_give_each_method_its_own_colour_and_marker(tmp_path):
    names = [f"m{i}" for i in range(14)]
    styles = report._styles(names)
    assert len({s["color"] for s in styles.values()}) == 14
    assert len({s["marker"] for s in styles.values()}) == 14
    report.plot_accuracy(RECORDS, str(tmp_path / "acc.png"), title="t")
    report.plot_layer_density(RECORDS, 0.9, str(tmp_path / "dens.png"))
    assert (tmp_path / "acc.png").stat().st_size > 1000
    assert (tmp_path / "dens.png").stat().st_size > 1000


def test_recipe_line_sums_each_logged_runs_own_time():
    from experiments.configs import benchmark_fmnist_lenet300

    config = benchmark_fmnist_lenet300.get_config()
    text = report.recipe_line(config, None, RECORDS[:4])
    # four records of 0.5 s pruning + 2.0 s training: 10 s = 0.167 min
    assert text.endswith(
        "Time of the 4 logged runs (pruning + training, summed): 0.2 min."
    )
    assert f"{config.train.num_epochs} epochs" in text
