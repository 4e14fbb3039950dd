"""Tests for autosparse_jax.evaluation: hand-computed ranking metrics."""

import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import evaluation


def test_spearman_monotone_and_reversed():
    x = [0.1, 0.4, 0.2, 0.9]
    y = [1, 3, 2, 7]
    assert evaluation.spearman(x, y) == pytest.approx(1.0)
    assert evaluation.spearman(x, [-v for v in y]) == pytest.approx(-1.0)


def test_spearman_ties_match_average_rank_pearson():
    scores = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    labels = np.array([0, 1, 2, 2, 1])
    # Average ranks by hand: 2.0 ties at ranks 2,3 -> 2.5; labels 1 at 2,3 -> 2.5,
    # labels 2 at 4,5 -> 4.5.
    rs = np.array([1.0, 2.5, 2.5, 4.0, 5.0])
    rl = np.array([1.0, 2.5, 4.5, 4.5, 2.5])
    expected = np.corrcoef(rs, rl)[0, 1]
    assert evaluation.spearman(scores, labels) == pytest.approx(expected)


def test_spearman_constant_is_nan_and_accepts_jax():
    assert np.isnan(evaluation.spearman([1.0, 1.0, 1.0], [0, 1, 2]))
    assert evaluation.spearman(jnp.arange(4.0), jnp.arange(4)) == pytest.approx(1.0)


def test_kendall_hand_case():
    # One discordant pair (2,3) out of 6: tau = (5 - 1) / 6.
    tau = evaluation.kendall([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6)
    assert np.isnan(evaluation.kendall([1, 2, 3], [5, 5, 5]))


def test_kendall_large_input_is_fast():
    rng = np.random.default_rng(0)
    x = rng.normal(size=266_000)
    tau = evaluation.kendall(x, x + rng.normal(size=x.size))
    assert 0.0 < tau < 1.0


def test_within_layer_perfect_but_global_not():
    # Layer 0 scores are all below layer 1, but its labels are higher.
    scores = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0]
    labels = [4, 5, 6, 0, 1, 2]
    layer_ids = [0, 0, 0, 1, 1, 1]
    result = evaluation.within_layer_spearman(scores, labels, layer_ids)
    assert result["per_layer"] == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    assert result["mean"] == pytest.approx(1.0)
    assert evaluation.spearman(scores, labels) < 1.0


def test_within_layer_size_weighted_and_constant_labels_skipped():
    scores = [1.0, 2.0, 3.0, 3.0, 2.0, 5.0, 6.0]
    labels = [0, 1, 2, 0, 1, 3, 3]
    layer_ids = [0, 0, 0, 1, 1, 2, 2]  # rho = 1 (3 weights), -1 (2), nan (const)
    result = evaluation.within_layer_spearman(scores, labels, layer_ids)
    assert np.isnan(result["per_layer"][2])
    assert result["mean"] == pytest.approx((3 * 1.0 + 2 * -1.0) / 5)


def test_top_k_mask_ties_broken_by_index():
    mask = evaluation.top_k_mask([2.0, 5.0, 2.0, 5.0, 2.0], 3)
    assert mask.tolist() == [True, True, False, True, False]
    assert evaluation.top_k_mask([1.0, 2.0], 0).tolist() == [False, False]
    with pytest.raises(ValueError, match="num_keep must be in"):
        evaluation.top_k_mask([1.0, 2.0], 3)


def test_iou_hand_cases():
    assert evaluation.iou([True, True, False], [True, False, True]) == 1 / 3
    assert evaluation.iou([True, False], [True, False]) == 1.0
    assert evaluation.iou([True, False], [False, True]) == 0.0
    assert evaluation.iou([False, False], [False, False]) == 1.0


def test_irp_round_at_and_irp_mask():
    round_sparsities = [0.2, 0.36, 0.488, 0.59]
    assert evaluation.irp_round_at(round_sparsities, 0.0) == 0
    assert evaluation.irp_round_at(round_sparsities, 0.5) == 2
    assert evaluation.irp_round_at(round_sparsities, 0.99) == 3
    counts = np.array([0, 4, 1, 2, 3])
    assert evaluation.irp_mask(counts, 0).tolist() == [0, 1, 1, 1, 1]
    assert evaluation.irp_mask(counts, 2).tolist() == [0, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="round_index must be >= 0"):
        evaluation.irp_mask(counts, -1)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        evaluation.irp_round_at(round_sparsities, 1.0)


def test_mask_iou_at_perfect_scores():
    counts = np.array([0, 0, 1, 1, 2, 3, 4, 4, 0, 2])
    # Sparsity after round r = fraction with counts <= r.
    round_sparsities = [np.mean(counts <= r) for r in range(4)]
    sparsities = (0.3, 0.5, 0.7, 0.8)
    result = evaluation.mask_iou_at(counts, counts, round_sparsities, sparsities)
    assert result == {s: 1.0 for s in sparsities}
    reversed_result = evaluation.mask_iou_at(-counts, counts, round_sparsities, (0.8,))
    assert reversed_result[0.8] == 0.0


def test_ranking_report_keys_and_values():
    counts = np.array([0, 1, 2, 2, 1, 0])
    scores = counts / 2
    report = evaluation.ranking_report(
        scores, counts, 2, [1 / 3, 2 / 3], [0, 0, 0, 1, 1, 1], sparsities=(0.3, 0.7)
    )
    assert set(report) == {
        "mse",
        "spearman",
        "kendall",
        "spearman_within_layer",
        "iou@0.3",
        "iou@0.7",
    }
    assert report["mse"] == 0.0
    assert report["spearman"] == pytest.approx(1.0)
    assert report["kendall"] == pytest.approx(1.0)
    assert report["spearman_within_layer"] == pytest.approx(1.0)
    assert report["iou@0.3"] == report["iou@0.7"] == 1.0
    with pytest.raises(ValueError, match="num_rounds must be >= 1"):
        evaluation.ranking_report(scores, counts, 0, [0.5], [0] * 6)


def test_split_weights_disjoint_covering_deterministic():
    train, held = evaluation.split_weights(3, 100, 0.2)
    assert held.size == 20 and train.size == 80
    assert np.intersect1d(train, held).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, held])), np.arange(100)
    )
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)
    train2, held2 = evaluation.split_weights(3, 100, 0.2)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(held, held2)
    _, held3 = evaluation.split_weights(4, 100, 0.2)
    assert not np.array_equal(held, held3)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_weights_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"held_out_fraction must be in \(0, 1\)"):
        evaluation.split_weights(0, 10, fraction)


def test_split_weights_empty_part():
    with pytest.raises(ValueError, match="both parts must be non-empty"):
        evaluation.split_weights(0, 3, 0.01)


def test_split_layers():
    layer_ids = np.array([0, 0, 1, 2, 2, 1])
    train, held = evaluation.split_layers(layer_ids, [1])
    assert train.tolist() == [0, 1, 3, 4]
    assert held.tolist() == [2, 5]
    with pytest.raises(ValueError, match=r"do not exist; layers are \[0, 1, 2\]"):
        evaluation.split_layers(layer_ids, [1, 7])
    with pytest.raises(ValueError, match="training part would be empty"):
        evaluation.split_layers(layer_ids, [0, 1, 2])
    with pytest.raises(ValueError, match="held_out is empty"):
        evaluation.split_layers(layer_ids, [])


def test_mismatched_lengths_and_shapes_raise():
    with pytest.raises(ValueError, match="must have the same length, got 3 and 2"):
        evaluation.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        evaluation.kendall([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="scores and layer_ids must have the same"):
        evaluation.within_layer_spearman([1, 2], [1, 2], [0])
    with pytest.raises(ValueError, match="mask_a and mask_b"):
        evaluation.iou([True], [True, False])
    with pytest.raises(ValueError, match="scores and counts"):
        evaluation.mask_iou_at([1.0], [1, 2], [0.5])
    with pytest.raises(ValueError, match="must be 1-D"):
        evaluation.spearman(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="is empty"):
        evaluation.top_k_mask([], 0)
