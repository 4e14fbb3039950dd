"""Tests of experiments.diagnostics: the IRP-mask shuffles and the tables."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP

from autosparse_jax import irp, masks, models
from experiments import common, diagnostics

SHAPE = (8, 8, 1)


def _random_mask(key, params, keep):
    """Kernels kept with probability ``keep``; biases kept."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            jax.random.uniform(k, p.shape) < keep
            if p.ndim == 2
            else jnp.ones_like(p, bool)
            for k, p in zip(keys, leaves, strict=True)
        ],
    )


@pytest.fixture(scope="module")
def labelled():
    """A fake labelled run of a TinyMLP: dense, then 50 % and 90 % masks."""
    model = TinyMLP(num_classes=4, hidden=16)
    params, state = models.init_params(jax.random.key(0), model, SHAPE)
    round_masks = [masks.dense_mask(params)]
    for i, keep in enumerate((0.5, 0.1)):
        round_masks.append(_random_mask(jax.random.key(10 + i), params, keep))
    history = [{"sparsity": float(masks.sparsity(m))} for m in round_masks[1:]]
    labels = irp.IRPLabels(
        params, state, tuple(round_masks), None, {"history": history}
    )
    return model, labels


def test_irp_mask_at_takes_the_round_nearest_the_sparsity(labelled):
    _, labels = labelled
    assert diagnostics.irp_mask_at(labels, 0.55) is labels.masks[1]
    assert diagnostics.irp_mask_at(labels, 0.85) is labels.masks[2]


def test_every_shuffle_keeps_the_layer_counts_and_its_init(labelled, monkeypatch):
    model, labels = labelled
    monkeypatch.setattr(diagnostics, "labels_of", lambda config, seed: labels)
    target = common.Target(
        seed=0, params=None, model_state=None, apply_fn=None, batches=None,
        prune_key=jax.random.key(3), data_key=None, phi=None,
    )  # fmt: skip
    study = types.SimpleNamespace(
        config=None, recipe=types.SimpleNamespace(model=model, input_shape=SHAPE)
    )
    irp_mask = labels.masks[2]
    kernels = [m for m in jax.tree.leaves(irp_mask) if m.ndim == 2]
    outs = {
        name: diagnostics._irp_method(fn)(target, 0.9, study)
        for name, fn in diagnostics.SHUFFLES.items()
    }
    for name, (mask, params) in outs.items():
        got = [m for m in jax.tree.leaves(mask) if m.ndim == 2]
        assert [int(m.sum()) for m in got] == [int(m.sum()) for m in kernels], name
        if name == "irp_new_init":
            assert jax.tree.structure(params) == jax.tree.structure(labels.init_params)
            assert not np.array_equal(
                params["head"]["kernel"], labels.init_params["head"]["kernel"]
            )
        else:
            assert params is labels.init_params, name
    for name in ("irp_own_init", "irp_new_init"):
        assert outs[name][0] is irp_mask
    first = np.asarray(kernels[0])
    fan_in = np.asarray(outs["irp_keep_fan_in"][0]["Dense_0"]["kernel"])
    fan_out = np.asarray(outs["irp_keep_fan_out"][0]["Dense_0"]["kernel"])
    rewired = np.asarray(outs["irp_keep_degrees"][0]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(fan_in.sum(0), first.sum(0))
    np.testing.assert_array_equal(fan_out.sum(1), first.sum(1))
    np.testing.assert_array_equal(rewired.sum(0), first.sum(0))
    np.testing.assert_array_equal(rewired.sum(1), first.sum(1))
    for m in (fan_in, fan_out, rewired):
        assert not np.array_equal(m, first)


def test_structure_table_prints_each_layers_counts():
    summary = {
        "kept": 4,
        "effective": 3,
        "effective_sparsity": 0.625,
        "layers": [
            {"units_alive": 1, "inputs_used": 2, "median_fan_in": 2.0},
            {"units_alive": 1, "inputs_used": 1, "median_fan_in": 1.0},
        ],
    }
    table = diagnostics.structure_table({"tiny": summary}).splitlines()
    assert table[2] == "| tiny | 4 | 3 | 62.500 | 1 / 2 / 2; 1 / 1 / 1 |"


def test_the_committed_config_names_runs_and_methods_that_exist():
    config = common.load_config("experiments/configs/diagnostics_fmnist_lenet300.py")
    from experiments import methods

    for name in config.structure_methods:
        methods.resolve(name)
    plotted = {f"IRP (seed {s})" for s in config.irp_labels}
    plotted |= set(config.structure_methods)
    assert set(config.structure_plot) <= plotted
    assert jnp.all(jnp.asarray(config.shuffle_sparsities) < 1)
