"""Pruning-at-initialisation criteria, multi-round pruning and sanity checks.

Every criterion has the signature ``fn(key, params, batch, *, apply_fn, mask)``
and returns scores parallel to ``params`` where **higher means keep**.
Data-dependent criteria accept one batch (``label`` of shape ``[B]``) or ``K``
stacked batches (``label`` of shape ``[K, B]``), whose gradients are averaged.
Images must already be preprocessed floats (``data.preprocess``). BatchNorm
runs in whatever mode ``apply_fn`` was built with (``models.make_apply_fn``:
inference mode with the initial statistics by default, as the reference
implementations do).
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import jax
import jax.numpy as jnp

from autosparse_jax import _names, losses, masks
from autosparse_jax import allocation as allocation_lib
from autosparse_jax.types import (
    ApplyFn,
    Batch,
    Mask,
    Params,
    PRNGKey,
    PrunableFn,
    Scores,
)

GRASP_TEMPERATURE = 200.0
DEFAULT_ALLOCATION = allocation_lib.global_topk()
"""``prune_at_init``'s allocation: one global threshold, never an empty layer."""
_ALLOCATION_STREAM = 0xA11C  # fold_in data of the allocation's key


class Criterion(Protocol):
    """``fn(key, params, batch, *, apply_fn, mask) -> scores`` (higher = keep)."""

    def __call__(
        self,
        key: PRNGKey,
        params: Params,
        batch: Batch,
        *,
        apply_fn: ApplyFn,
        mask: Mask,
    ) -> Scores: ...


# ------------------------------------------------------------------- helpers


def _stacked(batch: Batch) -> Batch:
    """``batch`` with a leading axis of batches: ``label [K, B]``.

    Checks what the shapes and dtypes tell (free under ``jax.jit``): float
    images, integer labels, one label per image.
    """
    if batch["image"].dtype == jnp.uint8:
        raise ValueError(
            "Criteria need preprocessed float images; apply "
            "data.preprocess(None, images, data.preprocess_config(name), "
            "train=False) to the batch first."
        )
    if not jnp.issubdtype(batch["label"].dtype, jnp.integer):
        raise ValueError(
            f"batch['label'] must hold integer class indices, got dtype "
            f"{batch['label'].dtype}; pass labels.astype(jnp.int32) (or build the "
            "data with data.from_arrays, which checks them)."
        )
    lead = batch["label"].ndim
    if lead not in (1, 2):
        raise ValueError(
            f"batch['label'] must be [B] (one batch) or [K, B] (K batches), got "
            f"shape {batch['label'].shape}."
        )
    if batch["image"].shape[:lead] != batch["label"].shape:
        raise ValueError(
            f"batch has {batch['image'].shape[lead - 1]} images but "
            f"{batch['label'].shape[-1]} labels (image shape {batch['image'].shape}, "
            f"label shape {batch['label'].shape}); pass one label per image."
        )
    return jax.tree.map(lambda x: x[None], batch) if lead == 1 else batch


def _check_labels(batch: Batch | None, params: Params, apply_fn: ApplyFn) -> None:
    """Concrete labels must lie in ``[0, C)`` for a model with ``C`` logits."""
    if batch is None or not masks._is_concrete(batch["label"]):
        return
    stacked = _stacked(batch)
    example = jax.ShapeDtypeStruct(stacked["image"].shape[1:], jnp.float32)
    logits = jax.eval_shape(apply_fn, params, example)
    num_classes = logits.shape[-1]
    with jax.ensure_compile_time_eval():
        low, high = jax.device_get((jnp.min(batch["label"]), jnp.max(batch["label"])))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"batch labels must be in [0, {num_classes}) (the model has "
            f"{num_classes} logits), got a minimum of {low} and a maximum of "
            f"{high}; map classes to 0 .. {num_classes - 1} or build the model with "
            "num_classes large enough."
        )


def _mean_over_batches(fn: Callable[[Batch], Params], batch: Batch) -> Params:
    """Mean of ``fn(b)`` over the batches of a (possibly stacked) batch."""
    batches = _stacked(batch)
    num = batches["label"].shape[0]
    first = fn(jax.tree.map(lambda x: x[0], batches))
    if num == 1:
        return first

    def body(total, b):
        return jax.tree.map(jnp.add, total, fn(b)), None

    rest = jax.tree.map(lambda x: x[1:], batches)
    total, _ = jax.lax.scan(body, first, rest)
    return jax.tree.map(lambda t: t / num, total)


def _loss_grad(apply_fn: ApplyFn, params: Params, batch: Batch, temperature=1.0):
    """Gradient of the cross-entropy of ``apply_fn(params, x) / temperature``."""

    def loss(p):
        logits = apply_fn(p, batch["image"]) / temperature
        return losses.cross_entropy(logits, batch["label"])

    return jax.grad(loss)(params)


def _normalized(scores: Scores) -> Scores:
    """``scores / |sum of all scores|`` (order-preserving; guards a zero sum)."""
    total = sum(jnp.sum(s) for s in jax.tree.leaves(scores))
    scale = jnp.where(total == 0, 1.0, jnp.abs(total))
    return jax.tree.map(lambda s: s / scale, scores)


# ------------------------------------------------------------------ criteria


def random(
    key: PRNGKey, params: Params, batch: Batch, *, apply_fn: ApplyFn, mask: Mask
) -> Scores:
    """I.i.d. ``U(0, 1)`` scores, one subkey per leaf (uniform density in expectation).

    References:
      Frankle et al. 2021, "Pruning neural networks at initialization: why are
      we missing the mark?" (random pruning as the baseline).
    """
    del batch, apply_fn, mask
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves, strict=True)],
    )


def magnitude(
    key: PRNGKey, params: Params, batch: Batch, *, apply_fn: ApplyFn, mask: Mask
) -> Scores:
    """``|w|`` at the current mask.

    References:
      Han et al. 2015, "Learning both weights and connections for efficient
      neural networks"; at initialisation: Frankle et al. 2021.
    """
    del key, batch, apply_fn
    return jax.tree.map(jnp.abs, masks.apply_mask(params, mask))


def snip(
    key: PRNGKey, params: Params, batch: Batch, *, apply_fn: ApplyFn, mask: Mask
) -> Scores:
    """Connection sensitivity ``|w * dL/dw|`` at the current mask, sum-normalised.

    ``dL/dw`` is the mean gradient over the batches of ``batch``.

    References:
      Lee, Ajanthan & Torr 2019, "SNIP: single-shot network pruning based on
      connection sensitivity".
    """
    del key
    w = masks.apply_mask(params, mask)
    grad = loss_gradient(w, batch, apply_fn=apply_fn)
    return _normalized(jax.tree.map(lambda p, g: jnp.abs(p * g), w, grad))


def grasp(
    key: PRNGKey,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask,
    temperature: float = GRASP_TEMPERATURE,
    prunable: PrunableFn = masks.is_prunable,
) -> Scores:
    """Gradient signal preservation: keep-score ``w * Hg`` (signed).

    ``g`` is the mean gradient of the loss of ``logits / temperature`` with
    respect to the alive prunable weights (zero elsewhere; stopped), ``Hg`` the
    Hessian-gradient product of the same loss, computed
    forward-over-reverse (``jax.jvp`` of ``jax.grad``; no Hessian is formed).
    GraSP removes the weights with the largest ``-w * Hg`` (their removal
    reduces gradient flow least), so the keep-score here is ``w * Hg``: the
    sign is flipped relative to the paper's score, and no absolute value is
    taken. Scores are divided by the absolute value of their sum.

    References:
      Wang, Zhang & Grosse 2020, "Picking winning tickets before training by
      preserving gradient flow".
    """
    del key
    w = masks.apply_mask(params, mask)
    hg = hessian_gradient_product(
        params,
        mask,
        batch,
        apply_fn=apply_fn,
        temperature=temperature,
        prunable=prunable,
    )
    return _normalized(jax.tree.map(jnp.multiply, w, hg))


def loss_gradient(
    params: Params, batch: Batch, *, apply_fn: ApplyFn, temperature: float = 1.0
) -> Params:
    """Mean over the batches of ``batch`` of the loss gradient ``dL/dw``.

    ``L`` is the mean cross-entropy of ``apply_fn(params, x) / temperature``
    on one batch (SNIP's and AutoS's ``g0`` at ``temperature = 1``).

    Args:
      params: the params.
      batch: one batch ``[B, ...]`` or ``K`` stacked batches ``[K, B, ...]``
        of preprocessed images.
      apply_fn: ``apply_fn(params, x) -> logits``.
      temperature: divides the logits.

    Returns:
      A pytree parallel to ``params``.

    Example:
      >>> g0 = loss_gradient(params, batches, apply_fn=apply_fn)
    """
    return _mean_over_batches(
        lambda b: _loss_grad(apply_fn, params, b, temperature), batch
    )


def hessian_gradient_product(
    params: Params,
    mask: Mask,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    temperature: float = GRASP_TEMPERATURE,
    prunable: PrunableFn = masks.is_prunable,
) -> Params:
    """GraSP's ``Hg`` at ``params * mask`` (mean over the batches of ``batch``).

    ``g`` is ``loss_gradient`` at ``temperature``, restricted to the alive
    prunable weights and stopped; ``H`` is the Hessian of the same loss,
    applied forward-over-reverse (no Hessian is formed).

    Args:
      params: the params.
      mask: a ``Mask``; pruned weights are zero and carry no ``g``.
      batch: one batch or ``K`` stacked batches of preprocessed images.
      apply_fn: ``apply_fn(params, x) -> logits``.
      temperature: divides the logits (GraSP uses 200).
      prunable: predicate ``(path, leaf) -> bool``: ``g`` lives on the alive
        prunable weights. Static.

    Returns:
      A pytree parallel to ``params``.

    Example:
      >>> hg = hessian_gradient_product(params, dense_mask(params), batch,
      ...                               apply_fn=apply_fn)
    """
    w = masks.apply_mask(params, mask)
    grad = loss_gradient(w, batch, apply_fn=apply_fn, temperature=temperature)
    # g lives on the alive prunable weights only (the reference builds it from the
    # kernels): pruned weights and biases carry no gradient signal to preserve.
    alive_kernels = jax.tree_util.tree_map_with_path(
        lambda path, m: m & prunable(path, m), mask
    )
    grad = jax.lax.stop_gradient(masks.apply_mask(grad, alive_kernels))

    def hessian_grad(b):
        grad_fn = lambda p: _loss_grad(apply_fn, p, b, temperature)  # noqa: E731
        return jax.jvp(grad_fn, (w,), (grad,))[1]

    return _mean_over_batches(hessian_grad, batch)


def _pow2_scale(kernel: jax.Array) -> jax.Array:
    """A power of two close to ``fan_out / sum|kernel|`` (1 for an empty layer)."""
    total = jnp.sum(jnp.abs(kernel))
    ratio = jnp.where(total > 0, kernel.shape[-1] / jnp.maximum(total, 1e-30), 1.0)
    return jnp.exp2(jnp.round(jnp.log2(ratio)))


def synflow_scores(
    params: Params,
    mask: Mask,
    *,
    apply_fn: ApplyFn,
    input_shape: tuple[int, ...],
    rescale: bool = True,
    prunable: PrunableFn = masks.is_prunable,
) -> Scores:
    """One round of SynFlow: ``|w * dR/dw|``, ``R = sum(f(|w|)(1))``.

    Every parameter (BatchNorm included) is replaced by its absolute value, the
    network is fed one all-ones input of shape ``input_shape`` and ``R`` is the
    sum of its outputs. With ``rescale``, each prunable kernel is first
    multiplied by a power of two ``c_l`` that keeps activations near 1, so deep
    networks (VGG-19) cannot overflow float32. For networks whose additive
    terms (biases, BatchNorm offsets and running means) are zero, as at
    initialisation in every model of this library, ``R`` is multilinear in the
    kernels and every score is multiplied by the same factor ``prod(c_l)``, so
    the ranking is unchanged (powers of two scale exactly).

    Args:
      params: the params; scored at ``|params * mask|``.
      mask: a ``Mask``.
      apply_fn: ``apply_fn(params, x) -> logits``; BatchNorm in inference mode.
      input_shape: one example's shape, e.g. ``(28, 28, 1)``.
      rescale: apply the per-layer power-of-two rescaling (of the leaves
        ``prunable`` selects). Static.
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      Scores parallel to ``params`` (non-negative).

    References:
      Tanaka, Kunin, Yamins & Ganguli 2020, "Pruning neural networks without any
      data by iteratively conserving synaptic flow".
    """
    w = jax.tree.map(jnp.abs, masks.apply_mask(params, mask))
    if rescale:
        flags = jax.tree_util.tree_map_with_path(prunable, w)
        w = jax.tree.map(lambda p, f: p * _pow2_scale(p) if f else p, w, flags)
    ones = jnp.ones((1, *input_shape), jnp.float32)
    grad = jax.grad(lambda p: jnp.sum(apply_fn(p, ones)))(w)
    return jax.tree.map(lambda p, g: jnp.abs(p * g), w, grad)


def synflow(
    key: PRNGKey,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask,
    prunable: PrunableFn = masks.is_prunable,
) -> Scores:
    """SynFlow scores (data-free; ``batch`` only gives the input shape).

    One round; ``prune_at_init(..., num_rounds=100)`` iterates it (the paper's
    default). See ``synflow_scores``.

    References:
      Tanaka, Kunin, Yamins & Ganguli 2020, "Pruning neural networks without any
      data by iteratively conserving synaptic flow".
    """
    del key
    input_shape = _stacked(batch)["image"].shape[2:]
    return synflow_scores(
        params, mask, apply_fn=apply_fn, input_shape=input_shape, prunable=prunable
    )


def rank_matched(
    params: Params, scores: Scores, *, prunable: PrunableFn = masks.is_prunable
) -> Params:
    """Each prunable leaf's magnitudes re-dealt in the order of ``scores``.

    Inside every prunable leaf, the weight with the ``i``-th largest score gets
    the ``i``-th largest ``|w|`` of that leaf, so each layer keeps its
    distribution of magnitudes and only which weight holds which changes
    (ties broken by index). SynFlow on the result (``prune_at_init(key,
    synflow, rank_matched(params, scores), ...)``) keeps SynFlow's paths and
    its layer balance while ranking inside layers by ``scores``; with
    ``scores = |params|`` it is SynFlow itself. Leaves ``prunable`` does not
    select are returned unchanged. The mask it makes applies to ``params``.

    Example:
      >>> ranked = rank_matched(params, learned_scores)
      >>> mask = prune_at_init(key, synflow, ranked, batch, apply_fn=apply_fn,
      ...                      sparsity=0.99, num_rounds=100)
    """

    def deal(path, p, s):
        if not prunable(path, p):
            return p
        order = jnp.argsort(s.ravel(), stable=True)
        ranks = (
            jnp.zeros(order.shape, jnp.int32)
            .at[order]
            .set(jnp.arange(order.size, dtype=jnp.int32))
        )
        return jnp.sort(jnp.abs(p).ravel())[ranks].reshape(p.shape)

    return jax.tree_util.tree_map_with_path(deal, params, scores)


CRITERIA: Mapping[str, Criterion] = _names.NameTable(
    "criterion",
    {
        "random": random,
        "magnitude": magnitude,
        "snip": snip,
        "grasp": grasp,
        "synflow": synflow,
    },
)
"""Read-only mapping from name to criterion (an unknown name's ``KeyError``
lists the valid ones)."""

DEFAULT_ROUNDS: Mapping[str, int] = MappingProxyType({"synflow": 100})
"""Rounds each criterion is iterated for by default (1 if absent)."""


# --------------------------------------------------------------- public API


def _check_criterion(criterion: object) -> None:
    if not callable(criterion):
        hint = (
            f"CRITERIA[{criterion!r}]"
            if isinstance(criterion, str)
            else "e.g. CRITERIA['snip']"
        )
        raise ValueError(
            "criterion must be a callable fn(key, params, batch, *, apply_fn, mask) "
            f"-> scores, got {criterion!r}; pass {hint}."
        )


def compute_scores(
    key: PRNGKey,
    criterion: Criterion,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask | None = None,
    prunable: PrunableFn = masks.is_prunable,
) -> Scores:
    """Runs ``criterion``; weights already pruned in ``mask`` score lowest.

    Pruned weights get the lowest finite float32 (not ``-inf``, which
    ``masks.mask_from_scores`` rejects as a sign of a broken criterion). A
    criterion that takes a ``prunable`` keyword (GraSP, SynFlow, AutoS) gets
    ``prunable``.

    Args:
      key: PRNG key (used by ``random``).
      criterion: e.g. ``CRITERIA["snip"]``.
      params: the params to score.
      batch: one batch or ``K`` stacked batches of preprocessed images.
      apply_fn: ``apply_fn(params, x) -> logits``.
      mask: current mask; ``None`` means dense.
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      float32 scores parallel to ``params``.

    Raises:
      ValueError: ``criterion`` is not callable (e.g. a name), ``mask`` does
        not match ``params``, params are not floating-point or (when concrete)
        not finite, or the batch's labels are not integers in ``[0, C)``
        (range checked when concrete) or not one per image.

    Example:
      >>> scores = compute_scores(key, CRITERIA["snip"], params, batch,
      ...                         apply_fn=apply_fn)
    """
    _check_criterion(criterion)
    masks._check_params(params)
    _check_labels(batch, params, apply_fn)
    mask = masks.dense_mask(params) if mask is None else mask
    masks.apply_mask(params, mask)  # Validates structure, shapes and dtype.
    kwargs = allocation_lib.criterion_kwargs(criterion, prunable)
    scores = criterion(key, params, batch, apply_fn=apply_fn, mask=mask, **kwargs)
    if jax.tree.structure(scores) != jax.tree.structure(params):
        raise ValueError(
            f"criterion {criterion!r} returned scores with tree structure "
            f"{jax.tree.structure(scores)}, expected that of params "
            f"{jax.tree.structure(params)}: one score per parameter."
        )
    lowest = jnp.finfo(jnp.float32).min
    return jax.tree.map(
        lambda s, m: jnp.where(m, s.astype(jnp.float32), lowest), scores, mask
    )


def prune_at_init(
    key: PRNGKey,
    criterion: Criterion,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    sparsity: float | jax.Array,
    allocation: allocation_lib.Allocation = DEFAULT_ALLOCATION,
    num_rounds: int = 1,
    schedule: str = "geometric",
    prunable: PrunableFn = masks.is_prunable,
) -> Mask:
    """Prunes at initialisation: scores, then an allocation, then a mask.

    The one path of every mask of the library. Each round scores the masked
    network with ``criterion`` (``compute_scores``), asks ``allocation`` how
    many weights each prunable layer keeps at the round's sparsity
    (``masks.schedule_sparsity``), and keeps that many of the highest scores
    inside each layer (``allocation.mask_from_counts``: exact total,
    deterministic ties, masks only shrink). Random, magnitude, SNIP, GraSP,
    SynFlow and AutoS (``autosparse.AutoSparse.criterion``) are all
    criteria; ``allocation.global_topk()`` (the default: one threshold, never
    an empty layer), ``uniform()``, ``erk()``, ``like(criterion)`` and
    ``learned(model)`` are all allocations, so any ranking combines with any
    allocation, and iterating an allocation (``num_rounds > 1``) re-scores the
    pruned network every round. All rounds run in one ``lax.fori_loop`` with a
    traced sparsity: under ``jax.jit`` (static: ``criterion``, ``apply_fn``,
    ``allocation``, ``num_rounds``, ``schedule``, ``prunable``) a sweep over
    sparsities is one compilation.

    Keys: with one round the criterion gets ``key``; round ``r`` of several
    gets ``jax.random.fold_in(key, r)``. The allocation's context gets
    ``fold_in`` of the round's key with a constant of its own.

    Args:
      key: PRNG key.
      criterion: ``fn(key, params, batch, *, apply_fn, mask) -> scores``,
        e.g. ``CRITERIA["synflow"]``.
      params: initial params.
      batch: one batch or ``K`` stacked batches of preprocessed images
        (``label [B]`` or ``[K, B]``; gradients are averaged over batches);
        ``None`` for criteria that read no data (random, magnitude).
      apply_fn: ``apply_fn(params, x) -> logits``.
      sparsity: final fraction of prunable weights removed, in ``[0, 1)``.
      allocation: ``(scores, sparsity, context) -> [L] int32`` counts (see
        ``autosparse_jax.allocation``).
      num_rounds: rounds of scoring and pruning (SynFlow's default: 100,
        ``DEFAULT_ROUNDS``).
      schedule: ``"geometric"`` or ``"linear"`` (``masks.SCHEDULES``).
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      A ``Mask`` keeping exactly ``round((1 - sparsity) * N)`` prunable weights.

    Raises:
      ValueError: bad ``criterion``, ``num_rounds``, ``schedule`` or
        ``sparsity``; params with no prunable weight, not floating-point or
        (when concrete) not finite; bad labels (see ``compute_scores``); an
        allocation whose counts have the wrong shape, total or range. A traced
        ``sparsity`` cannot raise: it follows ``masks.mask_from_scores``'s rule
        (clipped into ``[0, 1]``, NaN removes everything).

    Example:
      >>> mask = prune_at_init(key, CRITERIA["synflow"], params, batch,
      ...                      apply_fn=apply_fn, sparsity=0.99, num_rounds=100)
      >>> mask = prune_at_init(key, CRITERIA["snip"], params, batch,
      ...                      apply_fn=apply_fn, sparsity=0.99,
      ...                      allocation=allocation.erk())
    """
    _check_criterion(criterion)
    if not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive int, got {num_rounds!r}.")
    masks.schedule_sparsity(0.0, 0, 1, schedule)  # Validates the name.
    masks._check_sparsity(sparsity)
    if not callable(allocation):
        raise ValueError(
            f"allocation must be a callable (scores, sparsity, context) -> counts, "
            f"e.g. allocation.global_topk(); got {allocation!r}."
        )
    if batch is not None:
        _stacked(batch)  # Validates the batch.
    base = allocation_lib.make_context(
        key, params, batch, apply_fn=apply_fn, prunable=prunable
    )

    def one_round(round_key, r, mask):
        scores = compute_scores(
            round_key,
            criterion,
            params,
            batch,
            apply_fn=apply_fn,
            mask=mask,
            prunable=prunable,
        )
        target = masks.schedule_sparsity(sparsity, r, num_rounds, schedule)
        ctx = base._replace(
            key=jax.random.fold_in(round_key, _ALLOCATION_STREAM), mask=mask
        )
        counts = allocation_lib.check_counts(
            allocation(scores, target, ctx), ctx, target
        )
        return allocation_lib.mask_from_counts(
            scores, counts, prunable=prunable, mask=mask
        )

    dense = masks.dense_mask(params)
    if num_rounds == 1:
        return one_round(key, 0, dense)
    return jax.lax.fori_loop(
        0,
        num_rounds,
        lambda r, m: one_round(jax.random.fold_in(key, r), r, m),
        dense,
    )


# ------------------------------------------------------------ sanity checks


def shuffle_within_layers(
    key: PRNGKey, mask: Mask, *, prunable: PrunableFn = masks.is_prunable
) -> Mask:
    """Permutes every prunable leaf of ``mask`` independently (same count per layer).

    References:
      Frankle et al. 2021, "Pruning neural networks at initialization: why are
      we missing the mark?" (the layerwise shuffle sanity check).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(mask)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, (path, m) in zip(keys, leaves, strict=True):
        if prunable(path, m):
            m = jax.random.permutation(k, m.ravel()).reshape(m.shape)
        out.append(m)
    return jax.tree.unflatten(treedef, out)


def reinitialize(
    key: PRNGKey, params: Params, mask: Mask, *, init_fn: Callable[[PRNGKey], Params]
) -> Params:
    """Fresh weights from ``init_fn(key)`` under the same ``mask``.

    Args:
      key: key for the new initialisation.
      params: the current params (only their structure is checked).
      mask: the mask to keep.
      init_fn: ``init_fn(key) -> params``, e.g.
        ``lambda k: models.init_params(k, model, shape)[0]``.

    Returns:
      ``apply_mask(init_fn(key), mask)``.

    Raises:
      ValueError: the new params do not have the structure of ``params``.
    """
    fresh = init_fn(key)
    if jax.tree.structure(fresh) != jax.tree.structure(params):
        raise ValueError(
            "init_fn(key) returned params with structure "
            f"{jax.tree.structure(fresh)}, expected {jax.tree.structure(params)}; "
            "pass the init function of the same model."
        )
    return masks.apply_mask(fresh, mask)


def invert_scores(scores: Scores) -> Scores:
    """Reverses the ranking of ``scores`` (``-s``): the lowest scores are kept.

    Negation reverses the order of signed scores exactly; a reciprocal would
    not (it maps both ``-1`` and ``1`` far apart but reorders signs).
    """
    return jax.tree.map(jnp.negative, scores)
