"""Tests for autosparse_jax.lookahead: the look-ahead training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_all_equal

from autosparse_jax import lookahead, masks, models, train

INPUT_SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def setup():
    model = models.get_model("lenet300_100", num_classes=3)
    params, _ = models.init_params(jax.random.key(0), model, INPUT_SHAPE)
    k1, k2 = jax.random.split(jax.random.key(1))
    data = {
        "image": jax.random.uniform(k1, (64, *INPUT_SHAPE)),
        "label": jax.random.randint(k2, (64,), 0, 3),
    }
    return model, params, data


def _epoch(model, optimizer):
    return train.make_train_epoch(model, optimizer, batch_size=16)


def test_train_ahead_is_the_first_epochs_of_the_recipe(setup):
    model, params, data = setup
    optimizer = optax.sgd(0.1, momentum=0.9)
    epoch_fn = _epoch(model, optimizer)
    key = jax.random.key(3)
    ahead = lookahead.train_ahead(
        key, params, data, train_epoch=epoch_fn, optimizer=optimizer, num_epochs=2
    )
    state = train.init_train_state(params, masks.dense_mask(params), optimizer)
    for epoch in range(2):
        state, _ = epoch_fn(state, data, key, epoch)
    assert_trees_all_equal(ahead, state.params)
    assert not np.allclose(ahead["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    assert jax.tree.structure(ahead) == jax.tree.structure(params)


def test_train_ahead_under_a_mask_keeps_pruned_weights_zero(setup):
    model, params, data = setup
    optimizer = optax.sgd(0.1)
    mask = jax.tree.map(lambda p: jnp.arange(p.size).reshape(p.shape) % 2 == 0, params)
    ahead = lookahead.train_ahead(
        jax.random.key(3), params, data, train_epoch=_epoch(model, optimizer),
        optimizer=optimizer, mask=mask,
    )  # fmt: skip
    kernel = np.asarray(ahead["Dense_0"]["kernel"])
    assert not np.any(kernel[~np.asarray(mask["Dense_0"]["kernel"])])


@pytest.mark.parametrize("num_epochs", [0, 1.5, True])
def test_train_ahead_rejects_a_bad_number_of_epochs(setup, num_epochs):
    model, params, data = setup
    optimizer = optax.sgd(0.1)
    with pytest.raises(ValueError, match="num_epochs must be"):
        lookahead.train_ahead(
            jax.random.key(3), params, data, train_epoch=_epoch(model, optimizer),
            optimizer=optimizer, num_epochs=num_epochs,
        )  # fmt: skip


def test_train_ahead_refuses_a_diverged_look_ahead(setup):
    model, params, data = setup
    optimizer = optax.sgd(1e30)
    with pytest.raises(FloatingPointError, match="look-ahead training diverged"):
        lookahead.train_ahead(
            jax.random.key(3), params, data, train_epoch=_epoch(model, optimizer),
            optimizer=optimizer,
        )  # fmt: skip
