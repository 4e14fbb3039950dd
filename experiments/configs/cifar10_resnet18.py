"""IRP on ResNet-18 / CIFAR-10 with the AutoSparse paper's recipe (the source run).

Reproduces step 1 of the AutoSparse pipeline (Liu, Cheng et al. 2024, arXiv
2408.14757): 20 rounds of SNIP-based iterative rewind pruning to
99% sparsity (geometric schedule: 20.6% of the remaining weights pruned per
round), global scope, rewinding to initialisation, each round trained for 160
epochs with SGD Nesterov momentum 0.9, lr 0.01 x0.2 at epochs 60 and 120,
weight decay 5e-4, batch 128, random crop + flip (the optimizer and its
schedule restart every round). The script also trains dense and random masks
at 98% and 99% for 160 epochs with the same recipe, seed and initial params.

Choices:
- model ``resnet18``: the CIFAR ResNet-18 (3x3 stem, no max pool, 1x1
  projection shortcuts) that the authors train on CIFAR-10; 11.2M params.
- criterion ``snip``: the paper's main survival labels are said to come from
  SNIP-based IRP (the authors' code also has magnitude; set
  ``irp.criterion = "magnitude"`` for the lottery-ticket variant). SNIP
  averages ``|w * dL/dw|`` over ``num_score_batches = 8`` batches of 128
  training images (1,024 images, as in the PaI baselines), BatchNorm in
  inference mode; from round 1 on it scores the weights trained in the
  previous round.
- reset ``full``: every parameter, the BatchNorm statistics and the optimizer
  go back to the rewind point (textbook IRP, our default). The authors' code
  rewinds only the masked kernels and carries biases, BatchNorm parameters and
  statistics over: ``irp.reset = "kernels"``.
- schedule ``geometric`` (the classic ~20% per round); the authors' code also
  has ``"linear"`` (same number of weights per round).

Command (from the repository root; resumable: re-running continues after the
last complete round; CIFAR-10 is downloaded by TFDS on first use, which needs
the network and ``pip install autosparse_jax[data]``):

    python -m experiments.run_irp --config experiments/configs/cifar10_resnet18.py \\
        --workdir runs/irp_cifar10_resnet18

Hardware: one GPU. Runtime: an ESTIMATE, not measured (no GPU was available
when this config was written): 3,200 IRP epochs plus 480 baseline epochs.
XLA's cost analysis gives 2.9 GFLOP per training image (forward 0.97), so
145 TFLOP per epoch; at an assumed 15-35 TFLOP/s sustained (fp32/TF32, batch
128) on one A100/H100-class GPU that is 4-10 s per epoch, about 4-10 hours in
all. Replace this with the measured time once run. On 2 CPU cores it is out
of reach (months).
Expected: not measured here yet. The paper reports IRP on ResNet-18 /
CIFAR-10 well above the PaI baselines at 99% sparsity; dense ResNet-18 with
a recipe like this one typically reaches about 93-95% in the literature.

Smoke test on CPU (2 rounds x 1 epoch on 512 images, random only at 99%;
needs CIFAR-10 prepared locally): add ``--quick`` and a fresh ``--workdir``.
About 4 minutes on 2 CPU cores (VGG-16: 6), measured with synthetic
CIFAR-shaped data in place of ``data.load_dataset``.
"""

import ml_collections


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dataset = "cifar10"
    config.model = "resnet18"
    config.train_split = "train"
    config.test_split = "test"

    config.train = ml_collections.ConfigDict()
    config.train.num_epochs = 160  # linked to irp.epochs_per_round below
    config.train.batch_size = 128
    config.train.eval_batch_size = 1_000
    config.train.learning_rate = 0.01
    config.train.momentum = 0.9
    config.train.nesterov = True
    config.train.weight_decay = 5e-4
    config.train.schedule = "multistep"
    config.train.milestones = (60, 120)  # epochs of the round
    config.train.decay_factor = 0.2

    # Maps 1:1 to autosparse_jax.irp.IRPConfig (IRPConfig(**config.irp)).
    config.irp = ml_collections.ConfigDict()
    config.irp.num_rounds = 20
    config.irp.final_sparsity = 0.99
    config.irp.schedule = "geometric"
    config.irp.epochs_per_round = 160
    config.irp.criterion = "snip"
    config.irp.rewind_step = 0
    config.irp.reset = "full"  # the authors' code: "kernels"
    config.irp.scope = "global"
    config.irp.batch_size = config.train.get_ref("batch_size")
    config.irp.eval_batch_size = config.train.get_ref("eval_batch_size")
    config.irp.num_score_batches = 8
    config.train.num_epochs = config.irp.get_ref("epochs_per_round")

    config.baselines = ml_collections.ConfigDict()
    config.baselines.random_sparsities = (0.98, 0.99)

    if quick:  # a CPU smoke test of the same study, not a result
        config.irp.num_rounds = 2
        config.irp.epochs_per_round = 1  # and so train.num_epochs
        config.irp.num_score_batches = 1
        config.train_split = "train[:512]"
        config.test_split = "test[:500]"
        config.baselines.random_sparsities = (0.99,)
    return config
