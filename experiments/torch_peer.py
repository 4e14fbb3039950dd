"""The same masked SGD epoch in plain PyTorch: the peer ``bench_train`` compares with.

Optional (``pip install -e '.[bench]'``); the package never imports PyTorch.
One epoch is what ``train.make_train_epoch`` does, written as a plain PyTorch
loop: a fresh permutation of the training set, then for every batch of
``batch_size`` uint8 images the same preprocessing (divide by 255, subtract the
dataset mean, divide by its std), a forward pass, cross-entropy, backward, the
gradient multiplied by the mask, an SGD momentum step, and the weights
multiplied by the mask again. The models are LeNet-300-100, LeNet-5, Conv-2/4/6
and ResNet-20 as in ``autosparse_jax.models`` on 28x28x1 images (same layers,
shapes and activations, BatchNorm in training mode; PyTorch's own
initialisation, which does not change the cost).
"""

import importlib.util

import numpy as np


def available() -> bool:
    """Whether PyTorch is installed."""
    return importlib.util.find_spec("torch") is not None


def _model(name: str):
    from torch import nn

    if name == "lenet300_100":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
            nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )  # fmt: skip
    if name in _CONVNET_BLOCKS:
        layers, channels = [], 1
        for features in (64, 128, 256)[: _CONVNET_BLOCKS[name]]:
            for _ in range(2):
                layers += [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU()]
                channels = features
            layers.append(nn.MaxPool2d(2))
        side = 28 // 2 ** _CONVNET_BLOCKS[name]
        layers += [
            nn.Flatten(), nn.Linear(channels * side * side, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
        ]  # fmt: skip
        return nn.Sequential(*layers)
    if name == "resnet20":
        return _resnet20()
    raise ValueError(
        f"No PyTorch peer for model {name!r}; use one of {', '.join(MODELS)}."
    )


def _resnet20():
    """``models.ResNet20`` on one input channel: the same blocks and shortcuts."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride):
        return [
            nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5),
        ]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(
                *conv_bn(cin, cout, 3, stride), nn.ReLU(), *conv_bn(cout, cout, 3, 1)
            )
            self.shortcut = (
                nn.Sequential(*conv_bn(cin, cout, 1, stride))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    layers, channels = [*conv_bn(1, 16, 3, 1), nn.ReLU()], 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append(Block(channels, width, 2 if stage and not block else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


_CONVNET_BLOCKS = {"conv2": 1, "conv4": 2, "conv6": 3}
MODELS = ("lenet300_100", "lenet5", *_CONVNET_BLOCKS, "resnet20")


def make_epoch(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    mean: float,
    std: float,
    batch_size: int,
    keep: float = 1.0,
):
    """``(one_epoch, model, masks)``: ``one_epoch()`` trains one masked epoch.

    Args:
      name: a model of ``MODELS``.
      images: uint8 ``[N, H, W, 1]`` (NHWC, as the JAX benchmark reads them).
      labels: int ``[N]``.
      mean, std: the dataset's normalisation, in [0, 1]-pixel units.
      batch_size: examples per step (the last partial batch is dropped, as in
        the JAX epoch).
      keep: fraction of each weight tensor kept by the random mask (1.0: a
        mask of ones, still applied every step, as in the JAX benchmark).
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _model(name)
    masks = [(torch.rand_like(p) < keep).float() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(labels.astype(np.int64))
    steps = len(labels) // batch_size
    with torch.no_grad():
        for p, m in zip(model.parameters(), masks, strict=True):
            p.mul_(m)

    def one_epoch() -> float:
        order = torch.randperm(len(labels))
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = (x_all[idx].float() / 255.0 - mean) / std
            loss = F.cross_entropy(model(x), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for p, m in zip(model.parameters(), masks, strict=True):
                    p.grad.mul_(m)
            optimizer.step()
            with torch.no_grad():
                for p, m in zip(model.parameters(), masks, strict=True):
                    p.mul_(m)
        return float(loss.detach())

    return one_epoch, model, masks


def version() -> str:
    import torch

    return f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
