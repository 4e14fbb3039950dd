"""Masked training: one jitted step, one jitted epoch, evaluation and the host loop.

Pruned weights stay exactly zero: the gradient, the optimizer update and the
parameters are all masked, so SGD, momentum, Nesterov, Adam and weight decay
cannot revive them. An epoch is one ``lax.scan`` over device-resident data; the
mask, params, key and epoch index are arguments, so a whole experiment compiles
the epoch program once.
"""

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autosparse_jax import data as data_lib
from autosparse_jax import losses, masks, models
from autosparse_jax._checks import is_int
from autosparse_jax.types import Batch, Mask, ModelState, Params, PRNGKey

DATA_AXIS = "data"

Metrics = dict[str, jax.Array]
EpochFn = Callable[[Any, Mapping[str, jax.Array], PRNGKey, Any], tuple[Any, Metrics]]
EvalFn = Callable[[Any, Mapping[str, jax.Array]], Metrics]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step.

    Attributes:
      step: int32 scalar, number of optimizer steps taken.
      params: the (masked) Flax params.
      model_state: other Flax collections, e.g. ``{"batch_stats": ...}``.
      opt_state: the optax state.
      mask: a ``Mask`` parallel to ``params``; fixed during training.
    """

    step: jax.Array
    params: Params
    model_state: ModelState
    opt_state: optax.OptState
    mask: Mask


def init_train_state(
    params: Params,
    mask: Mask,
    optimizer: optax.GradientTransformation,
    model_state: ModelState | None = None,
) -> TrainState:
    """Masks ``params`` and initialises the optimizer.

    The state owns fresh copies of every buffer: the jitted step donates its
    input state, and the caller's ``params`` and ``mask`` must survive that.

    Args:
      params: the initial params.
      mask: a ``Mask`` parallel to ``params``.
      optimizer: any optax transformation.
      model_state: e.g. ``{"batch_stats": ...}``; ``None`` means ``{}``.

    Returns:
      A ``TrainState`` at step 0.

    Raises:
      ValueError: ``mask`` does not match ``params``, or a params leaf is not
        floating-point.

    Example:
      >>> state = init_train_state(params, masks.dense_mask(params), optax.sgd(0.1))
    """
    masks._check_params(params, finite=False)
    model_state = {} if model_state is None else model_state
    params = jax.tree.map(jnp.array, masks.apply_mask(params, mask))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=jax.tree.map(jnp.array, model_state),
        opt_state=optimizer.init(params),
        mask=jax.tree.map(jnp.array, mask),
    )


# ----------------------------------------------------------------- optimizers


def multistep_schedule(
    learning_rate: float,
    *,
    milestones: Sequence[int],
    factor: float,
    steps_per_epoch: int,
) -> optax.Schedule:
    """Learning rate multiplied by ``factor`` at each epoch in ``milestones``.

    The paper's recipe is ``multistep_schedule(0.01, milestones=(60, 120),
    factor=0.2, steps_per_epoch=...)``.
    """
    boundaries = {int(m) * steps_per_epoch: factor for m in milestones}
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


def cosine_schedule(
    learning_rate: float, *, num_epochs: int, steps_per_epoch: int
) -> optax.Schedule:
    """Cosine decay from ``learning_rate`` to 0 over ``num_epochs`` epochs."""
    return optax.cosine_decay_schedule(learning_rate, num_epochs * steps_per_epoch)


def sgd(
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """SGD with momentum and coupled (L2, PyTorch-style) weight decay."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
    )


# ------------------------------------------------------------------ the step


def _forward(model, params, model_state, images, *, train):
    """Logits and the updated model state (BatchNorm statistics in train mode).

    ``train`` reaches the model only if its ``__call__`` takes it
    (``models.apply_model``), so any Linen classifier trains.
    """
    variables = {"params": params, **model_state}
    if train and model_state:
        logits, new_state = models.apply_model(
            model, variables, images, train=True, mutable=list(model_state)
        )
        return logits, dict(new_state)
    return models.apply_model(model, variables, images, train=train), model_state


def prepare_images(
    key: PRNGKey | None,
    images: jax.Array,
    preprocess: data_lib.PreprocessConfig | None,
    *,
    train: bool,
) -> jax.Array:
    """The model's input batch, exactly as the train and eval programs build it.

    With a ``preprocess`` config this is ``data.preprocess`` (augmentation only
    when ``train`` and the config augments); without one, float images are used
    as they are (cast to float32) and uint8 images are refused, since unscaled
    pixels are almost always a mistake.

    Args:
      key: PRNG key for augmentation; may be ``None`` when none is applied.
      images: ``[B, H, W, C]`` uint8 pixels or float inputs.
      preprocess: from ``data.preprocess_config`` or ``data.fit_preprocess``,
        or ``None`` for float images used as they are.
      train: whether this is a training batch.

    Returns:
      ``[B, H, W, C]`` float32.

    Raises:
      ValueError: uint8 ``images`` with ``preprocess=None``, or augmentation
        requested with ``key=None``.

    Example:
      >>> cfg = data.preprocess_config("mnist")
      >>> x = train.prepare_images(None, batch["image"], cfg, train=False)
    """
    if preprocess is None:
        if images.dtype == jnp.uint8:
            raise ValueError(
                "The batch holds uint8 images but no preprocessing was given; pass "
                "preprocess=data.preprocess_config(dataset_name) to normalise them."
            )
        return images.astype(jnp.float32)
    return data_lib.preprocess(key, images, preprocess, train=train)


def _masked_step(model, optimizer, preprocess, state, batch, key):
    """One optimizer step; pruned weights get no gradient, update or value."""
    images = prepare_images(key, batch["image"], preprocess, train=True)

    def loss_fn(params):
        logits, new_state = _forward(
            model, params, state.model_state, images, train=True
        )
        return losses.cross_entropy(logits, batch["label"]), (logits, new_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, new_state)), grads = grad_fn(state.params)
    grads = masks.apply_mask(grads, state.mask)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    # Masking the sum masks the update and the parameter in one pass.
    params = masks.apply_mask(optax.apply_updates(state.params, updates), state.mask)
    new = TrainState(state.step + 1, params, new_state, opt_state, state.mask)
    metrics = {"loss": loss, "accuracy": losses.accuracy(logits, batch["label"])}
    return new, metrics


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    preprocess: data_lib.PreprocessConfig | None = None,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """Builds the jitted masked train step; build it once per experiment.

    The returned ``train_step(state, batch, key=None)`` takes ``batch`` =
    ``{"image": [B, H, W, C], "label": [B]}`` and, when ``preprocess`` augments,
    a key (per-step keys: ``jax.random.fold_in(key, state.step)``). The input
    state is donated.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=...)``
        (``train`` only if its ``__call__`` takes it, see ``models.apply_model``).
      optimizer: any optax transformation.
      preprocess: normalisation and augmentation of uint8 images, or ``None``
        for float images used as they are.

    Returns:
      ``train_step(state, batch, key=None) -> (state, {"loss", "accuracy"})``.

    Example:
      >>> step = make_train_step(model, optax.sgd(0.1), preprocess=cfg)
      >>> state, metrics = step(state, batch, key)
    """

    def train_step(state, batch, key=None):
        return _masked_step(model, optimizer, preprocess, state, batch, key)

    return jax.jit(train_step, donate_argnums=0)


# ----------------------------------------------------------------- the epoch


def _constrain_batch(batch, mesh):
    """Shards the batch axis over ``mesh`` (data parallelism); no-op without one."""
    if mesh is None:
        return batch
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.lax.with_sharding_constraint(batch, sharding)


def _positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int, else a ``ValueError`` naming ``name``."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _check_data(data: Mapping[str, Any], name: str) -> int:
    """What shapes and dtypes tell (free under jit); returns the example count."""
    missing = {"image", "label"} - set(data)
    if missing:
        raise ValueError(
            f"{name} needs 'image' and 'label' arrays, missing {sorted(missing)} "
            f"(keys {sorted(data)}); build it with data.load_dataset or "
            "data.from_arrays."
        )
    images, labels = data["image"], data["label"]
    if np.ndim(labels) != 1 or np.shape(images)[:1] != np.shape(labels):
        raise ValueError(
            f"{name} has {np.shape(images)[0]} images but "
            f"{np.shape(labels)[0] if np.ndim(labels) else 'scalar'} labels "
            f"(label shape {np.shape(labels)}); pass one [N] label per image."
        )
    if not np.shape(labels)[0]:
        raise ValueError(f"{name} holds no examples; pass at least one.")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"{name}['label'] must hold integer class indices, got dtype "
            f"{jnp.result_type(labels)}; pass labels.astype(np.int32) (or build the "
            "data with data.from_arrays, which checks them)."
        )
    return int(np.shape(labels)[0])


def _num_classes(params: Params) -> int | None:
    """Logits of a model whose classifier is the ``head`` Dense (this library's)."""
    head = params.get(masks.OUTPUT_LAYER_NAME) if isinstance(params, Mapping) else None
    kernel = head.get("kernel") if isinstance(head, Mapping) else None
    return None if kernel is None else int(np.shape(kernel)[-1])


def _check_label_range(data: Mapping[str, Any], name: str, num_classes: int | None):
    """Host check, once per ``train`` call: labels in ``[0, num_classes)``."""
    labels = data["label"]
    low, high = jax.device_get((jnp.min(labels), jnp.max(labels)))
    limit = np.iinfo(np.int32).max if num_classes is None else num_classes
    if low < 0 or high >= limit:
        bounds = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(
            f"{name}['label'] must be {bounds} (the model's classes), got a "
            f"minimum of {low} and a maximum of {high}; map classes to "
            "0 .. num_classes - 1 (data.from_arrays(images, labels, "
            "num_classes=...) checks them)."
        )


def _check_batch_size(num_examples: int, batch_size: int, mesh: Mesh | None):
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            f"batch_size={batch_size} must be in [1, {num_examples}] (the number "
            "of examples); lower it or pass more data."
        )
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the {mesh.size} devices "
            "of the mesh; choose a multiple of the device count."
        )


def train_epoch_fn(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    preprocess: data_lib.PreprocessConfig | None = None,
    mesh: Mesh | None = None,
) -> EpochFn:
    """The pure (un-jitted) epoch: one ``lax.scan`` of masked steps over the data.

    ``make_train_epoch`` jits it; ``irp`` scans it inside its round program.

    Epoch ``e`` visits the examples in the order of a permutation drawn from
    ``fold_in(key, e)`` (the last ``N mod batch_size`` examples of that order
    are dropped); step ``t`` augments with ``fold_in(key, t)`` on a separate
    stream, so a run resumed at any epoch reproduces the same randomness.

    Args:
      model: the Flax module.
      optimizer: any optax transformation.
      batch_size: examples per step (the global batch under a ``mesh``).
      preprocess: see ``make_train_step``.
      mesh: a one-axis mesh named ``"data"`` (``data_parallel_mesh()``) to
        shard every batch over its devices; ``None`` for one device.

    Returns:
      ``train_epoch(state, data, key, epoch) -> (state, {"loss", "accuracy"})``
      with ``data = {"image": [N, H, W, C], "label": [N]}`` on device and epoch
      means as metrics.
    """

    _positive_int("batch_size", batch_size)

    def train_epoch(state, data, key, epoch):
        num_examples = _check_data(data, "data")
        _check_batch_size(num_examples, batch_size, mesh)
        num_batches = num_examples // batch_size
        perm_key, aug_key = jax.random.split(key)
        order = jax.random.permutation(
            jax.random.fold_in(perm_key, epoch), num_examples
        )
        order = order[: num_batches * batch_size].reshape(num_batches, batch_size)

        def body(state, idx):
            batch = _constrain_batch(jax.tree.map(lambda x: x[idx], data), mesh)
            step_key = jax.random.fold_in(aug_key, state.step)
            return _masked_step(model, optimizer, preprocess, state, batch, step_key)

        state, metrics = jax.lax.scan(body, state, order)
        return state, jax.tree.map(jnp.mean, metrics)

    return train_epoch


def make_train_epoch(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    preprocess: data_lib.PreprocessConfig | None = None,
    mesh: Mesh | None = None,
) -> EpochFn:
    """Builds the jitted epoch (``train_epoch_fn``); build it once per experiment.

    Arguments and randomness as in ``train_epoch_fn``; the input state is donated.

    Returns:
      ``train_epoch(state, data, key, epoch) -> (state, {"loss", "accuracy"})``.

    Raises:
      ValueError: ``batch_size`` is not a positive int; when ``train_epoch``
        is traced (from shapes and dtypes only): ``data`` without examples,
        with unequal numbers of images and labels or non-integer labels, or
        fewer examples than ``batch_size``.

    Example:
      >>> train_epoch = make_train_epoch(model, opt, batch_size=128, preprocess=cfg)
      >>> state, metrics = train_epoch(state, device_data, key, 0)
    """
    fn = train_epoch_fn(
        model, optimizer, batch_size=batch_size, preprocess=preprocess, mesh=mesh
    )
    return jax.jit(fn, donate_argnums=0)


def _eval_sums(model, preprocess, state, batch, weights):
    """Summed loss and number correct over a batch, each example weighted."""
    images = prepare_images(None, batch["image"], preprocess, train=False)
    logits, _ = _forward(model, state.params, state.model_state, images, train=False)
    nll = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["label"]
    )
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return (nll * weights).sum(), (correct * weights).sum()


def make_eval_step(
    model: nn.Module, *, preprocess: data_lib.PreprocessConfig | None = None
) -> Callable[[TrainState, Batch], Metrics]:
    """Builds the jitted evaluation of one batch (inference mode).

    Returns:
      ``eval_step(state, batch) -> {"loss", "accuracy"}``, batch means.
    """

    def eval_step(state, batch):
        _check_data(batch, "batch")
        weights = jnp.ones(batch["label"].shape, jnp.float32)
        loss, correct = _eval_sums(model, preprocess, state, batch, weights)
        num = batch["label"].shape[0]
        return {"loss": loss / num, "accuracy": correct / num}

    return jax.jit(eval_step)


def evaluate_fn(
    model: nn.Module,
    *,
    batch_size: int,
    preprocess: data_lib.PreprocessConfig | None = None,
    mesh: Mesh | None = None,
) -> EvalFn:
    """The pure (un-jitted) evaluation over a whole dataset (inference mode).

    ``make_evaluate`` jits it; ``irp`` calls it inside its round program.

    One ``lax.scan`` over batches; every example counts once: the last partial
    batch is padded inside the program and the padding gets zero weight.

    Returns:
      ``evaluate(state, data) -> {"loss", "accuracy"}``, means over all ``N``.
    """

    _positive_int("batch_size", batch_size)

    def evaluate(state, data):
        num_examples = _check_data(data, "data")
        eval_batch = min(batch_size, num_examples)
        if mesh is not None:
            eval_batch = -(-eval_batch // mesh.size) * mesh.size
        num_batches = -(-num_examples // eval_batch)
        flat = jnp.arange(num_batches * eval_batch)
        weights = (flat < num_examples).astype(jnp.float32)
        idx = jnp.minimum(flat, num_examples - 1)

        def body(totals, inputs):
            idx, w = inputs
            batch = _constrain_batch(jax.tree.map(lambda x: x[idx], data), mesh)
            sums = _eval_sums(model, preprocess, state, batch, w)
            return jax.tree.map(jnp.add, totals, sums), None

        zero = jnp.zeros((), jnp.float32)
        inputs = (idx.reshape(num_batches, -1), weights.reshape(num_batches, -1))
        (loss, correct), _ = jax.lax.scan(body, (zero, zero), inputs)
        return {"loss": loss / num_examples, "accuracy": correct / num_examples}

    return evaluate


def make_evaluate(
    model: nn.Module,
    *,
    batch_size: int,
    preprocess: data_lib.PreprocessConfig | None = None,
    mesh: Mesh | None = None,
) -> EvalFn:
    """Builds the jitted evaluation over a whole dataset (``evaluate_fn``).

    Returns:
      ``evaluate(state, data) -> {"loss", "accuracy"}``, means over all ``N``.

    Raises:
      ValueError: ``batch_size`` is not a positive int; when ``evaluate`` is
        traced: ``data`` without examples, with unequal numbers of images and
        labels or non-integer labels.

    Example:
      >>> evaluate = make_evaluate(model, batch_size=1000, preprocess=cfg)
      >>> evaluate(state, device_test_data)["accuracy"]
    """
    fn = evaluate_fn(model, batch_size=batch_size, preprocess=preprocess, mesh=mesh)
    return jax.jit(fn)


# ------------------------------------------------------------ data placement


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (default: all)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def to_device(tree: Any, mesh: Mesh | None = None) -> Any:
    """Puts a pytree of host arrays on device, replicated over ``mesh`` if given."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


# ------------------------------------------------------------- the host loop


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def train(
    key: PRNGKey,
    state: TrainState,
    train_data: Mapping[str, jax.Array],
    *,
    train_epoch: EpochFn,
    num_epochs: int,
    eval_data: Mapping[str, jax.Array] | None = None,
    evaluate: EvalFn | None = None,
    start_epoch: int = 0,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Trains for epochs ``start_epoch .. num_epochs - 1`` (host loop).

    Syncs with the device once per epoch, to log. ``key`` is the run's data
    key: the same key and epoch give the same batches, so a run resumed at
    ``start_epoch`` continues exactly.

    A diverged run stops: after the first epoch whose train loss is NaN or
    infinite (checked on the host values already fetched for the log, so no
    extra program or sync), that epoch's row gets ``"diverged": True``, the
    callback still sees it, and the loop ends. ``divergence(history)`` says
    whether and where a run diverged.

    Args:
      key: the run's data key.
      state: the initial ``TrainState``.
      train_data: ``{"image", "label"}`` arrays, ideally on device.
      train_epoch: from ``make_train_epoch``.
      num_epochs: total number of epochs of the run.
      eval_data: optional held-out data, evaluated after every epoch.
      evaluate: from ``make_evaluate``; required with ``eval_data``.
      start_epoch: first epoch to run (to resume).
      progress: tqdm bar over epochs; ``None``: only when stderr is a terminal.
      callback: called as ``callback(epoch, metrics)`` after each epoch.

    Raises:
      ValueError: before any epoch runs, on epochs that are not ints >= 0, or
        data without examples, with unequal numbers of images and labels, or
        with labels that are not integers in ``[0, C)`` (``C`` read from the
        ``head`` layer's kernel, as every model of the library names its
        classifier; other models: labels >= 0). One small device read per call.

    Returns:
      The final state and one dict per epoch run: ``epoch``, ``train_loss``,
      ``train_accuracy``, ``seconds`` and, with ``eval_data``, ``test_loss`` and
      ``test_accuracy``; the last row of a diverged run also holds
      ``"diverged": True`` (the history is then shorter than the epochs asked).
    """
    from tqdm.auto import tqdm

    if eval_data is not None and evaluate is None:
        raise ValueError("eval_data was given without evaluate=make_evaluate(...).")
    for name, value in (("num_epochs", num_epochs), ("start_epoch", start_epoch)):
        if not is_int(value) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    num_classes = _num_classes(state.params)
    for name, d in (("train_data", train_data), ("eval_data", eval_data)):
        if d is not None:
            _check_data(d, name)
            _check_label_range(d, name, num_classes)
    history = []
    bar = tqdm(
        range(start_epoch, num_epochs), disable=not _show_progress(progress), unit="ep"
    )
    for epoch in bar:
        start = time.perf_counter()
        state, metrics = train_epoch(state, train_data, key, epoch)
        row = {f"train_{k}": v for k, v in metrics.items()}
        if eval_data is not None:
            row.update({f"test_{k}": v for k, v in evaluate(state, eval_data).items()})
        row = {"epoch": epoch, **jax.tree.map(float, jax.device_get(row))}
        row["seconds"] = time.perf_counter() - start
        diverged = not math.isfinite(row["train_loss"])
        if diverged:
            row["diverged"] = True
        history.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if "accuracy" in k})
        if callback is not None:
            callback(epoch, row)
        if diverged:
            bar.close()
            break
    return state, history


def divergence(history: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Where a training history diverged, or ``None`` for a healthy one.

    Args:
      history: rows as ``train`` returns them (or as saved), each with
        ``epoch`` and ``train_loss``.

    Returns:
      ``None`` if every ``train_loss`` is finite, else ``{"epoch": e,
      "last_finite_loss": l}``: ``e`` is the first epoch whose train loss is NaN
      or infinite, ``l`` the train loss of the row before it (``None`` if it is
      the first row).

    Example:
      >>> state, history = train.train(key, state, data, train_epoch=ep, num_epochs=10)
      >>> train.divergence(history)  # e.g. {"epoch": 0, "last_finite_loss": None}
    """
    previous = None
    for row in history:
        loss = float(row["train_loss"])
        if not math.isfinite(loss):
            return {"epoch": row["epoch"], "last_finite_loss": previous}
        previous = loss
    return None
