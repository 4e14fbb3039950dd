"""IRP on VGG-16 (with BatchNorm) / CIFAR-10 with the AutoSparse paper's recipe.

Everything as in ``cifar10_resnet18.py`` (20 rounds of SNIP-based IRP to 99%
sparsity, 160 epochs per round, SGD Nesterov momentum 0.9, lr 0.01 x0.2 at
epochs 60 and 120, weight decay 5e-4, batch 128, crop + flip, full reset;
dense and random 98% / 99% baselines with the same recipe); only the model
differs. VGG-16 / CIFAR-10 is the paper's transfer target, so this run gives
the IRP reference a transferred AutoS predictor is compared with.

Model ``vgg16_bn``: the CIFAR VGG-16 of the authors' code (SynFlow's
``lottery_vgg``: 13 3x3 convolutions, global average pooling, one linear
head; 14.7M params) with BatchNorm after every convolution, as in the
pruning-at-initialisation literature's VGG-16 on CIFAR-10 (SNIP, GraSP,
SynFlow). Without BatchNorm (``model = "vgg16"``) a 13-layer plain network
at lr 0.01 trains poorly from scratch, and the sparse rewound subnetworks
even more so.

Command (from the repository root; resumable; CIFAR-10 is downloaded by TFDS
on first use, which needs the network and ``pip install autosparse_jax[data]``):

    python -m experiments.run_irp --config experiments/configs/cifar10_vgg16.py \\
        --workdir runs/irp_cifar10_vgg16

Hardware: one GPU. Runtime: an ESTIMATE, not measured (no GPU was available
when this config was written): 3,680 epochs (IRP and baselines) at 1.5 GFLOP
per training image (XLA cost analysis; about half of ResNet-18), i.e. 2-5 s
per epoch at an assumed 15-35 TFLOP/s on one A100/H100-class GPU: about 2-5
hours in all.
Expected: not measured here yet; dense VGG-16-BN with a recipe like this
one typically reaches about 93-94% in the literature.

Smoke test on CPU: ``--quick`` as in ``cifar10_resnet18.py``.
"""

import ml_collections

from experiments.configs import cifar10_resnet18


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = cifar10_resnet18.get_config(quick)
    config.model = "vgg16_bn"
    return config
