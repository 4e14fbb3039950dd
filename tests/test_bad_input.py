"""A catalogue of bad inputs a new user tries, and the error each must give.

Every case is ``(id, fn, exception type, regex)``: calling ``fn()`` must raise
that exception with a message matching the regex, which names the offending
argument or value. Inputs are tiny and the errors are raised before anything
compiles, so the whole table runs in about a second. The few rules that hold
under ``jax.jit``, where a traced value cannot raise, are tested at the end.
"""

import functools
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autosparse_jax import (
    allocation,
    checkpoint,
    criteria,
    data,
    evaluation,
    features,
    irp,
    masks,
    models,
    scorer,
    train,
)
from experiments import common, runner

PAI = "experiments/configs/pai_fmnist_lenet300.py"
NAN = float("nan")


class Case(NamedTuple):
    id: str
    fn: Callable[[], Any]
    exc: type[BaseException]
    match: str


# ------------------------------------------------------------------ fixtures


def _scores(kernel=((0.1, 0.9), (0.2, 0.5))):
    return {
        "Dense_0": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.ones(2)}
    }


@functools.cache
def _net():
    """A library MLP (3 classes, 4 hidden units) on 2x2x1 images, and its parts."""
    model = models.MLP(num_classes=3, hidden_sizes=(4,))
    params, state = models.init_params(jax.random.key(0), model, (2, 2, 1))
    return model, params, models.make_apply_fn(model, state)


def _batch(n=8, labels=None, channels=1, dtype=jnp.float32):
    image = jnp.linspace(-1, 1, n * 4 * channels).reshape(n, 2, 2, channels)
    label = jnp.arange(n) % 3 if labels is None else jnp.asarray(labels)
    return {"image": image.astype(dtype), "label": label}


def _prune(**overrides):
    _, params, apply_fn = _net()
    kwargs = {
        "key": jax.random.key(0),
        "criterion": criteria.CRITERIA["magnitude"],
        "params": params,
        "batch": _batch(),
        "apply_fn": apply_fn,
        "sparsity": 0.5,
    }
    kwargs.update(overrides)
    key, criterion = kwargs.pop("key"), kwargs.pop("criterion")
    params, batch = kwargs.pop("params"), kwargs.pop("batch")
    return criteria.prune_at_init(key, criterion, params, batch, **kwargs)


def _snip(batch, params=None):
    _, default, apply_fn = _net()
    params = default if params is None else params
    return criteria.compute_scores(
        jax.random.key(0), criteria.snip, params, batch, apply_fn=apply_fn
    )


def _ctx():
    _, params, apply_fn = _net()
    return allocation.make_context(
        jax.random.key(0), params, _batch(), apply_fn=apply_fn
    )


def _state():
    model, params, _ = _net()
    opt = optax.sgd(0.1)
    return model, opt, train.init_train_state(params, masks.dense_mask(params), opt)


def _train(train_data, *, num_epochs=1, eval_data=None, batch_size=4, **kwargs):
    model, opt, state = _state()
    epoch = train.make_train_epoch(model, opt, batch_size=batch_size)
    evaluate = train.make_evaluate(model, batch_size=4)
    return train.train(
        jax.random.key(0), state, train_data, train_epoch=epoch,
        num_epochs=num_epochs, eval_data=eval_data, evaluate=evaluate,
        progress=False, **kwargs,
    )  # fmt: skip


def _evaluate(eval_data, batch_size=4):
    model, _, state = _state()
    return train.make_evaluate(model, batch_size=batch_size)(state, eval_data)


def _three_channel_params_on_one_channel_images():
    model, _, apply_fn = _net()
    params, _ = models.init_params(jax.random.key(0), model, (2, 2, 3))
    return apply_fn(params, _batch()["image"])


def _fit_scorer(x, y, **config):
    cfg = scorer.ScorerConfig(
        hidden_sizes=(4,), num_steps=2, eval_every=1, batch_size=4, **config
    )
    return scorer.train_scorer(
        jax.random.key(0), x, y, config=cfg,
        feature_config=features.FeatureConfig(), progress=False,
    )  # fmt: skip


def _nan_scorer():
    config = scorer.ScorerConfig(hidden_sizes=(4,))
    fc = features.FeatureConfig()
    s = scorer.init_scorer(
        jax.random.key(0), jnp.zeros(2), jnp.ones(2), config=config, feature_config=fc
    )
    params = jax.tree.map(lambda p: jnp.full_like(p, NAN), s.variables["params"])
    s = s.replace(variables={**s.variables, "params": params})
    return scorer.predict_flat(s, jnp.ones((5, 2)), feature_config=fc)


def _config(**train_overrides):
    config = common.load_config(PAI, quick=True)
    for name, value in train_overrides.items():
        config.train[name] = value
    return config


def _set(config, path, value):
    *parents, leaf = path.split(".")
    for p in parents:
        config = getattr(config, p)
    setattr(config, leaf, value)


def _check_grid(**overrides):
    config = common.load_config(PAI, quick=True)
    for name, value in overrides.items():
        config[name] = value
    runner.check_config(config)


def _corrupt_log(tmp_dir):
    path = tmp_dir / "runs.jsonl"
    path.write_text(json.dumps({"method": "snip"}) + "\nnot json\n{}\n")
    return runner.RunLog(str(path)).records()


_X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)
_Y = np.linspace(0, 1, 8, dtype=np.float32)
_BAD_KERNEL = ((NAN, 0.9), (0.2, 0.5))
_ALL_NAN = ((NAN, NAN), (NAN, NAN))

# -------------------------------------------------------------------- masks

MASKS = [
    Case("masks_sparsity_string", lambda: masks.mask_from_scores(_scores(), "0.9"),
         ValueError, r"sparsity must be a number.*'0\.9' of type str"),
    Case("masks_sparsity_above_one", lambda: masks.mask_from_scores(_scores(), 1.5),
         ValueError, r"sparsity must be in \[0, 1\).*got 1\.5"),
    Case("masks_sparsity_negative", lambda: masks.mask_from_scores(_scores(), -0.1),
         ValueError, r"sparsity must be in \[0, 1\).*got -0\.1"),
    Case("masks_sparsity_nan", lambda: masks.mask_from_scores(_scores(), NAN),
         ValueError, r"sparsity must be in \[0, 1\).*got nan"),
    Case("masks_sparsity_one", lambda: masks.mask_from_scores(_scores(), 1.0),
         ValueError, r"sparsity must be in \[0, 1\).*got 1\.0"),
    Case("masks_sparsity_list",
         lambda: masks.mask_from_scores(_scores(), [0.5, 0.9]),
         ValueError, r"sparsity must be one number.*got a list"),
    Case("masks_scores_all_nan",
         lambda: masks.mask_from_scores(_scores(_ALL_NAN), 0.5),
         ValueError, r"scores must be finite.*'Dense_0/kernel'.*NaN"),
    Case("masks_scores_partly_nan",
         lambda: masks.mask_from_scores(_scores(_BAD_KERNEL), 0.5),
         ValueError, r"scores must be finite.*'Dense_0/kernel'.*NaN"),
    Case("masks_scores_inf",
         lambda: masks.mask_from_scores(_scores(((np.inf, 1), (2, 3))), 0.5),
         ValueError, r"scores must be finite.*inf"),
    Case("masks_scope_typo",
         lambda: masks.mask_from_scores(_scores(), 0.5, scope="globl"),
         ValueError, r"scope must be one of .*'globl'"),
    Case("masks_mask_int_dtype",
         lambda: masks.apply_mask(_scores(), jax.tree.map(jnp.ones_like, _scores())),
         ValueError, r"mask leaf 'Dense_0/bias' has dtype float32, expected bool"),
    Case("masks_mask_other_structure",
         lambda: masks.apply_mask(_scores(), {"Dense_0": {"kernel": True}}),
         ValueError, r"mask and params must have the same tree structure"),
    Case("masks_mask_other_shape",
         lambda: masks.mask_from_scores(
             _scores(), 0.5,
             mask={"Dense_0": {"kernel": jnp.ones((3, 2), bool),
                               "bias": jnp.ones(2, bool)}}),
         ValueError, r"mask leaf 'Dense_0/kernel' has shape \(3, 2\)"),
    Case("masks_no_prunable_leaf",
         lambda: masks.mask_from_scores({"b": jnp.ones(3)}, 0.5),
         ValueError, r"scores has no prunable weights"),
    Case("masks_sparsity_of_float_mask",
         lambda: masks.sparsity_by_layer(jax.tree.map(jnp.ones_like, _scores())),
         ValueError, r"dtype float32, expected bool"),
    Case("masks_schedule_typo",
         lambda: masks.schedule_sparsity(0.9, 0, 2, "geometirc"),
         ValueError, r"schedule must be one of .*'geometirc'"),
]  # fmt: skip

# ----------------------------------------------------------------- criteria

CRITERIA = [
    Case("criteria_unknown_name", lambda: criteria.CRITERIA["snipp"],
         KeyError, r"unknown criterion 'snipp'.*did you mean 'snip'.*grasp"),
    Case("criteria_name_instead_of_function", lambda: _prune(criterion="snip"),
         ValueError, r"criterion must be a callable.*'snip'.*CRITERIA\['snip'\]"),
    Case("criteria_sparsity_above_one", lambda: _prune(sparsity=1.5),
         ValueError, r"sparsity must be in \[0, 1\).*1\.5"),
    Case("criteria_num_rounds_zero", lambda: _prune(num_rounds=0),
         ValueError, r"num_rounds must be a positive int, got 0"),
    Case("criteria_num_rounds_float", lambda: _prune(num_rounds=2.0),
         ValueError, r"num_rounds must be a positive int, got 2\.0"),
    Case("criteria_schedule_typo", lambda: _prune(schedule="exp"),
         ValueError, r"schedule must be one of .*'exp'"),
    Case("criteria_allocation_name", lambda: _prune(allocation="erk"),
         ValueError, r"allocation must be a callable.*'erk'"),
    Case("criteria_uint8_images",
         lambda: _snip(_batch(dtype=jnp.uint8)),
         ValueError, r"preprocessed float images"),
    Case("criteria_labels_not_below_num_classes",
         lambda: _snip(_batch(labels=[0, 1, 2, 3, 0, 1, 2, 0])),
         ValueError, r"labels must be in \[0, 3\).*maximum of 3"),
    Case("criteria_labels_negative",
         lambda: _snip(_batch(labels=[0, 1, -1, 2, 0, 1, 2, 0])),
         ValueError, r"labels must be in \[0, 3\).*minimum of -1"),
    Case("criteria_float_labels",
         lambda: _snip(_batch(labels=jnp.zeros(8, jnp.float32))),
         ValueError, r"batch\['label'\] must hold integer class indices.*float32"),
    Case("criteria_images_and_labels_counts",
         lambda: _snip({"image": _batch()["image"], "label": jnp.zeros(4, int)}),
         ValueError, r"8 images but 4 labels"),
    Case("criteria_int_params",
         lambda: _snip(_batch(), jax.tree.map(lambda p: p.astype(int), _net()[1])),
         ValueError, r"params must be floating.*'Dense_0/bias' has dtype int32"),
    Case("criteria_nan_params",
         lambda: _prune(params=jax.tree.map(lambda p: p * NAN, _net()[1])),
         ValueError, r"params hold NaN or inf.*'Dense_0/kernel'"),
    Case("criteria_mask_of_other_params",
         lambda: criteria.compute_scores(
             jax.random.key(0), criteria.magnitude, _net()[1], None,
             apply_fn=_net()[2], mask=masks.dense_mask(_scores())),
         ValueError, r"same tree structure"),
]  # fmt: skip

# --------------------------------------------------------------- allocation

ALLOCATION = [
    Case("allocation_erk_sparsity_above_one",
         lambda: allocation.erk()(None, 1.5, _ctx()),
         ValueError, r"sparsity must be in \[0, 1\).*1\.5"),
    Case("allocation_uniform_sparsity_negative",
         lambda: allocation.uniform()(None, -0.1, _ctx()),
         ValueError, r"sparsity must be in \[0, 1\).*-0\.1"),
    Case("allocation_global_topk_sparsity_nan",
         lambda: allocation.global_topk()(jax.tree.map(jnp.abs, _net()[1]), NAN,
                                          _ctx()),
         ValueError, r"sparsity must be in \[0, 1\).*nan"),
    Case("allocation_min_per_layer_negative",
         lambda: allocation.global_topk(min_per_layer=-1),
         ValueError, r"min_per_layer must be an int >= 0, got -1"),
    Case("allocation_erk_power_scale_string",
         lambda: allocation.erk(power_scale="high"),
         ValueError, r"power_scale must be a finite number.*'high'"),
    Case("allocation_fit_nan_densities",
         lambda: allocation.fit_allocation(
             np.ones((2, 7)), np.array([[0.5, NAN]]), np.array([10, 10])),
         ValueError, r"densities must be finite fractions in \[0, 1\].*nan"),
    Case("allocation_fit_densities_above_one",
         lambda: allocation.fit_allocation(
             np.ones((2, 7)), np.array([[0.5, 1.5]]), np.array([10, 10])),
         ValueError, r"densities must be finite fractions in \[0, 1\].*1\.5"),
    Case("allocation_fit_densities_shape",
         lambda: allocation.fit_allocation(
             np.ones((2, 7)), np.array([[0.5, 0.5, 0.5]]), np.array([10, 10])),
         ValueError, r"densities must be \[E, L\] with L = 2"),
    Case("allocation_learned_without_model",
         lambda: allocation.learned({"weights": (1.0,)}),
         ValueError, r"learned\(\) needs an AllocationModel"),
]  # fmt: skip

# --------------------------------------------------------------------- data

_IMAGES = np.zeros((2000, 8, 8), np.uint8)
DATA = [
    Case("data_unknown_dataset", lambda: data.load_dataset("fmnist", "train"),
         ValueError, r"Unknown dataset 'fmnist'.*fashion_mnist"),
    Case("data_registry_lookup", lambda: data.DATASETS["fmnist"],
         KeyError, r"unknown dataset 'fmnist'.*fashion_mnist"),
    Case("data_images_and_labels_counts",
         lambda: data.from_arrays(_IMAGES, np.zeros(1000, int)),
         ValueError, r"got 2000 images but 1000 labels"),
    Case("data_labels_not_below_num_classes",
         lambda: data.from_arrays(_IMAGES[:3], np.array([0, 9, 10]), num_classes=10),
         ValueError, r"labels must be < num_classes=10, got a maximum of 10"),
    Case("data_labels_negative",
         lambda: data.from_arrays(_IMAGES[:3], np.array([0, -1, 2])),
         ValueError, r"labels must be >= 0, got a minimum of -1"),
    Case("data_fractional_labels",
         lambda: data.from_arrays(_IMAGES[:2], np.array([0.5, 1.0])),
         ValueError, r"labels must be whole numbers"),
    Case("data_no_examples",
         lambda: data.from_arrays(_IMAGES[:0], np.zeros(0, int)),
         ValueError, r"images are empty"),
    Case("data_empty_split", lambda: data.load_dataset("mnist1d", "train[:0]"),
         ValueError, r"split 'train\[:0\]' of mnist1d holds no examples"),
    Case("data_sample_batch_zero",
         lambda: data.sample_batch(jax.random.key(0), {"label": np.zeros(4)}, 0),
         ValueError, r"batch_size must be an int in \[1, 4\].*got 0"),
    Case("data_iterate_batches_negative",
         lambda: data.iterate_batches(jax.random.key(0), {"label": np.zeros(4)}, -1),
         ValueError, r"batch_size must be an int in \[1, 4\].*got -1"),
    Case("data_sample_batches_zero_batches",
         lambda: data.sample_batches(jax.random.key(0), {"label": np.zeros(4)}, 0, 2,
                                     data.preprocess_config("mnist")),
         ValueError, r"num_batches must be an int >= 1, got 0"),
    Case("data_mnist1d_through_fashion_mnist_preprocessing",
         lambda: data.preprocess(None, jnp.zeros((4, 40, 1, 1)),
                                 data.preprocess_config("fashion_mnist"), train=False),
         ValueError, r"images of shape \(40, 1, 1\).*for \(28, 28, 1\) images"),
    Case("data_mean_per_channel_count",
         lambda: data.normalize(jnp.zeros((1, 2, 2, 1)), (0.1, 0.2, 0.3), (1.0,)),
         ValueError, r"mean has 3 entries but images have 1 channels"),
    Case("data_augment_without_key",
         lambda: data.preprocess(None, jnp.zeros((1, 32, 32, 3), jnp.uint8),
                                 data.preprocess_config("cifar10"), train=True),
         ValueError, r"key is None"),
    Case("data_scale_zero",
         lambda: data.normalize(jnp.zeros((1, 2, 2, 1)), (0.0,), (1.0,), scale=0),
         ValueError, r"scale must be a positive number, got 0"),
]  # fmt: skip

# -------------------------------------------------------------------- train

_SHORT = {"image": _batch(16)["image"], "label": jnp.zeros(8, jnp.int32)}
_EMPTY = {"image": jnp.zeros((0, 2, 2, 1)), "label": jnp.zeros(0, jnp.int32)}
TRAIN = [
    Case("train_eval_batch_size_zero",
         lambda: train.make_evaluate(_net()[0], batch_size=0),
         ValueError, r"batch_size must be a positive int, got 0"),
    Case("train_batch_size_zero",
         lambda: train.make_train_epoch(_net()[0], optax.sgd(0.1), batch_size=0),
         ValueError, r"batch_size must be a positive int, got 0"),
    Case("train_batch_size_negative",
         lambda: train.make_train_epoch(_net()[0], optax.sgd(0.1), batch_size=-8),
         ValueError, r"batch_size must be a positive int, got -8"),
    Case("train_batch_size_float",
         lambda: train.make_train_epoch(_net()[0], optax.sgd(0.1), batch_size=4.0),
         ValueError, r"batch_size must be a positive int, got 4\.0"),
    Case("train_num_epochs_float", lambda: _train(_batch(), num_epochs=2.5),
         ValueError, r"num_epochs must be an int >= 0, got 2\.5"),
    Case("train_num_epochs_negative", lambda: _train(_batch(), num_epochs=-1),
         ValueError, r"num_epochs must be an int >= 0, got -1"),
    Case("train_start_epoch_float", lambda: _train(_batch(), start_epoch=0.5),
         ValueError, r"start_epoch must be an int >= 0, got 0\.5"),
    Case("train_empty_train_data", lambda: _train(_EMPTY),
         ValueError, r"train_data holds no examples"),
    Case("train_empty_eval_data", lambda: _train(_batch(), eval_data=_EMPTY),
         ValueError, r"eval_data holds no examples"),
    Case("train_evaluate_empty_data", lambda: _evaluate(_EMPTY),
         ValueError, r"data holds no examples"),
    Case("train_images_and_labels_counts", lambda: _train(_SHORT),
         ValueError, r"train_data has 16 images but 8 labels"),
    Case("train_evaluate_images_and_labels_counts", lambda: _evaluate(_SHORT),
         ValueError, r"data has 16 images but 8 labels"),
    Case("train_float_labels",
         lambda: _train(_batch(labels=jnp.zeros(8, jnp.float32))),
         ValueError, r"train_data\['label'\] must hold integer class indices.*float"),
    Case("train_labels_not_below_num_classes",
         lambda: _train(_batch(labels=jnp.full(8, 3))),
         ValueError, r"train_data\['label'\] must be in \[0, 3\).*maximum of 3"),
    Case("train_eval_labels_negative",
         lambda: _train(_batch(), eval_data=_batch(labels=jnp.full(8, -1))),
         ValueError, r"eval_data\['label'\] must be in \[0, 3\).*minimum of -1"),
    Case("train_three_channel_params_on_one_channel_images",
         _three_channel_params_on_one_channel_images,
         ValueError, r"params were built for other inputs.*\(2, 2, 1\)"),
    Case("train_uint8_without_preprocess",
         lambda: _train(_batch(dtype=jnp.uint8)),
         ValueError, r"uint8 images but no preprocessing"),
    Case("train_eval_data_without_evaluate",
         lambda: train.train(jax.random.key(0), _state()[2], _batch(),
                             train_epoch=None, num_epochs=1, eval_data=_batch()),
         ValueError, r"eval_data was given without evaluate"),
    Case("train_state_mask_of_other_params",
         lambda: train.init_train_state(_net()[1], masks.dense_mask(_scores()),
                                        optax.sgd(0.1)),
         ValueError, r"same tree structure"),
    Case("train_int_params",
         lambda: train.init_train_state(
             jax.tree.map(lambda p: p.astype(int), _net()[1]),
             masks.dense_mask(_net()[1]), optax.sgd(0.1)),
         ValueError, r"params must be floating.*int32"),
]  # fmt: skip

# ------------------------------------------------------------------- models

MODELS = [
    Case("models_unknown_name", lambda: models.get_model("lenet"),
         ValueError, r"Unknown model 'lenet'.*lenet300_100"),
    Case("models_registry_lookup", lambda: models.MODELS["lenet"],
         KeyError, r"unknown model 'lenet'.*lenet5"),
    Case("models_conv_net_on_too_small_inputs",
         lambda: models.init_params(jax.random.key(0), models.get_model("lenet5"),
                                    (40, 1, 1)),
         ValueError, r"LeNet5 cannot run on inputs of shape \(40, 1, 1\).*at least"),
    Case("models_input_shape_without_channels",
         lambda: models.init_params(jax.random.key(0), _net()[0], (28, 28)),
         ValueError, r"input_shape must be three positive ints"),
    Case("models_num_classes_zero",
         lambda: models.get_model("lenet300_100", num_classes=0),
         ValueError, r"num_classes must be a positive int, got 0"),
    Case("models_unknown_field",
         lambda: models.get_model("lenet300_100", hidden=3),
         TypeError, r"unexpected keyword argument 'hidden'"),
]  # fmt: skip

# ------------------------------------------------------------------- scorer

SCORER = [
    Case("scorer_nan_targets", lambda: _fit_scorer(_X, np.where(_Y > 0.5, NAN, _Y)),
         ValueError, r"targets y hold NaN or inf"),
    Case("scorer_nan_features", lambda: _fit_scorer(_X * NAN, _Y),
         ValueError, r"features x hold NaN or inf"),
    Case("scorer_features_and_targets_counts", lambda: _fit_scorer(_X, _Y[:5]),
         ValueError, r"need x \[N, F\] and y \[N\]"),
    Case("scorer_diverged_training",
         lambda: _fit_scorer(_X * 1e30, _Y * 1e30, learning_rate=1e30),
         ValueError, r"scorer training diverged"),
    Case("scorer_prediction_not_finite", _nan_scorer,
         ValueError, r"scorer predicted NaN or inf"),
    Case("scorer_config_negative_steps",
         lambda: scorer.ScorerConfig(num_steps=-1),
         ValueError, r"num_steps must be a positive int, got -1"),
    Case("scorer_config_float_steps",
         lambda: scorer.ScorerConfig(num_steps=2.5, eval_every=1),
         ValueError, r"num_steps must be a positive int, got 2\.5"),
    Case("scorer_config_empty_hidden_layer",
         lambda: scorer.ScorerConfig(hidden_sizes=(0, 8)),
         ValueError, r"hidden_sizes must be positive ints.*got \(0, 8\)"),
    Case("scorer_config_nan_learning_rate",
         lambda: scorer.ScorerConfig(learning_rate=NAN),
         ValueError, r"learning_rate must be a positive finite number, got nan"),
    Case("scorer_config_loss_typo", lambda: scorer.ScorerConfig(loss="rank"),
         ValueError, r"loss must be one of .*'rank'"),
    Case("scorer_preset_lookup", lambda: scorer.PRESETS["papr"],
         KeyError, r"unknown scorer preset 'papr'.*paper"),
    Case("scorer_as_criterion_of_config",
         lambda: scorer.as_criterion(scorer.ScorerConfig()),
         ValueError, r"as_criterion needs a Scorer"),
]  # fmt: skip

# --------------------------------------------------------- features, eval

FEATURES_EVALUATION = [
    Case("features_unknown_set",
         lambda: features.compute_features(_net()[1], _batch(), apply_fn=_net()[2],
                                           feature_set="papr"),
         ValueError, r"feature_set must be one of .*'papr'"),
    Case("features_registry_lookup", lambda: features.FEATURE_SETS["papr"],
         KeyError, r"unknown feature set 'papr'.*paper"),
    Case("features_lookahead_without_ahead_params",
         lambda: features.compute_features(_net()[1], _batch(), apply_fn=_net()[2],
                                           feature_set="lookahead"),
         ValueError, r"pass ahead_params"),
    Case("features_unstack_wrong_count",
         lambda: features.unstack_scores(jnp.zeros(3), _scores()),
         ValueError, r"flat scores have shape \(3,\), expected \(4,\)"),
    Case("evaluation_lengths_differ",
         lambda: evaluation.spearman([1.0, 2.0], [1.0, 2.0, 3.0]),
         ValueError, r"same length, got 2 and 3"),
    Case("evaluation_nan_scores",
         lambda: evaluation.spearman([NAN, 2.0, 3.0], [1.0, 2.0, 3.0]),
         ValueError, r"scores hold NaN or inf"),
    Case("evaluation_top_k_too_many",
         lambda: evaluation.top_k_mask([1.0, 2.0], 3),
         ValueError, r"num_keep must be in \[0, 2\], got 3"),
    Case("evaluation_held_out_fraction_above_one",
         lambda: evaluation.split_weights(0, 10, 1.5),
         ValueError, r"held_out_fraction must be in \(0, 1\), got 1\.5"),
]  # fmt: skip

# -------------------------------------------------------------- experiments

EXPERIMENTS = [
    Case("config_typo_in_train_section",
         lambda: _set(common.load_config(PAI), "train.learnig_rate", 0.1),
         AttributeError, r"learnig_rate.*does not exist.*learning_rate"),
    Case("config_typo_at_top_level",
         lambda: _set(common.load_config(PAI), "sparsites", (0.5,)),
         AttributeError, r"sparsites.*does not exist.*sparsities"),
    Case("config_float_epochs",
         lambda: _set(common.load_config(PAI), "train.num_epochs", 2.5),
         TypeError, r"num_epochs.*2\.5"),
    Case("config_sparsity_above_one", lambda: _check_grid(sparsities=(0.5, 1.5)),
         ValueError, r"config\.sparsities must lie in \(0, 1\).*1\.5"),
    Case("config_unknown_method", lambda: _check_grid(methods=("dense", "snipp")),
         ValueError, r"Unknown method 'snipp'"),
    Case("config_eval_batch_size_zero",
         lambda: common.make_recipe(_config(eval_batch_size=0), 2000),
         ValueError, r"batch_size must be a positive int, got 0"),
    Case("config_batch_size_negative",
         lambda: common.make_recipe(_config(batch_size=-1), 2000),
         ValueError, r"batch_size must be a positive int, got -1"),
    Case("config_unknown_schedule",
         lambda: common.make_recipe(_config(schedule="cosin"), 2000),
         ValueError, r"Unknown schedule 'cosin'"),
    Case("config_missing_file",
         lambda: common.load_config("experiments/configs/no_such_config.py"),
         FileNotFoundError, r"no_such_config\.py"),
]  # fmt: skip

# ------------------------------------------------------ IRP and checkpoints


def _irp_snip_on(num_examples):
    model, params, _ = _net()
    return irp.irp(
        jax.random.key(0), params, _batch(num_examples), model=model,
        optimizer=optax.sgd(0.1),
        config=irp.IRPConfig(num_rounds=1, criterion="snip", batch_size=8,
                             num_score_batches=2),
    )  # fmt: skip


IRP = [
    Case("irp_epochs_per_round_float", lambda: irp.IRPConfig(epochs_per_round=1.5),
         ValueError, r"epochs_per_round must be an int, got 1\.5"),
    Case("irp_num_rounds_float", lambda: irp.IRPConfig(num_rounds=2.5),
         ValueError, r"num_rounds must be an int, got 2\.5"),
    Case("irp_batch_size_zero", lambda: irp.IRPConfig(batch_size=0),
         ValueError, r"batch_size must be >= 1"),
    Case("irp_eval_batch_size_zero", lambda: irp.IRPConfig(eval_batch_size=0),
         ValueError, r"eval_batch_size must be >= 1"),
    Case("irp_final_sparsity_string", lambda: irp.IRPConfig(final_sparsity="0.9"),
         ValueError, r"final_sparsity must be a float in \[0, 1\), got '0\.9'"),
    Case("irp_final_sparsity_one", lambda: irp.IRPConfig(final_sparsity=1.0),
         ValueError, r"final_sparsity must be in \[0, 1\)"),
    Case("irp_criterion_typo", lambda: irp.IRPConfig(criterion="magnitud"),
         ValueError, r"criterion must be one of"),
    Case("irp_snip_score_batches_beyond_the_data", lambda: _irp_snip_on(8),
         ValueError, r"2 x 8 = 16 distinct training examples, but the training "
                     r"data has 8"),
    Case("checkpoint_restore_missing", lambda: checkpoint.restore("no/such/ckpt"),
         FileNotFoundError, r"no/such/ckpt"),
    Case("checkpoint_reserved_metadata_key",
         lambda: checkpoint.save("unused/ckpt", {"a": np.zeros(1)},
                                 metadata={"checksum": "x"}),
         ValueError, r"'checksum' is reserved"),
]  # fmt: skip

CATALOGUE = (
    MASKS + CRITERIA + ALLOCATION + DATA + TRAIN + MODELS + SCORER
    + FEATURES_EVALUATION + EXPERIMENTS + IRP
)  # fmt: skip


def test_catalogue_is_large_and_ids_are_unique():
    ids = [c.id for c in CATALOGUE]
    assert len(ids) >= 50 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_raises_a_clear_error(case):
    with pytest.raises(case.exc, match=case.match):
        case.fn()


def test_corrupt_run_log_line_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"line 2, is not valid JSON"):
        _corrupt_log(tmp_path)


# --------------------------------------------- rules where nothing can raise


def test_jit_with_scores_closed_over_checks_them_and_works():
    scores = _scores()
    mask = jax.jit(lambda s: masks.mask_from_scores(scores, s))(0.5)
    assert mask["Dense_0"]["kernel"].tolist() == [[False, True], [False, True]]
    bad = _scores(_BAD_KERNEL)
    with pytest.raises(ValueError, match=r"scores must be finite"):
        jax.jit(lambda s: masks.mask_from_scores(bad, s))(0.5)


def test_traced_nan_score_is_never_kept_before_a_finite_one():
    kernel = jnp.array([[NAN, -5.0], [NAN, 0.5]])
    fn = jax.jit(lambda k, s: masks.mask_from_scores({"k": k}, s)["k"])
    assert fn(kernel, 0.5).tolist() == [[False, True], [False, True]]
    assert fn(kernel, 0.25).tolist() == [[True, True], [False, True]]  # NaN by index


@pytest.mark.parametrize(
    ("sparsity", "kept"), [(1.5, 0), (NAN, 0), (-0.1, 4), (1.0, 0), (0.0, 4)]
)
def test_traced_sparsity_is_clipped_into_0_1_and_nan_keeps_nothing(sparsity, kept):
    fn = jax.jit(lambda s: masks.mask_from_scores(_scores(), s)["Dense_0"]["kernel"])
    assert int(fn(sparsity).sum()) == kept


def test_config_overrides_of_existing_fields_still_work():
    config = common.load_config(PAI, quick=True)
    config.train.learning_rate = 0.5
    config.seeds = (3,)
    assert config.is_locked and config.train.learning_rate == 0.5
