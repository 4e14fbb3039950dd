"""Shared plumbing for experiment scripts: config -> the one training recipe."""

import argparse
import dataclasses
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import optax

from autosparse_jax import (
    allocation,
    autosparse,
    criteria,
    data,
    evaluation,
    features,
    irp,
    masks,
    models,
    train,
)
from autosparse_jax import scorer as scorer_lib
from autosparse_jax._checks import is_int


def load_config(path: str, *, quick: bool = False) -> ml_collections.ConfigDict:
    """Calls ``get_config(quick=quick)`` of a config file path; returns it locked.

    A config's small variant lives in its own ``get_config``: ``quick=True``
    returns the smoke-test version of the same study (fewer seeds, epochs and
    examples; a check that the code runs, not a result). The config is
    locked: existing fields can be overridden (``config.train.learning_rate =
    0.1``, as the command-line overrides do), but setting a field that does not
    exist (a typo such as ``learnig_rate``) raises ``AttributeError`` naming
    it and the closest field, instead of adding a key nothing reads.
    """
    spec = importlib.util.spec_from_file_location("experiment_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"Cannot import a config from {path!r}; pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(quick=quick)
    config.lock()
    return config


def parse_args(
    description: str,
    default_config: str,
    argv: list[str] | None = None,
    add_arguments: Any = None,
) -> tuple[argparse.Namespace, ml_collections.ConfigDict, str]:
    """``--config``, ``--workdir``, ``--quick`` (+ ``add_arguments(parser)``).

    Returns the parsed arguments, the loaded config and the work directory
    (``--workdir`` or ``default_workdir``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--workdir", default=None, help="default: results/<config>")
    parser.add_argument(
        "--quick", action="store_true", help="the config's smoke-test variant"
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    workdir = args.workdir or default_workdir(args.config, args.quick)
    return args, config, workdir


def default_workdir(config_path: str, quick: bool) -> str:
    """``experiments/results/<config file name>[/quick]``."""
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("experiments/results", name, *(["quick"] if quick else []))


def device_name() -> str:
    """The accelerator kind and host core count, recorded with every run."""
    return f"{jax.devices()[0].device_kind} ({os.cpu_count()} host cores)"


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """SGD with the config's momentum, weight decay and learning-rate schedule."""
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = train.cosine_schedule(
            lr, num_epochs=config.num_epochs, steps_per_epoch=steps_per_epoch
        )
    elif config.schedule == "multistep":
        lr = train.multistep_schedule(
            lr,
            milestones=config.milestones,
            factor=config.decay_factor,
            steps_per_epoch=steps_per_epoch,
        )
    elif config.schedule != "constant":
        raise ValueError(
            f"Unknown schedule {config.schedule!r}; use cosine, multistep or constant."
        )
    return train.sgd(
        lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


class Recipe(NamedTuple):
    """The compiled training recipe of one (model, dataset, config).

    ``model`` is the plain model (for criteria and ``make_apply_fn``); the epoch
    and evaluation programs train ``trained_model``, its fastest twin on CPU
    (``cpu_twin``: same params and gradients; the plain model
    elsewhere), which IRP's round program trains too.
    """

    model: Any
    trained_model: Any
    input_shape: tuple[int, ...]
    optimizer: optax.GradientTransformation
    train_epoch: train.EpochFn
    evaluate: train.EvalFn
    num_epochs: int


_RECIPES: dict[str, Recipe] = {}


def make_recipe(config: ml_collections.ConfigDict, num_train: int) -> Recipe:
    """Builds (and so compiles once) the recipe every method is trained with.

    Recipes are cached per process by what defines them (model, dataset,
    training config, training-set size, backend), so studies run one after
    another in one process (a notebook, the demo, the tests) share compiled
    programs instead of compiling the same ones again.
    """
    key = json.dumps(
        [config.model, config.dataset, config.train.to_dict(), num_train,
         jax.default_backend()],
        sort_keys=True, default=str,
    )  # fmt: skip
    if key not in _RECIPES:
        _RECIPES[key] = _build_recipe(config, num_train)
    return _RECIPES[key]


def cpu_twin(model: Any) -> Any:
    """``model``'s fastest training twin on this backend.

    On XLA:CPU: its ``batch_minor`` twin where the model has one (LeNet-5,
    Conv-2/4/6, the ResNets), run on two batch slices at once
    (``models.BatchParts``; train-mode BatchNorm runs the batch whole), else
    its ``fast_conv_grad`` twin (canonical-layout conv gradients: the VGGs;
    MLPs accept and ignore it). Elsewhere ``model`` itself: XLA's native
    convolution. Same params, outputs and gradients either way (float32
    rounding).
    """
    if jax.default_backend() != "cpu":
        return model
    if hasattr(model, "batch_minor"):
        return models.BatchParts(model.clone(batch_minor=True))
    return model.clone(fast_conv_grad=True)


def _check_train_config(tc: ml_collections.ConfigDict) -> None:
    """The training section's sizes, before anything is built from them."""
    for name in ("batch_size", "eval_batch_size", "num_epochs"):
        value = tc[name]
        if not is_int(value) or value < 1:
            raise ValueError(
                f"config.train.{name} must be a positive int, got {value!r}."
            )


def _build_recipe(config: ml_collections.ConfigDict, num_train: int) -> Recipe:
    _check_train_config(config.train)
    info = data.DATASETS[config.dataset]
    model = models.get_model(config.model, num_classes=info.num_classes)
    trained = cpu_twin(model)
    tc = config.train
    optimizer = make_optimizer(tc, num_train // tc.batch_size)
    preprocess = data.preprocess_config(config.dataset)
    return Recipe(
        model=model,
        trained_model=trained,
        input_shape=info.input_shape,
        optimizer=optimizer,
        train_epoch=train.make_train_epoch(
            trained, optimizer, batch_size=tc.batch_size, preprocess=preprocess
        ),
        evaluate=train.make_evaluate(
            trained, batch_size=tc.eval_batch_size, preprocess=preprocess
        ),
        num_epochs=tc.num_epochs,
    )


def train_masked(
    recipe: Recipe,
    key: jax.Array,
    params: Any,
    model_state: Any,
    mask: Any,
    train_data: Any,
    test_data: Any,
    **kwargs: Any,
) -> tuple[train.TrainState, list[dict[str, float]]]:
    """Trains ``params`` under ``mask`` with the recipe; returns state, history."""
    state = train.init_train_state(params, mask, recipe.optimizer, model_state)
    return train.train(
        key,
        state,
        train_data,
        train_epoch=recipe.train_epoch,
        num_epochs=recipe.num_epochs,
        eval_data=test_data,
        evaluate=recipe.evaluate,
        **kwargs,
    )


prune_at_init = jax.jit(
    criteria.prune_at_init,
    static_argnames=(
        "criterion",
        "apply_fn",
        "allocation",
        "num_rounds",
        "schedule",
        "prunable",
    ),
)
"""``criteria.prune_at_init`` jitted once per process (sparsity traced)."""

SCOPES = {
    "global": allocation.global_topk(min_per_layer=0),
    "layerwise": allocation.uniform(),
}
"""A config's ``scope`` -> its allocation: the published baselines' plain
global threshold (which may empty a layer), or one sparsity per layer."""


def criterion_key(key: jax.Array, num_rounds: int) -> jax.Array:
    """The key a study hands ``prune_at_init`` for a criterion of ``num_rounds``.

    The committed studies gave a one-round criterion ``fold_in(key, 0)`` (round
    0's key); ``prune_at_init`` now gives it ``key`` itself, so this keeps
    their random masks. Several rounds get ``fold_in(key, r)`` either way.
    """
    return jax.random.fold_in(key, 0) if num_rounds == 1 else key


def score_batches(
    key: jax.Array, host_train: Mapping[str, Any], dataset: str, num: int, size: int
) -> dict[str, jax.Array]:
    """``data.sample_batches`` of a named dataset (its own preprocessing)."""
    return data.sample_batches(
        key, host_train, num, size, data.preprocess_config(dataset)
    )


def source_batches(
    config: ml_collections.ConfigDict, labels: irp.IRPLabels
) -> dict[str, jax.Array]:
    """The scoring batches of a labelled run's own training data (scorer seed)."""
    meta = labels.metadata
    host_train = data.load_dataset(meta["dataset"], meta.get("train_split", "train"))
    return score_batches(
        jax.random.key(config.scorer_seed),
        host_train,
        meta["dataset"],
        config.num_score_batches,
        config.score_batch_size,
    )


def fit_autosparse(
    config: ml_collections.ConfigDict, source: str | None = None
) -> autosparse.AutoSparse:
    """``autosparse.fit`` on a labelled run with a study config's settings.

    The scorer seed keys the scoring batches and both scorers, and seeds the
    random held-out split of the weights, as every committed study did.
    """
    labels = irp.load_labels(source or config.source)
    num = len(features.layer_ids(labels.init_params))
    return autosparse.fit(
        jax.random.key(config.scorer_seed),
        labels,
        source_batches(config, labels),
        validation=evaluation.split_weights(
            config.scorer_seed, num, config.validation_fraction
        ),
        scorer_config=dataclasses.replace(
            scorer_lib.PRESETS["default"], num_steps=config.scorer_num_steps
        ),
        progress=False,
    )


def fit_learners(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """The study's fitted AutoSparse, the source run's IRP rounds, a report.

    The scorers are evaluated on ``config.held_out`` (another IRP run's
    labels) when the config names one. Everything is fitted on the source
    run's own network and data, whatever the target of the study.
    """
    autos = fit_autosparse(config)
    source = irp.load_labels(config.source)
    report = {}
    if config.get("held_out"):
        held_out = irp.load_labels(config.held_out)
        ev = autosparse.evaluate(autos, held_out, source_batches(config, source))
        report = {"paper": ev["global_scorer"], "within": ev["scorer"]}
    report["allocation_model"] = dataclasses.asdict(autos.allocation_model)
    oracle = (source.masks[1:], [h["sparsity"] for h in source.metadata["history"]])
    return {"autos": autos, "oracle": oracle}, report


def initial_features(
    params: Any, batches: Mapping[str, jax.Array], apply_fn: Any, feature_config: Any
) -> jax.Array:
    """``[N, F]`` AutoS features of a network at initialisation (stacked)."""
    feats = features.compute_features(
        params,
        batches,
        apply_fn=apply_fn,
        **dataclasses.asdict(feature_config),
    )
    return features.stack_features(feats)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json``; refuses a directory made with another config.

    A study's results and checkpoints in ``workdir`` are only resumed by a run
    of the same config, so recipes never mix; nothing there is changed.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    current = json.loads(json.dumps(config.to_dict()))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != current:
                raise ValueError(
                    f"{path} holds a different config than this run; its results "
                    "would mix recipes. Pass another --workdir or delete that one."
                )
    with open(path, "w") as f:
        json.dump(current, f, indent=2)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path``.

    A line that does not parse (the partial write of a run killed while
    appending, which ``append_text`` ends before the next record) is skipped
    with a warning naming its line number.
    """
    if not os.path.exists(path):
        return []
    records, skipped = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                skipped.append(number)
    if skipped:
        warnings.warn(
            f"{path}: skipped unreadable line(s) {skipped} (partial writes of a "
            "killed run); every other line was read.",
            stacklevel=2,
        )
    return records


def append_text(path: str, text: str) -> None:
    """Appends ``text``, first ending a partial line left by a killed run."""
    with open(path, "a+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        f.write(text)


def append_jsonl(path: str, record: Mapping[str, Any]) -> None:
    """Appends one JSON line (``append_text``)."""
    append_text(path, json.dumps(record) + "\n")


def timed(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


class Target(NamedTuple):
    """One seed's network and what every method prunes it from.

    Seed ``s`` splits ``jax.random.key(s)`` into init, score and data keys
    (the score key into the scoring-batch and prune keys), as every study does,
    so rows shared by two studies repeat each other's numbers.
    """

    seed: int
    params: Any
    model_state: Any
    apply_fn: Any
    batches: Any  # num_score_batches stacked preprocessed training batches
    prune_key: jax.Array
    data_key: jax.Array
    phi: np.ndarray  # allocation.layer_features of the network


def make_target(seed: int, recipe: Recipe, host_train, config) -> Target:
    """The ``Target`` of ``seed`` for a study config (``num_score_batches``...)."""
    init_key, score_key, data_key = jax.random.split(jax.random.key(seed), 3)
    batch_key, prune_key = jax.random.split(score_key)
    params, model_state = models.init_params(init_key, recipe.model, recipe.input_shape)
    apply_fn = models.make_apply_fn(recipe.model, model_state)
    batches = score_batches(
        batch_key, host_train, config.dataset, config.num_score_batches,
        config.score_batch_size,
    )  # fmt: skip
    phi = allocation.layer_features(
        params, apply_fn=apply_fn, input_shape=recipe.input_shape
    )
    return Target(
        seed, params, model_state, apply_fn, batches, prune_key, data_key, phi
    )


def summarize_training(
    mask: Any, history: list[dict[str, float]], seconds: float
) -> dict[str, Any]:
    """One result record of a masked training run (what every study stores)."""
    test_acc = [row["test_accuracy"] for row in history]
    return {
        "measured_sparsity": float(masks.sparsity(mask)),
        "sparsity_by_layer": masks.sparsity_by_layer(mask),
        "final_test_accuracy": test_acc[-1],
        "best_test_accuracy_selected_on_test": max(test_acc),
        "best_epoch": test_acc.index(max(test_acc)),
        "train_s": seconds,
        "history": history,
    }
