"""Classification losses shared by training, criteria and features."""

import jax
import jax.numpy as jnp
import optax

from autosparse_jax.types import ApplyFn, Batch, Params


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels.

    Args:
      logits: ``[B, C]`` float.
      labels: ``[B]`` int, values in ``[0, C)``.

    Returns:
      A float32 scalar.

    Example:
      >>> cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))  # log(4)
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy expects logits [B, C] and labels [B]; got logits "
            f"{logits.shape} and labels {labels.shape}."
        )
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
    )
    return losses.mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose arg-max equals the label (float32 scalar)."""
    return (jnp.argmax(logits, axis=-1) == labels).mean(dtype=jnp.float32)


def classification_loss(apply_fn: ApplyFn, params: Params, batch: Batch) -> jax.Array:
    """Cross-entropy of ``apply_fn(params, batch["image"])`` against the labels.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, C]``.
      params: the model parameters.
      batch: ``{"image": [B, ...] float32, "label": [B] int}``; images must
        already be preprocessed (see ``data.preprocess``).

    Returns:
      A float32 scalar, differentiable in ``params``.
    """
    return cross_entropy(apply_fn(params, batch["image"]), batch["label"])
