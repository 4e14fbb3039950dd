"""Tests for autosparse_jax.structure: paths, dead units, fan-in and fan-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import masks, models, structure

INPUT_SHAPE = (2, 1, 1)


@pytest.fixture(scope="module")
def tiny():
    """A 2-2-2 MLP and a mask whose second hidden unit is dead.

    Dense_0 keeps both inputs into unit 0 and nothing into unit 1; the head
    keeps unit 0 -> class 1 and unit 1 -> class 0. The head's weight out of
    unit 1 is kept but on no path (no input reaches unit 1): 4 weights kept,
    3 effective.
    """
    model = models.MLP(num_classes=2, hidden_sizes=(2,))
    params, _ = models.init_params(jax.random.key(0), model, INPUT_SHAPE)
    mask = masks.dense_mask(params)
    mask["Dense_0"]["kernel"] = jnp.array([[True, False], [True, False]])
    mask["head"]["kernel"] = jnp.array([[False, True], [True, False]])
    return params, mask, models.make_apply_fn(model)


def test_effective_mask_drops_the_weight_out_of_a_dead_unit(tiny):
    params, mask, apply_fn = tiny
    eff = structure.effective_mask(
        params, mask, apply_fn=apply_fn, input_shape=INPUT_SHAPE
    )
    np.testing.assert_array_equal(eff["Dense_0"]["kernel"], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(eff["head"]["kernel"], [[0, 1], [0, 0]])
    # Biases are not prunable: returned as the mask has them.
    np.testing.assert_array_equal(eff["head"]["bias"], mask["head"]["bias"])


def test_summary_counts_the_hand_computed_case(tiny):
    params, mask, apply_fn = tiny
    s = structure.summary(params, mask, apply_fn=apply_fn, input_shape=INPUT_SHAPE)
    assert (s["kept"], s["effective"], s["total"]) == (4, 3, 8)
    assert s["effective_sparsity"] == pytest.approx(1 - 3 / 8)
    first, head = s["layers"]
    assert first["name"] == "Dense_0/kernel"
    assert (first["kept"], first["effective"]) == (2, 2)
    assert (first["inputs_used"], first["units_alive"]) == (2, 1)
    assert first["median_fan_in"] == 2.0
    assert (head["kept"], head["effective"]) == (2, 1)
    assert (head["inputs_used"], head["units_alive"], head["median_fan_in"]) == (
        1,
        1,
        1.0,
    )


def test_first_layer_fan_out_map_and_fan_in(tiny):
    _, mask, _ = tiny
    fan_out, fan_in = structure.first_layer(mask, INPUT_SHAPE)
    assert fan_out.shape == (2, 1)  # the channel axis is summed
    np.testing.assert_array_equal(fan_out, [[1], [1]])
    np.testing.assert_array_equal(fan_in, [2, 0])
    fan_out, _ = structure.first_layer(mask, (2, 1))
    np.testing.assert_array_equal(fan_out, [[1], [1]])


def test_first_layer_refuses_a_kernel_of_another_size(tiny):
    _, mask, _ = tiny
    with pytest.raises(ValueError, match="Dense_0/kernel has shape"):
        structure.first_layer(mask, (28, 28, 1))
    with pytest.raises(ValueError, match="no prunable leaf"):
        structure.first_layer({"bias": jnp.ones(3, bool)}, INPUT_SHAPE)


def test_plot_first_layer_one_row_per_mask(tiny, tmp_path):
    params, mask, _ = tiny
    path = tmp_path / "first_layer.png"
    fig = structure.plot_first_layer(
        {"dense": masks.dense_mask(params), "pruned": mask},
        INPUT_SHAPE,
        path=str(path),
        title="tiny",
    )
    assert path.stat().st_size > 0
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "pruned\nkept fan-out per pixel (2 used)" in titles
    assert "1 of 2 units alive, median fan-in 2" in titles
    assert "2 of 2 units alive, median fan-in 2" in titles


@pytest.fixture(scope="module")
def sparse_mask():
    """A random 10 %-dense mask of a 40-30-5 MLP (kernels and biases)."""
    k1, k2 = jax.random.split(jax.random.key(5))
    return {
        "Dense_0": {
            "kernel": jax.random.uniform(k1, (40, 30)) < 0.1,
            "bias": jnp.ones(30, bool),
        },
        "head": {
            "kernel": jax.random.uniform(k2, (30, 5)) < 0.3,
            "bias": jnp.ones(5, bool),
        },
    }


@pytest.mark.parametrize(
    "shuffle, keeps_fan_in, keeps_fan_out",
    [
        (structure.shuffle_keeping_fan_in, True, False),
        (structure.shuffle_keeping_fan_out, False, True),
        (structure.rewire, True, True),
    ],
)
def test_shuffles_keep_exactly_the_degrees_they_promise(
    sparse_mask, shuffle, keeps_fan_in, keeps_fan_out
):
    out = shuffle(jax.random.key(0), sparse_mask)
    for name in ("Dense_0", "head"):
        before = np.asarray(sparse_mask[name]["kernel"])
        after = np.asarray(out[name]["kernel"])
        assert after.dtype == bool and after.sum() == before.sum()
        assert not np.array_equal(after, before)
        same_in = np.array_equal(after.sum(0), before.sum(0))
        same_out = np.array_equal(after.sum(1), before.sum(1))
        assert same_in == keeps_fan_in and same_out == keeps_fan_out
        np.testing.assert_array_equal(out[name]["bias"], sparse_mask[name]["bias"])
    # Deterministic in the key, different across keys.
    again = shuffle(jax.random.key(0), sparse_mask)
    other = shuffle(jax.random.key(1), sparse_mask)
    k = ("Dense_0", "kernel")
    assert np.array_equal(again[k[0]][k[1]], out[k[0]][k[1]])
    assert not np.array_equal(other[k[0]][k[1]], out[k[0]][k[1]])


def test_rewire_leaves_a_full_kernel_and_refuses_conv_kernels():
    full = {"Dense_0": {"kernel": jnp.ones((3, 4), bool)}}
    out = structure.rewire(jax.random.key(0), full)
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], full["Dense_0"]["kernel"])
    conv = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 4), bool)}}
    with pytest.raises(ValueError, match="Conv_0/kernel has shape"):
        structure.shuffle_keeping_fan_in(jax.random.key(0), conv)
    with pytest.raises(ValueError, match="num_swaps must be an int >= 1"):
        structure.rewire(jax.random.key(0), full, num_swaps=0)
