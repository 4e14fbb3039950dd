"""autosparse_jax: pruning at initialisation learned from iterative rewind pruning.

AutoSparse (Liu, Cheng et al., arXiv 2408.14757) in JAX/Flax. Modules are the
primary API (``from autosparse_jax import masks, train``); the names below are
re-exported for convenience. The ``train`` host loop is ``train.train``.
"""

from autosparse_jax import (
    checkpoint,
    conv,
    criteria,
    data,
    irp,
    losses,
    masks,
    models,
    train,
    types,
)
from autosparse_jax.criteria import CRITERIA, compute_scores, prune_at_init
from autosparse_jax.data import (
    DATASETS,
    DatasetInfo,
    PreprocessConfig,
    load_dataset,
    preprocess,
    preprocess_config,
)
from autosparse_jax.irp import IRPConfig, IRPResult, irp_seeds, survival_scores
from autosparse_jax.losses import accuracy, classification_loss, cross_entropy
from autosparse_jax.masks import (
    apply_mask,
    dense_mask,
    erk,
    is_prunable,
    is_prunable_except_output,
    mask_from_scores,
    mask_sparsity,
    sparsity,
    sparsity_by_layer,
    uniform,
)
from autosparse_jax.models import (
    MODELS,
    count_params,
    get_model,
    init_params,
    make_apply_fn,
)
from autosparse_jax.train import (
    TrainState,
    data_parallel_mesh,
    init_train_state,
    make_eval_step,
    make_evaluate,
    make_train_epoch,
    make_train_step,
    to_device,
)

__version__ = "0.1.0"

__all__ = [
    "CRITERIA",
    "DATASETS",
    "MODELS",
    "DatasetInfo",
    "PreprocessConfig",
    "TrainState",
    "IRPConfig",
    "IRPResult",
    "accuracy",
    "apply_mask",
    "checkpoint",
    "classification_loss",
    "compute_scores",
    "conv",
    "count_params",
    "criteria",
    "cross_entropy",
    "data",
    "data_parallel_mesh",
    "dense_mask",
    "erk",
    "get_model",
    "init_params",
    "init_train_state",
    "irp",
    "irp_seeds",
    "is_prunable",
    "is_prunable_except_output",
    "load_dataset",
    "losses",
    "make_apply_fn",
    "make_eval_step",
    "make_evaluate",
    "make_train_epoch",
    "make_train_step",
    "mask_from_scores",
    "mask_sparsity",
    "masks",
    "models",
    "preprocess",
    "prune_at_init",
    "preprocess_config",
    "sparsity",
    "sparsity_by_layer",
    "survival_scores",
    "to_device",
    "train",
    "types",
    "uniform",
]
