"""Tests of the mask-scale diagnostic: a hand-computed case and the script."""

import json
import math
import types

import flax.linen as nn
import jax.numpy as jnp
import pytest

from experiments import mask_scale


class _TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Dense(2, use_bias=False, name="hidden")(x)
        return nn.Dense(3, use_bias=False, name="head")(x)


def test_scale_of_reads_every_layer_output_the_loss_and_its_gradient():
    recipe = types.SimpleNamespace(model=_TwoLayers())
    params = {
        "hidden": {"kernel": jnp.array([[1.0, 0.0], [0.0, 3.0]])},
        "head": {"kernel": jnp.zeros((2, 3))},
    }
    images = jnp.array([[1.0, 1.0], [-1.0, -1.0]])
    stds, loss, grads = mask_scale.scale_of(
        recipe, params, {}, images, jnp.array([0, 1])
    )
    # hidden outputs [1, 3] and [-1, -3]: mean 0, std sqrt((1 + 9) / 2)
    assert stds == pytest.approx({"hidden": math.sqrt(5.0), "head": 0.0})
    assert loss == pytest.approx(math.log(3.0))  # zero logits over 3 classes
    # d loss / d head kernel = h^T (softmax - onehot) / 2 with softmax = 1/3
    expected = (
        jnp.array([[1.0], [3.0]]) * jnp.array([[-2 / 3, 1 / 3, 1 / 3]])
        + jnp.array([[-1.0], [-3.0]]) * jnp.array([[1 / 3, -2 / 3, 1 / 3]])
    ) / 2
    assert jnp.allclose(grads["head"]["kernel"], expected, atol=1e-6)


def test_script_writes_one_record_per_seed_and_method(tmp_path, capsys):
    mask_scale.main([
        "--config", "experiments/configs/benchmark_mnist1d_lenet300.py", "--quick",
        "--seeds", "2", "--sparsity", "0.9", "--methods", "dense", "random", "grasp",
        "--workdir", str(tmp_path),
    ])  # fmt: skip
    records = json.loads((tmp_path / "mask_scale.json").read_text())
    assert [(r["seed"], r["method"]) for r in records] == [
        (2, "dense"), (2, "random"), (2, "grasp"),
    ]  # fmt: skip
    for r in records:
        assert list(r["output_std"]) == ["Dense_0", "Dense_1", "head"]
        assert math.isfinite(r["loss"]) and r["masked_grad_norm"] > 0
    # pruning 90 % of the weights at random shrinks every layer's output
    dense, random = records[0]["output_std"], records[1]["output_std"]
    assert all(random[k] < dense[k] for k in dense)
    assert "| 2 | grasp |" in capsys.readouterr().out
