"""The shape of a sparse network: paths, dead units, fan-in and fan-out.

Two masks of the same sparsity can be very different networks: one keeps
every weight on some input-to-output path, another leaves weights that no
signal reaches (they are trained for nothing). ``effective_mask`` keeps the
weights that lie on at least one path; ``summary`` counts them and the dead
units; ``first_layer`` and ``plot_first_layer`` show which inputs a mask
listens to (kept fan-out per input pixel) and how the first layer's units are
wired (kept fan-in per unit). ``shuffle_keeping_fan_in``,
``shuffle_keeping_fan_out`` and ``rewire`` (both degrees kept) move a mask's
weights while keeping one part of its structure, to tell which part matters.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, masks
from autosparse_jax.types import ApplyFn, Mask, Params, PrunableFn


def effective_mask(
    params: Params,
    mask: Mask,
    *,
    apply_fn: ApplyFn,
    input_shape: tuple[int, ...],
    prunable: PrunableFn = masks.is_prunable,
) -> Mask:
    """The kept weights that lie on at least one input-to-output path.

    A weight is on a path when its SynFlow score on the masked network is
    positive (``criteria.synflow_scores``: ``|w| dR/d|w|`` with
    ``R = 1^T f(|w|)(1)``). That holds for params whose additive terms are
    zero, as at initialisation in every model of this library: a bias would
    carry flow from no input.

    Args:
      params: the params (at initialisation).
      mask: a ``Mask`` parallel to ``params``.
      apply_fn: ``apply_fn(params, x) -> logits``.
      input_shape: one example's shape, e.g. ``(28, 28, 1)``.
      prunable: predicate ``(path, leaf) -> bool``. Static.

    Returns:
      A bool ``Mask``: ``mask`` without the weights on no path (leaves that
      are not prunable are returned as ``mask`` has them).

    Example:
      >>> eff = effective_mask(params, mask, apply_fn=apply_fn,
      ...                      input_shape=(28, 28, 1))
      >>> float(masks.sparsity(eff))   # >= masks.sparsity(mask)
    """
    scores = criteria.synflow_scores(
        params, mask, apply_fn=apply_fn, input_shape=input_shape, prunable=prunable
    )
    return jax.tree_util.tree_map_with_path(
        lambda path, m, s: jnp.logical_and(m, s > 0) if prunable(path, m) else m,
        mask,
        scores,
    )


def _kernels(mask: Mask, prunable: PrunableFn) -> list[tuple[str, np.ndarray]]:
    leaves = jax.tree_util.tree_flatten_with_path(mask)[0]
    return [
        (masks.leaf_name(path), np.asarray(m, bool))
        for path, m in leaves
        if prunable(path, m)
    ]


def summary(
    params: Params,
    mask: Mask,
    *,
    apply_fn: ApplyFn,
    input_shape: tuple[int, ...],
    prunable: PrunableFn = masks.is_prunable,
) -> dict[str, Any]:
    """Kept and effective weights, and per 2-D kernel its units (host).

    Returns:
      ``{"kept", "effective", "total", "effective_sparsity", "layers"}``;
      ``layers`` has one entry per prunable leaf in tree order with ``kept``,
      ``effective`` and, for a dense kernel ``[in, out]``, ``inputs_used``
      (inputs with a kept effective weight), ``units_alive`` (outputs with
      one) and ``median_fan_in`` (kept effective weights per alive unit).
    """
    eff = effective_mask(
        params, mask, apply_fn=apply_fn, input_shape=input_shape, prunable=prunable
    )
    layers, kept, effective, total = [], 0, 0, 0
    for (name, m), (_, e) in zip(
        _kernels(mask, prunable), _kernels(eff, prunable), strict=True
    ):
        row = {"name": name, "kept": int(m.sum()), "effective": int(e.sum())}
        if e.ndim == 2:
            fan_in = e.sum(axis=0)
            row["inputs_used"] = int((e.sum(axis=1) > 0).sum())
            row["units_alive"] = int((fan_in > 0).sum())
            alive = fan_in[fan_in > 0]
            row["median_fan_in"] = float(np.median(alive)) if alive.size else 0.0
        layers.append(row)
        kept, effective, total = (
            kept + row["kept"],
            effective + row["effective"],
            (total + m.size),
        )
    return {
        "kept": kept,
        "effective": effective,
        "total": total,
        "effective_sparsity": 1.0 - effective / total,
        "layers": layers,
    }


def first_layer(
    mask: Mask,
    image_shape: Sequence[int],
    *,
    prunable: PrunableFn = masks.is_prunable,
) -> tuple[np.ndarray, np.ndarray]:
    """The first dense kernel's kept fan-out per input and fan-in per unit.

    The first kernel is the first prunable leaf in tree order; it must be a
    dense ``[prod(image_shape), units]`` kernel (an MLP on flattened images).

    Returns:
      ``(fan_out, fan_in)``: ``fan_out`` of shape ``image_shape`` (kept
      weights leaving each input pixel, summed over channels when
      ``image_shape`` ends in one), and ``fan_in`` of shape ``[units]``.

    Raises:
      ValueError: the first prunable leaf is not such a kernel.
    """
    kernels = _kernels(mask, prunable)
    if not kernels:
        raise ValueError("the mask has no prunable leaf.")
    name, m = kernels[0]
    size = int(np.prod(image_shape))
    if m.ndim != 2 or m.shape[0] != size:
        raise ValueError(
            f"the first prunable leaf {name} has shape {m.shape}; first_layer "
            f"needs a dense kernel [{size}, units] on flattened {tuple(image_shape)} "
            "inputs (an MLP)."
        )
    fan_out = m.sum(axis=1).reshape(tuple(image_shape))
    if fan_out.ndim == 3:
        fan_out = fan_out.sum(axis=-1)
    return fan_out, m.sum(axis=0)


def plot_first_layer(
    named_masks: Mapping[str, Mask],
    image_shape: Sequence[int],
    *,
    path: str | None = None,
    title: str = "",
):
    """One row per mask: kept fan-out per input pixel, kept fan-in per unit.

    The left panel is the ``image_shape`` map of ``first_layer``'s fan-out
    (one colour scale for all rows); the right panel plots the first layer's
    units sorted by kept fan-in, with the units that keep a weight and their
    median fan-in in its title. Both count kept weights, on a path or not
    (``summary`` counts the effective ones).

    Args:
      named_masks: label -> mask (e.g. ``{"IRP": m1, "SynFlow": m2}``).
      image_shape: the input shape, e.g. ``(28, 28)`` or ``(28, 28, 1)``.
      path: save the figure there (PNG) when given.
      title: the figure's title.

    Returns:
      The matplotlib figure.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = {k: first_layer(m, image_shape) for k, m in named_masks.items()}
    vmax = max(int(r[0].max()) for r in rows.values()) or 1
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(7.5, 2.8 * len(rows)), squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.6]},
    )  # fmt: skip
    for (label, (fan_out, fan_in)), (ax_map, ax_fan) in zip(
        rows.items(), axes, strict=True
    ):
        image = ax_map.imshow(fan_out, cmap="viridis", vmin=0, vmax=vmax)
        used = int((fan_out > 0).sum())
        ax_map.set_title(f"{label}\nkept fan-out per pixel ({used} used)", fontsize=9)
        ax_map.set_xticks([])
        ax_map.set_yticks([])
        fig.colorbar(image, ax=ax_map, fraction=0.046)
        order = np.sort(fan_in)[::-1]
        alive = order[order > 0]
        median = float(np.median(alive)) if alive.size else 0.0
        ax_fan.bar(np.arange(order.size), order, width=1.0)
        ax_fan.set_yscale("symlog", linthresh=1)
        ax_fan.set_xlabel("first-layer units, sorted")
        ax_fan.set_ylabel("kept fan-in")
        ax_fan.set_title(
            f"{alive.size} of {order.size} units alive, median fan-in {median:g}",
            fontsize=9,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ------------------------------------------------- structure-keeping shuffles


def _map_kernels(fn, key: jax.Array, mask: Mask, prunable: PrunableFn) -> Mask:
    """``fn(key_i, kernel)`` on each prunable leaf (its own key), which must
    be a 2-D dense kernel ``[in, out]``; other leaves are returned as they are."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(mask)
    out = []
    for i, (path, m) in enumerate(leaves):
        if not prunable(path, m):
            out.append(m)
            continue
        if m.ndim != 2:
            raise ValueError(
                f"{masks.leaf_name(path)} has shape {m.shape}: the "
                "structure-keeping shuffles take dense kernels [in, out] only."
            )
        out.append(fn(jax.random.fold_in(key, i), m))
    return jax.tree_util.tree_unflatten(treedef, out)


def _permute(key: jax.Array, m: jax.Array, axis: int) -> jax.Array:
    order = jnp.argsort(jax.random.uniform(key, m.shape), axis=axis)
    return jnp.take_along_axis(jnp.asarray(m), order, axis=axis)


def shuffle_keeping_fan_in(
    key: jax.Array, mask: Mask, *, prunable: PrunableFn = masks.is_prunable
) -> Mask:
    """Each unit keeps its number of inputs, drawn anew: every column of each
    dense kernel ``[in, out]`` is permuted on its own."""
    return _map_kernels(lambda k, m: _permute(k, m, 0), key, mask, prunable)


def shuffle_keeping_fan_out(
    key: jax.Array, mask: Mask, *, prunable: PrunableFn = masks.is_prunable
) -> Mask:
    """Each input keeps its number of outgoing weights, to new units: every row
    of each dense kernel ``[in, out]`` is permuted on its own."""
    return _map_kernels(lambda k, m: _permute(k, m, 1), key, mask, prunable)


def _swap_edges(key: jax.Array, m: jax.Array, num_swaps: int) -> np.ndarray:
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rng = np.random.default_rng(seed)
    m = np.array(m, dtype=bool)
    rows, cols = np.nonzero(m)
    n = rows.size
    if n < 2:
        return m
    picks = rng.integers(n, size=(num_swaps * n, 2))
    for a, b in picks:
        i, j, k, l = rows[a], cols[a], rows[b], cols[b]  # noqa: E741
        if i == k or j == l or m[i, l] or m[k, j]:
            continue
        m[i, j] = m[k, l] = False
        m[i, l] = m[k, j] = True
        cols[a], cols[b] = l, j
    return m


def rewire(
    key: jax.Array,
    mask: Mask,
    *,
    num_swaps: int = 10,
    prunable: PrunableFn = masks.is_prunable,
) -> Mask:
    """Degree-preserving rewiring: every input's fan-out and every unit's
    fan-in kept, the wiring between them drawn anew (host, NumPy).

    Each dense kernel gets ``num_swaps`` times its kept weights of edge swaps:
    two kept weights ``(i, j)`` and ``(k, l)`` become ``(i, l)`` and
    ``(k, j)`` when both are free. A kernel with no free pair (e.g. dense) is
    returned unchanged.
    """
    if not isinstance(num_swaps, int) or num_swaps < 1:
        raise ValueError(f"num_swaps must be an int >= 1; got {num_swaps!r}.")
    return _map_kernels(
        lambda k, m: jnp.asarray(_swap_edges(k, m, num_swaps)), key, mask, prunable
    )
