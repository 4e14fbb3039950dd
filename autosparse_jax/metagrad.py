"""A meta-gradient through a few differentiable training steps (ProsPr).

Prospect pruning scores a weight by how the loss *after* a few steps of
training depends on keeping it (Alizadeh et al. 2022, "Prospect pruning:
finding trainable weights at initialization using meta-gradients"): a mask
``m = 1`` multiplies the initial weights, ``k`` plain SGD steps train from
``m * w0``, and the score is ``|dL(w_k(m)) / dm|`` at ``m = 1``, the loss
taken on batches the steps did not see. With ``k = 0`` it is SNIP's
``|w0 * dL/dw0|``. The mask built from the scores applies to the initial
weights, as for every other criterion; the steps only look ahead.
"""

import jax
import jax.numpy as jnp

from autosparse_jax import criteria, losses, masks
from autosparse_jax._checks import is_int
from autosparse_jax.types import ApplyFn, Batch, Mask, Params, PRNGKey, Scores


def _check(batches: Batch, num_steps: int, learning_rate) -> None:
    if not is_int(num_steps):
        raise ValueError(f"num_steps must be an integer, got {num_steps!r}.")
    if num_steps < 0:
        raise ValueError(f"num_steps must be at least 0, got {num_steps}.")
    num_batches = batches["label"].shape[0]
    if num_batches < num_steps + 1:
        raise ValueError(
            f"{num_steps} steps need at least {num_steps + 1} stacked batches (one "
            f"per step, then at least one held out for the loss); got {num_batches}."
            " Pass more batches (data.sample_batches) or take fewer steps."
        )
    if isinstance(learning_rate, int | float) and learning_rate < 0:
        raise ValueError(f"learning_rate must be >= 0, got {learning_rate}.")


def _batch_loss(apply_fn: ApplyFn, params: Params, batch: Batch) -> jax.Array:
    return losses.cross_entropy(apply_fn(params, batch["image"]), batch["label"])


def metagradient(
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask,
    num_steps: int,
    learning_rate: float | jax.Array,
) -> Params:
    """``dL(w_k(m)) / dm`` at ``m = 1`` (signed), parallel to ``params``.

    ``w_0(m) = m * mask * params``; step ``i < k`` is plain SGD on batch ``i``,
    ``w_{i+1} = w_i - learning_rate * mask * dL_i/dw (w_i)`` (pruned weights
    stay zero); ``L`` is the mean over the remaining batches ``k, ..., K-1`` of
    their mean cross-entropy at ``w_k``. Reverse mode differentiates through
    the ``k`` steps (second-order terms included, no Hessian formed).

    Args:
      params: the params at initialisation.
      batch: ``K >= num_steps + 1`` stacked batches ``[K, B, ...]`` of
        preprocessed images (one batch ``[B, ...]`` when ``num_steps == 0``).
      apply_fn: ``apply_fn(params, x) -> logits``.
      mask: the weights still alive (``True``: kept).
      num_steps: ``k >= 0`` differentiable SGD steps. Static.
      learning_rate: SGD's step size (may be traced).

    Returns:
      A float32 pytree like ``params``; zero where ``mask`` is ``False``.

    Raises:
      ValueError: a bad ``num_steps`` or ``learning_rate``, or too few batches.

    Example:
      >>> dm = metagradient(params, batches, apply_fn=apply_fn,
      ...                   mask=masks.dense_mask(params), num_steps=3,
      ...                   learning_rate=0.05)
    """
    batches = criteria._stacked(batch)
    _check(batches, num_steps, learning_rate)
    steps = jax.tree.map(lambda x: x[:num_steps], batches)
    held = jax.tree.map(lambda x: x[num_steps:], batches)
    w0 = masks.apply_mask(params, mask)
    keep = jax.tree.map(lambda k, p: k.astype(p.dtype), mask, params)

    def sgd_step(w, b):
        g = jax.grad(lambda p: _batch_loss(apply_fn, p, b))(w)
        return jax.tree.map(
            lambda w_, k, g_: w_ - learning_rate * k * g_, w, keep, g
        ), None

    def loss_after_steps(m):
        w, _ = jax.lax.scan(sgd_step, jax.tree.map(jnp.multiply, m, w0), steps)
        per_batch = jax.lax.map(lambda b: _batch_loss(apply_fn, w, b), held)
        return jnp.mean(per_batch)

    ones = jax.tree.map(jnp.ones_like, params)
    return jax.grad(loss_after_steps)(ones)


def prospr(
    key: PRNGKey,
    params: Params,
    batch: Batch,
    *,
    apply_fn: ApplyFn,
    mask: Mask,
    num_steps: int = 3,
    learning_rate: float | jax.Array = 0.1,
) -> Scores:
    """ProsPr's keep-score ``|dL(w_k(m)) / dm|``, divided by its global sum.

    The criterion signature (``criteria.Criterion``) with ``num_steps`` and
    ``learning_rate`` as keywords (bind them with ``functools.partial``; the
    batch-dependent ``metagradient`` does the work). With ``num_steps=0`` the
    scores are ``criteria.snip``'s.

    References:
      Alizadeh, Tailor, Zintgraf, van Amersfoort, Farquhar, Lane & Gal 2022,
      "Prospect pruning: finding trainable weights at initialization using
      meta-gradients" (ICLR).

    Example:
      >>> criterion = functools.partial(prospr, num_steps=3, learning_rate=0.05)
      >>> mask = criteria.prune_at_init(key, criterion, params, batches,
      ...                               apply_fn=apply_fn, sparsity=0.99)
    """
    del key  # deterministic
    dm = metagradient(
        params,
        batch,
        apply_fn=apply_fn,
        mask=mask,
        num_steps=num_steps,
        learning_rate=learning_rate,
    )
    return criteria._normalized(jax.tree.map(jnp.abs, dm))
