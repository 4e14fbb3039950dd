"""Tests of the pretrained AutoS shipped with the package."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from autosparse_jax import masks, models, pretrained


class UserCNN(nn.Module):
    """A model the artifacts never saw: a conv layer, another input size."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
        return nn.Dense(5, name="head")(x)


def test_available_lists_every_artifact_with_its_provenance():
    listed = pretrained.available()
    assert sorted(listed) == sorted(pretrained.NAMES)
    for name, entry in listed.items():
        assert entry["description"] == pretrained.NAMES[name]
        provenance = entry["provenance"]
        assert provenance is not None, f"{name} is missing from the package"
        assert provenance["source_model"] == "lenet300_100"
        assert provenance["dataset"] == "fashion_mnist"
        assert provenance["irp_config"]["criterion"] == name.rsplit("_", 1)[1]
        assert 0.0 < provenance["held_out_spearman"]["scorer"] <= 1.0


def test_unknown_name_is_refused_listing_the_names():
    with pytest.raises(ValueError, match="lenet300_fmnist_magnitude"):
        pretrained.load("lenet300_fmnist")


def _check(mask, params, sparsity):
    kernels = [m for m in jax.tree.leaves(mask) if m.ndim > 1]
    total = sum(k.size for k in kernels)
    assert sum(int(k.sum()) for k in kernels) == round((1 - sparsity) * total)
    assert min(int(k.sum()) for k in kernels) > 0  # no layer left empty
    assert jax.tree.structure(mask) == jax.tree.structure(params)


@pytest.mark.parametrize("name", sorted(pretrained.NAMES))
def test_each_artifact_prunes_its_source_architecture_and_a_user_model(name):
    autos = pretrained.load(name)
    # Jitted: one compilation per model instead of hundreds of eager ops
    # (test_autosparse prunes eagerly).
    prune = jax.jit(autos.prune, static_argnames=("apply_fn",))
    key = jax.random.key(0)
    lenet = models.get_model("lenet300_100", num_classes=10)
    params, state = models.init_params(key, lenet, (28, 28, 1))
    batch = {
        "image": jax.random.normal(key, (64, 28, 28, 1)),
        "label": jax.random.randint(key, (64,), 0, 10),
    }
    apply_fn = models.make_apply_fn(lenet, state)
    mask = prune(key, params, batch, apply_fn=apply_fn, sparsity=0.98)
    _check(mask, params, 0.98)

    user = UserCNN()
    params = user.init(key, np.zeros((1, 12, 12, 3), np.float32))["params"]
    batch = {
        "image": jax.random.normal(key, (16, 12, 12, 3)),
        "label": jax.random.randint(key, (16,), 0, 5),
    }
    mask = prune(
        key, params, batch, apply_fn=lambda p, x: user.apply({"params": p}, x),
        sparsity=0.98,
    )  # fmt: skip
    _check(mask, params, 0.98)
    assert float(masks.sparsity(mask)) == pytest.approx(0.98, abs=1e-4)
