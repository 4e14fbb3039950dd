"""A look-ahead signal for pruning at initialisation: a few training steps.

Iterative rewind pruning learns which weights matter by training; a pruner at
initialisation can buy a little of that signal by training the network for a
few steps first. ``train_ahead`` returns the weights after those steps (the
``"lookahead"`` features of ``features.compute_features`` read them); the
mask built from them still applies to the initial weights, so the network is
trained from initialisation as for every other method. The cost is the
look-ahead epochs themselves, reported beside a method's accuracy.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from autosparse_jax import masks, train
from autosparse_jax._checks import is_int
from autosparse_jax.types import Mask, ModelState, Params, PRNGKey


def train_ahead(
    key: PRNGKey,
    params: Params,
    train_data: Any,
    *,
    train_epoch: train.EpochFn,
    optimizer: optax.GradientTransformation,
    num_epochs: int = 1,
    model_state: ModelState | None = None,
    mask: Mask | None = None,
) -> Params:
    """The params after ``num_epochs`` epochs of training from ``params``.

    Args:
      key: PRNG key of the epochs' data order (``train_epoch``'s key).
      params: the params at initialisation (not modified).
      train_data: ``{"image", "label"}`` on device, as ``train_epoch`` takes.
      train_epoch: ``train.make_train_epoch(model, optimizer, ...)``; its
        optimizer's schedule runs from step 0, so the look-ahead epochs are
        the first epochs of that recipe.
      optimizer: the optimizer ``train_epoch`` was built with.
      num_epochs: look-ahead epochs, at least 1.
      model_state: e.g. BatchNorm statistics; ``None`` means ``{}``.
      mask: train under this mask; ``None``: the dense network.

    Returns:
      The trained params, a tree like ``params``.

    Raises:
      ValueError: ``num_epochs`` is not a positive integer.

    Example:
      >>> ahead = train_ahead(key, params, train_data,
      ...                     train_epoch=recipe.train_epoch, optimizer=opt)
      >>> feats = features.compute_features(params, batches, apply_fn=apply_fn,
      ...     feature_set="lookahead", ahead_params=ahead)
    """
    if not is_int(num_epochs):
        raise ValueError(f"num_epochs must be an integer, got {num_epochs!r}.")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}.")
    mask = masks.dense_mask(params) if mask is None else mask
    state = train.init_train_state(params, mask, optimizer, model_state)
    for epoch in range(num_epochs):
        state, metrics = train_epoch(state, train_data, key, epoch)
        if not bool(jnp.isfinite(metrics["loss"])):
            raise FloatingPointError(
                f"the look-ahead training diverged in epoch {epoch} (loss "
                f"{float(metrics['loss'])}); lower the recipe's learning rate."
            )
    return jax.tree.map(jnp.array, state.params)
