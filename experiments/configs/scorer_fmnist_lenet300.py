"""AutoS scorers on LeNet-300-100 / Fashion-MNIST IRP labels, held-out evaluation.

Trains every scorer variant on the labelled IRP run of seed 0 and measures how
well it ranks the weights of data it never trained on, beside the single
heuristics |w0|, |g0|, SNIP |w0 g0|, GraSP w0 Hg and one-shot SynFlow:
(a) a random 10% of the seed-0 weights, (b) each whole layer held out in turn,
(c) the default: the IRP run of seed 1 (another initialisation). Checkpoints
are selected on a random 10% of the training run's own weights, never on the
evaluation data. Metrics: MSE, Spearman, Kendall, size-weighted within-layer
Spearman, and the IoU of the predicted top-k mask with IRP's mask at 90, 95,
98 and 99% sparsity.

Needs the two IRP runs (about 4 minutes each here, resumable; they also
write the ``labels`` directories read below):

    .venv/bin/python -m experiments.run_irp
    .venv/bin/python -m experiments.run_irp --seed 1

Command (from the repository root):

    .venv/bin/python -m experiments.run_scorer \\
        [--config experiments/configs/scorer_fmnist_lenet300.py] \\
        [--workdir experiments/results/scorer_fmnist_lenet300] [--quick]

Smoke test (``get_config(quick=True)``: one scorer variant, 50 training steps,
one feature batch; default work directory ``.../scorer_fmnist_lenet300/quick``):
add ``--quick``.

Hardware: 2 CPU cores. Runtime and results: ``experiments/README.md`` and
``experiments/results/scorer_fmnist_lenet300/summary.md``.
"""

import ml_collections


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # scorer init, minibatches, the feature batches, the splits
    config.source = "experiments/results/irp_fmnist_lenet300/labels"
    config.held_out = "experiments/results/irp_fmnist_lenet300_seed1/labels"

    # g0 (and Hg) are averaged over these training batches (as the PaI study).
    config.num_feature_batches = 4
    config.feature_batch_size = 256
    config.validation_fraction = 0.1  # of the training run, for selection
    config.test_fraction = 0.1  # split (a): random weights of the source run
    config.sparsities = (0.9, 0.95, 0.98, 0.99)

    # name -> preset (scorer.PRESETS), feature set, normalisation, loss.
    config.scorers = ml_collections.ConfigDict(
        {
            "default/paper": ("default", "paper", "none", "mse"),
            "default/extended": ("default", "extended", "none", "mse"),
            "paper preset/paper": ("paper", "paper", "none", "mse"),
            "default/paper/network-norm": ("default", "paper", "network", "mse"),
            "default/paper/layer-norm": ("default", "paper", "layer", "mse"),
            "default/extended/layer-norm": ("default", "extended", "layer", "mse"),
            "default/paper/ranking": ("default", "paper", "none", "ranking"),
        }
    )

    # Evaluated on split (c) only: on this CPU one training takes minutes.
    config.seed_split_only = ("paper preset/paper",)

    if quick:  # a smoke test of the same study, not a result
        config.scorers = ml_collections.ConfigDict(
            {"default/paper": ("default", "paper", "none", "mse")}
        )
        config.num_feature_batches = 1
        config.num_steps = 50  # every scorer's num_steps (eval_every 50)
    return config
