"""Iterative rewind pruning (IRP): the jitted train-prune-rewind program.

Round ``r`` (``0 .. E-1``) scores the current weights (round 0: the rewind
point, i.e. initialisation; later rounds: the weights trained in round
``r - 1``), prunes to the round's sparsity (masks only shrink), adds the mask
to the survival counts, rewinds the survivors and trains the subnetwork for
``epochs_per_round`` epochs with the mask fixed. A weight's survival count is
the number of rounds after whose pruning it was still kept (``0 .. E``); the
normalised count is AutoSparse's training label (Liu, Cheng et al. 2024,
arXiv 2408.14757). One round is one jitted program, compiled once per run; the
Python loop over rounds only checkpoints, logs and calls back.
"""

import dataclasses
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from autosparse_jax import checkpoint, criteria, masks, train
from autosparse_jax import data as data_lib
from autosparse_jax.types import Mask, ModelState, Params, PRNGKey, Scope, Scores

_CRITERIA = ("magnitude", "snip")
_RESETS = ("full", "kernels")
_ROUND_DIR = re.compile(r"^round_(\d+)$")
_REWIND_STREAM = 0x7FFFFFFF  # fold_in data of the late-rewinding key stream
_RUN_PARTS = (  # a run fingerprint's entries but the optimizer, and a mismatch
    ("key", "the key differs"),
    ("params", "the initial params (or model state) differ"),
    ("train_data", "the training data differs"),
    ("preprocess", "the preprocessing differs"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IRPConfig:
    """What one IRP run does (hashable; the optimizer is passed separately).

    Attributes:
      num_rounds: ``E``, the number of prune-rewind-train rounds.
      final_sparsity: sparsity after the last round, in ``[0, 1)``.
      schedule: ``"geometric"`` keeps ``d ** (1 / E)`` of the remaining weights
        each round (``d = 1 - final_sparsity``); ``"linear"`` removes the same
        number of weights each round. Both end exactly at ``final_sparsity``.
      epochs_per_round: training epochs after each prune.
      criterion: ``"magnitude"`` (``|w|``) or ``"snip"`` (``|w * dL/dw|``).
      rewind_step: 0 rewinds to initialisation; ``k > 0`` to the weights after
        ``k`` dense training steps (late rewinding).
      reset: ``"full"``: every parameter and the model state go back to the
        rewind point; ``"kernels"``: only the masked kernels rewind, biases,
        BatchNorm parameters and statistics carry over (the authors' code). The
        optimizer and its schedule restart every round in both modes.
      scope: ``"global"`` or ``"layerwise"`` pruning.
      batch_size: training batch size.
      eval_batch_size: evaluation batch size.
      num_score_batches: batches of ``batch_size`` training images SNIP
        averages its gradient over.
    """

    num_rounds: int = 20
    final_sparsity: float = 0.99
    schedule: Literal["geometric", "linear"] = "geometric"
    epochs_per_round: int = 1
    criterion: Literal["magnitude", "snip"] = "magnitude"
    rewind_step: int = 0
    reset: Literal["full", "kernels"] = "full"
    scope: Scope = "global"
    batch_size: int = 128
    eval_batch_size: int = 1_000
    num_score_batches: int = 1

    def __post_init__(self):
        counts = ("num_rounds", "epochs_per_round", "rewind_step", "batch_size")
        counts += ("eval_batch_size", "num_score_batches")
        not_int = [
            f"{name} must be an int, got {getattr(self, name)!r}"
            for name in counts
            if isinstance(getattr(self, name), bool)
            or not isinstance(getattr(self, name), int)
        ]
        if not_int:
            raise ValueError(f"Invalid IRPConfig: {'; '.join(not_int)}.")
        if not isinstance(self.final_sparsity, (int, float)) or isinstance(
            self.final_sparsity, bool
        ):
            raise ValueError(
                "Invalid IRPConfig: final_sparsity must be a float in [0, 1), got "
                f"{self.final_sparsity!r}."
            )
        checks = [
            (self.num_rounds >= 1, "num_rounds must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (0.0 <= self.final_sparsity < 1.0, "final_sparsity must be in [0, 1)"),
            (self.schedule in masks.SCHEDULES, f"schedule: one of {masks.SCHEDULES}"),
            (self.criterion in _CRITERIA, f"criterion must be one of {_CRITERIA}"),
            (self.reset in _RESETS, f"reset must be one of {_RESETS}"),
            (self.scope in ("global", "layerwise"), "scope: global or layerwise"),
            (self.epochs_per_round >= 1, "epochs_per_round must be >= 1"),
            (self.rewind_step >= 0, "rewind_step must be >= 0"),
            (self.num_score_batches >= 1, "num_score_batches must be >= 1"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError(f"Invalid IRPConfig ({self}): " + "; ".join(bad) + ".")


class IRPResult(NamedTuple):
    """Everything an IRP run produced.

    Attributes:
      masks: ``E + 1`` masks; ``masks[0]`` is dense, ``masks[r + 1]`` the mask
        after round ``r``'s pruning.
      counts: int32 survival counts parallel to params (``0 .. E``; ``E`` for
        non-prunable leaves).
      rewind_params: the params survivors were rewound to.
      rewind_model_state: the model state at the rewind point.
      final_state: the ``TrainState`` after the last round's training.
      history: one dict per round: ``round``, ``sparsity``, ``train_loss``,
        ``train_accuracy``, ``test_loss``/``test_accuracy`` (with eval data),
        ``seconds``, ``checkpoint_seconds``.
    """

    masks: tuple[Mask, ...]
    counts: Params
    rewind_params: Params
    rewind_model_state: ModelState
    final_state: train.TrainState
    history: tuple[dict[str, float], ...]


class DivergedError(FloatingPointError):
    """An IRP round ended with a non-finite (NaN or infinite) train loss.

    Attributes:
      round_index: the round that diverged.
      history: the rows of every round run (including those of a resumed
        run's earlier calls), the diverged one last with ``"diverged": True``
        and ``checkpoint_seconds`` nan (it is not checkpointed).
    """

    def __init__(self, message: str, *, round_index: int, history: Sequence[dict]):
        super().__init__(message)
        self.round_index = round_index
        self.history = tuple(history)


class _Carry(NamedTuple):
    params: Params
    model_state: ModelState
    mask: Mask
    counts: Params


def round_sparsity(config: IRPConfig, round_index: Any) -> Any:
    """Sparsity after round ``round_index`` (0-based), traced or Python.

    ``masks.schedule_sparsity`` of ``final_sparsity`` (geometric:
    ``1 - d ** ((r + 1) / E)``; linear: ``s * (r + 1) / E``, ``d = 1 - s``).
    """
    return masks.schedule_sparsity(
        config.final_sparsity, round_index, config.num_rounds, config.schedule
    )


def survival_scores(masks_seq: Sequence[Mask]) -> Scores:
    """Fraction of rounds each weight survived, from ``IRPResult.masks``.

    Args:
      masks_seq: ``masks[0]`` dense, then one mask per round (``R`` rounds).

    Returns:
      float32 scores in ``[0, 1]`` parallel to the params (non-prunable: 1).
    """
    if len(masks_seq) < 2:
        raise ValueError("survival_scores needs the dense mask and >= 1 round mask.")
    rounds = masks_seq[1:]
    total = jax.tree.map(lambda *ms: sum(m.astype(jnp.int32) for m in ms), *rounds)
    return jax.tree.map(lambda c: c.astype(jnp.float32) / len(rounds), total)


# ------------------------------------------------------------ round program


def _scores(config, model, key, carry, train_data, preprocess):
    """The round's criterion on the current weights (pruned weights lowest)."""
    if config.criterion == "magnitude":
        return jax.tree.map(jnp.abs, carry.params)
    num = config.num_score_batches * config.batch_size
    available = train_data["label"].shape[0]
    if num > available:
        raise ValueError(
            f"SNIP scores num_score_batches x batch_size = "
            f"{config.num_score_batches} x {config.batch_size} = {num} distinct "
            f"training examples, but the training data has {available}; lower "
            "IRPConfig.num_score_batches or use more training data."
        )
    idx = jax.random.choice(key, available, (num,), replace=False)
    # The same inputs as training: float images pass with preprocess=None and
    # uint8 images without one get training's clear error.
    images = train.prepare_images(
        None, train_data["image"][idx], preprocess, train=False
    )
    shape = (config.num_score_batches, config.batch_size)
    batch = {
        "image": images.reshape(*shape, *images.shape[1:]),
        "label": train_data["label"][idx].reshape(shape),
    }

    def apply_fn(p, x):  # train= only for models whose __call__ takes it.
        return train._forward(model, p, carry.model_state, x, train=False)[0]

    return criteria.compute_scores(
        key, criteria.snip, carry.params, batch, apply_fn=apply_fn, mask=carry.mask
    )


def _rewind(config, carry, mask, rewind_params, rewind_state):
    """Survivors back to the rewind point, per ``config.reset``."""
    if config.reset == "full":
        return masks.apply_mask(rewind_params, mask), rewind_state
    flags = jax.tree_util.tree_map_with_path(masks.is_prunable, rewind_params)
    params = jax.tree.map(
        lambda f, r, p: r if f else p, flags, rewind_params, carry.params
    )
    return masks.apply_mask(params, mask), carry.model_state


def _round_fn(config, model, optimizer, preprocess):
    """The pure round program (``irp`` jits it; ``irp_seeds`` vmaps it)."""
    train_epoch = train.train_epoch_fn(
        model, optimizer, batch_size=config.batch_size, preprocess=preprocess
    )
    evaluate = train.evaluate_fn(
        model, batch_size=config.eval_batch_size, preprocess=preprocess
    )

    def run_round(carry, r, key, rewind_params, rewind_state, train_data, eval_data):
        score_key, data_key = jax.random.split(jax.random.fold_in(key, r))
        scores = _scores(config, model, score_key, carry, train_data, preprocess)
        mask = masks.mask_from_scores(
            scores, round_sparsity(config, r), scope=config.scope, mask=carry.mask
        )
        counts = jax.tree.map(lambda c, m: c + m.astype(jnp.int32), carry.counts, mask)
        params, model_state = _rewind(config, carry, mask, rewind_params, rewind_state)
        state = train.init_train_state(params, mask, optimizer, model_state)
        epochs = jnp.arange(config.epochs_per_round)
        state, per_epoch = jax.lax.scan(
            lambda s, e: train_epoch(s, train_data, data_key, e), state, epochs
        )
        metrics = {f"train_{k}": v[-1] for k, v in per_epoch.items()}
        metrics["sparsity"] = masks.sparsity(mask)
        if eval_data is not None:
            metrics.update(
                {f"test_{k}": v for k, v in evaluate(state, eval_data).items()}
            )
        new = _Carry(state.params, state.model_state, mask, counts)
        return new, state, metrics

    return run_round


def _late_rewind_fn(config, model, optimizer, preprocess):
    """Pure ``(key, params, model_state, data) -> rewind point`` after
    ``config.rewind_step`` dense steps from initialisation (late rewinding)."""

    def late_rewind(key, params, model_state, train_data):
        num = train_data["label"].shape[0]
        dense = masks.dense_mask(params)
        state = train.init_train_state(params, dense, optimizer, model_state)

        def body(state, t):
            idx = jax.random.choice(
                jax.random.fold_in(key, t), num, (config.batch_size,), replace=False
            )
            batch = jax.tree.map(lambda x: x[idx], train_data)
            aug_key = jax.random.fold_in(jax.random.fold_in(key, _REWIND_STREAM), t)
            return train._masked_step(
                model, optimizer, preprocess, state, batch, aug_key
            )

        state, _ = jax.lax.scan(body, state, jnp.arange(config.rewind_step))
        return state.params, state.model_state

    return late_rewind


# ------------------------------------------------------------- checkpoints


def _fingerprint(params: Params) -> str:
    """The params' structure, shapes and dtypes, to recognise the same model."""
    items, _ = jax.tree_util.tree_flatten_with_path(params)
    return json.dumps(
        [[jax.tree_util.keystr(p), list(x.shape), str(x.dtype)] for p, x in items]
    )


def _without_keys(tree: Any) -> Any:
    """Typed PRNG keys as their key data (hashable bytes)."""

    def data(x):
        is_key = isinstance(x, jax.Array) and jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key
        )
        return jax.random.key_data(x) if is_key else x

    return jax.tree.map(data, tree)


def _optimizer_fingerprint(optimizer: optax.GradientTransformation, params) -> str:
    """Hash of what ``optimizer`` does: two updates of fixed probe gradients
    on fixed probe params shaped like ``params``, and the state after them.

    An optax transformation holds no config to compare, so it is recognised
    by its behaviour; two optimizers that agree on these updates count as one.
    Run eagerly (each operation compiles once per process); exact on one kind
    of device, XLA may round it differently on another.
    """
    leaves, treedef = jax.tree.flatten(params)

    def wave(phase):  # Fixed host values, one phase per tree.
        return jax.tree.unflatten(
            treedef,
            [
                np.cos(np.arange(x.size) * 0.7 + phase + i)
                .reshape(x.shape)
                .astype(x.dtype)
                for i, x in enumerate(leaves)
            ],
        )

    probe_params, updates = wave(0.0), []
    state = optimizer.init(probe_params)
    for t in (1, 2):
        update, state = optimizer.update(wave(0.5 * t), state, probe_params)
        probe_params = optax.apply_updates(probe_params, update)
        updates.append(update)
    return checkpoint.checksum(_without_keys({"updates": updates, "state": state}))


def _run_fingerprint(key, params, model_state, train_data, optimizer, preprocess):
    """Hashes of what makes the run besides its config and model (host)."""
    return {
        "key": checkpoint.checksum(_without_keys(key)),
        "params": checkpoint.checksum({"params": params, "state": model_state}),
        "train_data": checkpoint.checksum(dict(train_data)),
        "preprocess": None
        if preprocess is None
        else json.loads(json.dumps(dataclasses.asdict(preprocess))),
        "optimizer": _optimizer_fingerprint(optimizer, params),
    }


def _round_dirs(directory: str) -> list[int]:
    """Indices of the complete round checkpoints in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    rounds = [
        int(m.group(1)) for d in os.listdir(directory) if (m := _ROUND_DIR.match(d))
    ]
    return sorted(rounds, reverse=True)


def _check_same_run(
    directory: str,
    meta: Mapping[str, Any],
    config: IRPConfig,
    fingerprint: str,
    run: Mapping[str, Any],
    new_optimizer: bool,
):
    """Refuses a directory holding another run, saying every difference.

    Checkpoints saved before run fingerprints existed check config and shapes.
    """
    given = dataclasses.asdict(config)
    diffs = []
    if meta["config"] != given:
        diffs.append(
            f"the config differs (saved {meta['config']}, given {given}); resume "
            "with the same config"
        )
    if meta["fingerprint"] != fingerprint:
        diffs.append("it holds another model (different parameter shapes)")
    else:
        saved = meta.get("run", {})
        diffs += [msg for k, msg in _RUN_PARTS if k in saved and saved[k] != run[k]]
        optimizer_differs = saved.get("optimizer", run["optimizer"]) != run["optimizer"]
        if optimizer_differs and not new_optimizer:
            diffs.append(
                "the optimizer differs (it makes other updates); to continue the "
                "run with it on purpose, e.g. with a smaller learning rate after "
                "a diverged round, pass resume_with_new_optimizer=True"
            )
    if diffs:
        raise ValueError(
            f"The checkpoint directory {directory} holds another IRP run: "
            + "; ".join(diffs)
            + ". Nothing was changed there; call irp with that run's arguments "
            "or choose another checkpoint_dir."
        )


def _move_aside(path: str) -> str:
    """Renames a damaged checkpoint ``path`` to a free ``path.corrupt[N]``."""
    dest, n = path + ".corrupt", 1
    while os.path.exists(dest):
        n += 1
        dest = f"{path}.corrupt{n}"
    os.rename(path, dest)
    return dest


def _resume(directory: str, target_fn: Callable[[int], Any], check: Callable):
    """The newest intact round: ``(round, metadata, saved tree)`` or ``None``.

    ``check(metadata)`` refuses another run before anything is changed.
    Damaged newer rounds (unreadable, truncated, checksum mismatch) are then
    moved aside to ``round_XX.corrupt`` with a warning, so they are rerun.
    """
    damaged, found = [], None
    for r in _round_dirs(directory):
        path = os.path.join(directory, f"round_{r:02d}")
        try:
            meta = checkpoint.load_metadata(path)
            check(meta)
            found = r, meta, checkpoint.restore(path, target_fn(r))
            break
        except (checkpoint.CorruptCheckpointError, FileNotFoundError) as err:
            damaged.append((path, getattr(err, "problem", str(err))))
        except KeyError as err:  # Valid JSON without irp's entries.
            damaged.append((path, f"its metadata has no {err} entry"))
    resumes = f"from round {found[0]}" if found else "from scratch (no round is intact)"
    for path, problem in damaged:
        warnings.warn(
            f"IRP checkpoint {path} is damaged ({problem}); moved it to "
            f"{_move_aside(path)} and resuming {resumes}.",
            stacklevel=3,
        )
    return found


def _saved_tree(carry, rewind_params, rewind_state, masks_so_far, state):
    return {
        "carry": carry._asdict(),
        "rewind_params": rewind_params,
        "rewind_model_state": rewind_state,
        "masks": list(masks_so_far),
        "opt_state": state.opt_state,
        "step": state.step,
    }


def _diverged(directory, r, row, history) -> DivergedError:
    if directory is None:
        saved = "nothing was checkpointed (no checkpoint_dir)"
    else:
        done = f"rounds 0-{r - 1} are" if r else "no round is"
        saved = (
            f"{done} checkpointed in {directory} (round {r} is not); call irp "
            "again there, e.g. with a smaller learning rate and "
            f"resume_with_new_optimizer=True, to resume at round {r}"
        )
    return DivergedError(
        f"IRP round {r} diverged: its train loss is {row['train_loss']} at "
        f"sparsity {row['sparsity']:.4f}; {saved}.",
        round_index=r,
        history=history,
    )


# ------------------------------------------------------------------ the run


def irp(
    key: PRNGKey,
    params: Params,
    train_data: Mapping[str, jax.Array],
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    config: IRPConfig,
    eval_data: Mapping[str, jax.Array] | None = None,
    model_state: ModelState | None = None,
    preprocess: data_lib.PreprocessConfig | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    resume_with_new_optimizer: bool = False,
) -> IRPResult:
    """Runs IRP for ``config.num_rounds`` rounds (host loop over rounds).

    Every round is the same jitted program (compiled once); with
    ``checkpoint_dir`` every round ends with a checkpoint ``round_XX`` of
    everything needed to continue, and calling ``irp`` again with the same
    directory and arguments resumes after the last intact round.

    Resuming: each checkpoint records the run's config, parameter shapes and
    fingerprints of its key, initial params and model state, training data,
    preprocessing and optimizer (by its updates on a fixed probe); a call that
    differs in any of them is refused, naming each difference, except for the
    optimizer with ``resume_with_new_optimizer=True`` (the rounds it trains
    record the new one). A damaged newest round (unreadable, truncated, or
    not matching its checksum) is moved aside to ``round_XX.corrupt`` with a
    warning and rerun from the newest intact round before it. A directory
    whose rounds are all done returns the saved result with a warning that
    nothing was trained.

    Args:
      key: the run's key; round ``r`` uses ``fold_in(key, r)``.
      params: initial params (the rewind point when ``rewind_step == 0``).
      train_data: ``{"image": [N, H, W, C], "label": [N]}``, ideally on device.
      model: the Flax module (on CPU, a ``batch_minor=True`` or
        ``fast_conv_grad=True`` twin trains faster with the same params; the
        criteria here need reverse mode only).
      optimizer: optax transformation; restarted every round.
      config: an ``IRPConfig``.
      eval_data: optional test data, evaluated after every round's training.
      model_state: initial model state (BatchNorm statistics), default ``{}``.
      preprocess: image preprocessing (``data.preprocess_config(name)``).
      checkpoint_dir: directory for per-round checkpoints (resumable).
      callback: ``callback(round, metrics)`` after each round.
      progress: tqdm bar over rounds; ``None``: only on a terminal.
      resume_with_new_optimizer: resume ``checkpoint_dir`` even though its
        rounds were trained with another optimizer.

    Returns:
      An ``IRPResult``.

    Raises:
      ValueError: ``checkpoint_dir`` holds another run (config, model, key,
        initial params, training data, preprocessing or optimizer differ);
        nothing there is changed.
      DivergedError: a round's train loss (its last epoch's mean) is NaN or
        infinite. The run stops after that round's callback; the round is not
        checkpointed, so the directory holds the rounds before it and a call
        with another optimizer (e.g. a smaller learning rate) and
        ``resume_with_new_optimizer=True`` resumes by rerunning it.

    Example:
      >>> result = irp(key, params, train_data, model=model, optimizer=opt,
      ...              config=IRPConfig(num_rounds=5, final_sparsity=0.9),
      ...              preprocess=data.preprocess_config("fashion_mnist"))
      >>> labels = survival_scores(result.masks)
    """
    from tqdm.auto import tqdm

    model_state = {} if model_state is None else model_state
    directory = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
    fingerprint = _fingerprint(params)
    dense = masks.dense_mask(params)
    counts = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.int32), params)
    carry = _Carry(params, model_state, dense, counts)
    state = train.init_train_state(params, dense, optimizer, model_state)
    rewind_params, rewind_state = params, model_state
    masks_so_far, history, start, found = [dense], [], 0, None
    if directory is not None:
        run = _run_fingerprint(
            key, params, model_state, train_data, optimizer, preprocess
        )
        found = _resume(
            directory,
            lambda r: _saved_tree(carry, params, model_state, [dense] * (r + 2), state),
            lambda meta: _check_same_run(
                directory, meta, config, fingerprint, run, resume_with_new_optimizer
            ),
        )
    if found is not None:
        last, meta, saved = found
        carry = _Carry(**saved["carry"])
        rewind_params, rewind_state = (
            saved["rewind_params"],
            saved["rewind_model_state"],
        )
        masks_so_far = list(saved["masks"])
        state = train.TrainState(
            saved["step"],
            carry.params,
            carry.model_state,
            saved["opt_state"],
            carry.mask,
        )
        history, start = list(meta["history"]), last + 1
        # The last round's save was not yet timed when its metadata was written.
        history[-1].setdefault("checkpoint_seconds", float("nan"))
        if start >= config.num_rounds:
            warnings.warn(
                f"All {config.num_rounds} rounds of the IRP run in {directory} "
                "are already done; returning its saved result, nothing was "
                "trained.",
                stacklevel=2,
            )
    elif config.rewind_step:  # On resume it comes from the save.
        late_rewind = _late_rewind_fn(config, model, optimizer, preprocess)
        rewind_params, rewind_state = jax.jit(late_rewind)(
            jax.random.fold_in(key, _REWIND_STREAM), params, model_state, train_data
        )
        carry = _Carry(rewind_params, rewind_state, dense, counts)
        state = train.init_train_state(rewind_params, dense, optimizer, rewind_state)

    run_round = jax.jit(_round_fn(config, model, optimizer, preprocess))
    show = train._show_progress(progress)
    for r in tqdm(range(start, config.num_rounds), disable=not show, unit="round"):
        tic = time.perf_counter()
        carry, state, metrics = run_round(
            carry, r, key, rewind_params, rewind_state, train_data, eval_data
        )
        row = {"round": r, **jax.tree.map(float, jax.device_get(metrics))}
        row["seconds"] = time.perf_counter() - tic
        if not math.isfinite(row["train_loss"]):
            row.update(checkpoint_seconds=float("nan"), diverged=True)
            history.append(row)
            if callback is not None:
                callback(r, row)
            raise _diverged(directory, r, row, history)
        masks_so_far.append(carry.mask)
        tic = time.perf_counter()
        if directory is not None:
            checkpoint.save(
                os.path.join(directory, f"round_{r:02d}"),
                _saved_tree(carry, rewind_params, rewind_state, masks_so_far, state),
                metadata={
                    "config": dataclasses.asdict(config),
                    "fingerprint": fingerprint,
                    "run": run,
                    "round": r,
                    "history": history + [row],
                },
            )
        row["checkpoint_seconds"] = time.perf_counter() - tic
        history.append(row)
        if callback is not None:
            callback(r, row)
    return IRPResult(
        masks=tuple(masks_so_far),
        counts=carry.counts,
        rewind_params=rewind_params,
        rewind_model_state=rewind_state,
        final_state=state,
        history=tuple(history),
    )


def irp_seeds(
    keys: jax.Array,
    params: Params,
    train_data: Mapping[str, jax.Array],
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    config: IRPConfig,
    eval_data: Mapping[str, jax.Array] | None = None,
    model_state: ModelState | None = None,
    preprocess: data_lib.PreprocessConfig | None = None,
    callback: Callable[[int, dict[str, list[float]]], None] | None = None,
    progress: bool | None = None,
) -> IRPResult:
    """``K`` independent IRP runs as one program: the round program ``jax.vmap``-ed.

    Equal to ``K`` calls of ``irp`` with ``keys[k]`` and the ``k``-th params
    (to float tolerance), in one compilation; no checkpoints.

    Args:
      keys: ``[K]`` typed keys, one per run.
      params: params with a leading ``K`` axis, e.g.
        ``jax.vmap(lambda k: models.init_params(k, model, shape)[0])(keys)``.
      train_data, model, optimizer, config, eval_data, preprocess, progress:
        as for ``irp`` (data shared by every run).
      model_state: model state with a leading ``K`` axis, or ``None``.
      callback: ``callback(round, metrics)``, each metric a list over runs.

    Returns:
      An ``IRPResult`` whose arrays have a leading ``K`` axis; each history row
      holds a list of ``K`` values per metric.

    Example:
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> params = jax.vmap(lambda k: models.init_params(k, model, shape)[0])(keys)
      >>> result = irp_seeds(keys, params, data, model=model, optimizer=opt,
      ...                    config=config, preprocess=cfg)
    """
    from tqdm.auto import tqdm

    model_state = {} if model_state is None else model_state
    rewind_params, rewind_state = params, model_state
    if config.rewind_step:
        late = jax.vmap(
            _late_rewind_fn(config, model, optimizer, preprocess),
            in_axes=(0, 0, 0, None),
        )
        stream_keys = jax.vmap(lambda k: jax.random.fold_in(k, _REWIND_STREAM))(keys)
        rewind_params, rewind_state = jax.jit(late)(
            stream_keys, params, model_state, train_data
        )
    dense = masks.dense_mask(params)
    counts = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.int32), params)
    carry = _Carry(rewind_params, rewind_state, dense, counts)
    run_round = jax.jit(
        jax.vmap(
            _round_fn(config, model, optimizer, preprocess),
            in_axes=(0, None, 0, 0, 0, None, None),
        )
    )
    all_masks, history, state = [dense], [], None
    show = train._show_progress(progress)
    for r in tqdm(range(config.num_rounds), disable=not show, unit="round"):
        tic = time.perf_counter()
        carry, state, metrics = run_round(
            carry, r, keys, rewind_params, rewind_state, train_data, eval_data
        )
        values = jax.device_get(metrics)
        row = {"round": r, **{k: v.tolist() for k, v in values.items()}}
        row["seconds"] = time.perf_counter() - tic
        all_masks.append(carry.mask)
        history.append(row)
        if callback is not None:
            callback(r, row)
    return IRPResult(
        masks=tuple(all_masks),
        counts=carry.counts,
        rewind_params=rewind_params,
        rewind_model_state=rewind_state,
        final_state=state,
        history=tuple(history),
    )


# ------------------------------------------------------ export for the scorer


class IRPLabels(NamedTuple):
    """A labelled IRP run, as AutoS trains on it (see ``save_labels``).

    Attributes:
      init_params: the params at initialisation (features are computed there).
      init_model_state: the model state at initialisation.
      masks: ``E + 1`` masks (``masks[0]`` dense).
      counts: int32 survival counts (``0 .. E``).
      metadata: the IRP config and whatever the caller saved (model, dataset,
        seed, preprocessing), enough to recompute features at initialisation.
    """

    init_params: Params
    init_model_state: ModelState
    masks: tuple[Mask, ...]
    counts: Params
    metadata: dict[str, Any]


def save_labels(
    directory: str | os.PathLike,
    result: IRPResult,
    *,
    config: IRPConfig,
    init_params: Params,
    init_model_state: ModelState | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Saves an IRP run as a labelled dataset for the AutoS scorer (host).

    Args:
      directory: a new directory (never overwritten).
      result: the ``IRPResult``.
      config: the run's ``IRPConfig``.
      init_params: the params the run started from.
      init_model_state: their model state (``None``: ``{}``).
      metadata: JSON-serialisable facts needed to rebuild the network and its
        data, e.g. ``{"model": "lenet300_100", "dataset": "fashion_mnist",
        "seed": 0}``.

    Example:
      >>> save_labels("runs/irp_seed0/labels", result, config=config,
      ...             init_params=params, metadata={"model": "lenet300_100"})
    """
    tree = {
        "init_params": init_params,
        "init_model_state": {} if init_model_state is None else init_model_state,
        "masks": list(result.masks),
        "counts": result.counts,
    }
    meta = {
        **dict(metadata or {}),
        "kind": "irp_labels",
        "irp_config": dataclasses.asdict(config),
        "num_rounds": len(result.masks) - 1,
        "fingerprint": _fingerprint(init_params),
        "history": list(result.history),
    }
    checkpoint.save(directory, tree, metadata=meta)


def load_labels(directory: str | os.PathLike) -> IRPLabels:
    """Loads a run written by ``save_labels`` (host).

    Raises:
      ValueError: ``directory`` holds another kind of checkpoint.
    """
    meta = checkpoint.load_metadata(directory)
    if meta.get("kind") != "irp_labels":
        raise ValueError(
            f"{directory} is not a labelled IRP run (kind={meta.get('kind')!r}); "
            "write one with irp.save_labels."
        )
    tree = checkpoint.restore(directory)
    return IRPLabels(
        init_params=tree["init_params"],
        init_model_state=tree["init_model_state"],
        masks=tuple(tree["masks"]),
        counts=tree["counts"],
        metadata=meta,
    )
