"""Type aliases shared by every module of autosparse_jax (aliases only)."""

from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax

Params = Any
"""The Flax ``params`` collection: a pytree of float arrays.

Any other collection (for example ``batch_stats``) is *model state* and is never
masked.
"""

Mask = Any
"""A pytree with the structure and leaf shapes of ``Params`` and dtype ``bool``.

``True`` means kept. Leaves that cannot be pruned are all ``True``; never ``None``.
"""

Scores = Any
"""A pytree with the structure of ``Params``, float32. Higher means keep."""

Features = Any
"""A pytree with the structure of ``Params``; leaf shape ``param.shape + (F,)``."""

ModelState = Any
"""Non-parameter Flax collections, e.g. ``{"batch_stats": ...}``; ``{}`` if none."""

Batch = Mapping[str, jax.Array]
"""``{"image": [B, H, W, C] uint8 or float32, "label": [B] int32}``."""

ApplyFn = Callable[[Params, jax.Array], jax.Array]
"""``apply_fn(params, x) -> logits [B, C]``, built by ``models.make_apply_fn``."""

PRNGKey = jax.Array
"""A typed PRNG key from ``jax.random.key``."""

Scope = Literal["global", "layerwise"]
"""``"global"``: one threshold over all prunable weights; ``"layerwise"``: the
same sparsity in every prunable leaf. Always static."""

PrunableFn = Callable[[tuple[Any, ...], jax.Array], bool]
"""Predicate ``(path, leaf) -> bool`` evaluated in Python from paths and shapes."""
