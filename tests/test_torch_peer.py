"""The PyTorch peer loop of ``make bench`` (runs where PyTorch is installed)."""

import jax
import numpy as np
import pytest

from autosparse_jax import models
from experiments import torch_peer

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", torch_peer.MODELS)
def test_peer_models_have_the_jax_models_shapes(name):
    params, _ = models.init_params(
        jax.random.key(0), models.get_model(name, num_classes=10), (28, 28, 1)
    )
    jax_shapes = sorted(tuple(sorted(x.shape)) for x in jax.tree.leaves(params))
    peer = torch_peer._model(name)
    torch_shapes = sorted(tuple(sorted(p.shape)) for p in peer.parameters())
    assert torch_shapes == jax_shapes
    assert peer(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_peer_epoch_keeps_pruned_weights_zero_and_trains_the_rest():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)
    one_epoch, model, masks = torch_peer.make_epoch(
        "lenet300_100", images, labels, mean=0.286, std=0.353, batch_size=16,
        keep=0.5,
    )  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    assert np.isfinite(one_epoch())
    for p, p0, m in zip(model.parameters(), before, masks, strict=True):
        assert torch.all(p[m == 0] == 0)
        assert not torch.allclose(p[m == 1], p0[m == 1])


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="use one of lenet300_100, lenet5, conv2"):
        torch_peer._model("vgg16")
