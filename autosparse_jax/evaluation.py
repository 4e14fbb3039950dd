"""Host-side ranking metrics for a learned scorer against IRP survival labels."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

DEFAULT_SPARSITIES = (0.9, 0.95, 0.98, 0.99)


def _as_1d(x: npt.ArrayLike, name: str) -> np.ndarray:
    """``x`` as a non-empty, finite 1-D numpy array, or a ``ValueError`` naming it."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D over the prunable weights, got shape {arr.shape}; "
            "flatten and concatenate the per-leaf arrays first."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty; it needs one entry per prunable weight.")
    if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
        raise ValueError(
            f"{name} hold NaN or inf at {int((~np.isfinite(arr)).sum())} of "
            f"{arr.size} entries; rank metrics of non-finite values are undefined. "
            "Fix what produced them (a diverged scorer or criterion)."
        )
    return arr


def _as_pair(a: npt.ArrayLike, b: npt.ArrayLike, names: str) -> tuple[np.ndarray, ...]:
    """Two 1-D arrays of equal length; ``names`` is e.g. ``"scores, labels"``."""
    name_a, name_b = (n.strip() for n in names.split(","))
    a, b = _as_1d(a, name_a), _as_1d(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {a.shape[0]} "
            f"and {b.shape[0]}."
        )
    return a, b


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def spearman(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties share a rank).

    Args:
        scores: ``[N]`` predicted importance (higher means keep).
        labels: ``[N]`` target, e.g. IRP rounds survived.

    Returns:
        The correlation in [-1, 1], or ``nan`` (without a warning) when either
        input is constant, where it is undefined.

    Raises:
        ValueError: if the inputs are not 1-D, are empty, hold NaN or inf, or
            differ in length.

    Example:
        >>> spearman([0.1, 0.5, 0.3], [0, 2, 1])
        1.0
    """
    scores, labels = _as_pair(scores, labels, "scores, labels")
    if _is_constant(scores) or _is_constant(labels):
        return float("nan")
    rank_s = stats.rankdata(scores) - (scores.size + 1) / 2
    rank_l = stats.rankdata(labels) - (labels.size + 1) / 2
    den = np.sqrt(np.dot(rank_s, rank_s) * np.dot(rank_l, rank_l))
    return float(np.clip(np.dot(rank_s, rank_l) / den, -1.0, 1.0))


def kendall(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Kendall tau-b (ties-corrected) of ``[N]`` scores and labels, O(N log N).

    Returns ``nan`` when either input is constant; raises ``ValueError`` like
    ``spearman``.

    Example:
        >>> round(kendall([1, 2, 3, 4], [1, 3, 2, 4]), 4)
        0.6667
    """
    scores, labels = _as_pair(scores, labels, "scores, labels")
    if _is_constant(scores) or _is_constant(labels):
        return float("nan")
    return float(stats.kendalltau(scores, labels, variant="b").statistic)


def within_layer_spearman(
    scores: npt.ArrayLike, labels: npt.ArrayLike, layer_ids: npt.ArrayLike
) -> dict:
    """Spearman correlation inside each layer, and their size-weighted mean.

    The mean is over layers whose labels are not constant, weighted by layer size.
    A layer with constant scores (but varying labels) carries no ranking
    information: its per-layer value is ``nan`` and it counts as 0 in the mean.

    Args:
        scores: ``[N]`` predicted importance.
        labels: ``[N]`` target.
        layer_ids: ``[N]`` int, the layer of each weight.

    Returns:
        ``{"per_layer": {layer: rho}, "mean": float}``; ``mean`` is ``nan`` when
        every layer has constant labels.

    Raises:
        ValueError: if the inputs are not 1-D, are empty or differ in length.

    Example:
        >>> within_layer_spearman([1, 2, 9, 8], [0, 1, 0, 1], [0, 0, 1, 1])["mean"]
        0.0
    """
    scores, labels = _as_pair(scores, labels, "scores, labels")
    _, layer_ids = _as_pair(scores, layer_ids, "scores, layer_ids")
    per_layer, total, weight = {}, 0.0, 0
    for layer in np.unique(layer_ids):
        sel = layer_ids == layer
        rho = spearman(scores[sel], labels[sel])
        per_layer[int(layer)] = rho
        if not _is_constant(labels[sel]):
            total += (0.0 if np.isnan(rho) else rho) * int(sel.sum())
            weight += int(sel.sum())
    return {"per_layer": per_layer, "mean": total / weight if weight else np.nan}


def top_k_mask(scores: npt.ArrayLike, num_keep: int) -> np.ndarray:
    """``[N]`` bool mask of the ``num_keep`` highest ``[N]`` scores.

    Exactly ``num_keep`` entries are ``True``; ties go to the lower index. Raises
    ``ValueError`` unless ``0 <= num_keep <= N``.

    Example:
        >>> top_k_mask([1.0, 3.0, 3.0, 2.0], 2).tolist()
        [False, True, True, False]
    """
    scores = _as_1d(scores, "scores").astype(np.float64)
    if not 0 <= num_keep <= scores.size:
        raise ValueError(f"num_keep must be in [0, {scores.size}], got {num_keep}.")
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:num_keep]] = True
    return mask


def iou(mask_a: npt.ArrayLike, mask_b: npt.ArrayLike) -> float:
    """Intersection over union ``|a & b| / |a | b|`` of two ``[N]`` bool masks.

    Returns 1.0 when both masks are empty; raises ``ValueError`` on a length
    mismatch.

    Example:
        >>> iou([True, True, False], [True, False, True])
        0.3333333333333333
    """
    a, b = _as_pair(mask_a, mask_b, "mask_a, mask_b")
    a, b = a.astype(bool), b.astype(bool)
    union = int(np.sum(a | b))
    return 1.0 if union == 0 else int(np.sum(a & b)) / union


def irp_round_at(round_sparsities: Sequence[float], sparsity: float) -> int:
    """Index ``r`` of the IRP round whose sparsity is nearest ``sparsity``.

    Args:
        round_sparsities: ``[E]`` sparsity after each round ``r = 0..E-1``.
        sparsity: the requested sparsity, in [0, 1).

    Returns:
        The round index; the earlier round wins a tie.

    Raises:
        ValueError: if ``round_sparsities`` is empty or ``sparsity`` not in [0, 1).

    Example:
        >>> irp_round_at([0.2, 0.36, 0.49], 0.4)
        1
    """
    rs = _as_1d(np.asarray(round_sparsities, dtype=np.float64), "round_sparsities")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    return int(np.argmin(np.abs(rs - sparsity)))


def irp_mask(counts: npt.ArrayLike, round_index: int) -> np.ndarray:
    """The ``[N]`` bool IRP mask after round ``r``: ``counts >= r + 1``.

    ``counts`` is ``[N]`` int, the rounds each weight survived (0..E). Raises
    ``ValueError`` if ``round_index`` is negative.

    Example:
        >>> irp_mask([0, 1, 2, 3], 1).tolist()
        [False, False, True, True]
    """
    counts = _as_1d(counts, "counts")
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}.")
    return counts >= round_index + 1


def mask_iou_at(
    scores: npt.ArrayLike,
    counts: npt.ArrayLike,
    round_sparsities: Sequence[float],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
) -> dict[float, float]:
    """IoU of the predicted top-k mask with the IRP mask at each sparsity.

    For each requested sparsity the nearest IRP round ``r`` is taken; ``k`` is the
    number of weights its mask keeps, and the ``k`` highest scores are compared.

    Args:
        scores: ``[N]`` predicted importance.
        counts: ``[N]`` int, IRP rounds survived.
        round_sparsities: ``[E]`` sparsity after each IRP round.
        sparsities: the sparsities to evaluate at.

    Returns:
        ``{sparsity: iou}`` keyed by the requested sparsities.

    Raises:
        ValueError: on mismatched lengths or a sparsity outside [0, 1).

    Example:
        >>> mask_iou_at([0, 1, 2], [0, 1, 2], [1 / 3, 2 / 3], (0.6,))
        {0.6: 1.0}
    """
    scores, counts = _as_pair(scores, counts, "scores, counts")
    result = {}
    for s in sparsities:
        target = irp_mask(counts, irp_round_at(round_sparsities, s))
        result[float(s)] = iou(top_k_mask(scores, int(target.sum())), target)
    return result


def ranking_report(
    scores: npt.ArrayLike,
    counts: npt.ArrayLike,
    num_rounds: int,
    round_sparsities: Sequence[float],
    layer_ids: npt.ArrayLike,
    *,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
) -> dict[str, float]:
    """All ranking metrics of ``scores`` against IRP survival ``counts``.

    ``"mse"`` is ``mean((scores - counts / num_rounds) ** 2)``: meaningful only
    for a regressor trained on that target, and scale-dependent, unlike the rank
    metrics.

    Args:
        scores: ``[N]`` predicted importance.
        counts: ``[N]`` int, IRP rounds survived (0..num_rounds).
        num_rounds: ``E``, the number of IRP rounds.
        round_sparsities: ``[E]`` sparsity after each IRP round.
        layer_ids: ``[N]`` int, the layer of each weight.
        sparsities: the sparsities for the ``"iou@s"`` entries.

    Returns:
        ``{"mse", "spearman", "kendall", "spearman_within_layer", "iou@0.9", ...}``.

    Raises:
        ValueError: on mismatched lengths or ``num_rounds < 1``.

    Example:
        >>> ranking_report(s, c, 10, rs, ids)["spearman"]  # doctest: +SKIP
    """
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}.")
    scores, counts = _as_pair(scores, counts, "scores, counts")
    within = within_layer_spearman(scores, counts, layer_ids)["mean"]
    report = {
        "mse": float(np.mean((scores - counts / num_rounds) ** 2)),
        "spearman": spearman(scores, counts),
        "kendall": kendall(scores, counts),
        "spearman_within_layer": within,
    }
    for s, value in mask_iou_at(scores, counts, round_sparsities, sparsities).items():
        report[f"iou@{s:g}"] = value
    return report


def split_weights(
    key_seed: int, n: int, held_out_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random split of weight indices ``0..n-1`` into train and held-out parts.

    ``round(held_out_fraction * n)`` indices, drawn by
    ``np.random.default_rng(key_seed).permutation``, are held out.

    Returns:
        ``(train_idx, held_out_idx)``, sorted int arrays that partition ``0..n-1``.

    Raises:
        ValueError: if the fraction is not in (0, 1) or leaves a part empty.

    Example:
        >>> train_idx, held_out_idx = split_weights(0, 10, 0.2)
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(
            f"held_out_fraction must be in (0, 1), got {held_out_fraction}."
        )
    num_held = round(held_out_fraction * n)
    if not 0 < num_held < n:
        raise ValueError(
            f"held_out_fraction={held_out_fraction} of n={n} weights holds out "
            f"{num_held}; both parts must be non-empty."
        )
    perm = np.random.default_rng(key_seed).permutation(n)
    return np.sort(perm[num_held:]), np.sort(perm[:num_held])


def split_layers(
    layer_ids: npt.ArrayLike, held_out: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train_idx, held_out_idx)`` outside/inside ``held_out``.

    ``layer_ids`` is ``[N]`` int, the layer of each weight. Raises ``ValueError``
    if ``held_out`` is empty, names an unknown layer or holds out every layer.

    Example:
        >>> split_layers([0, 0, 1, 2], [1])
        (array([0, 1, 3]), array([2]))
    """
    layer_ids = _as_1d(layer_ids, "layer_ids")
    existing = np.unique(layer_ids).tolist()
    if len(held_out) == 0:
        raise ValueError("held_out is empty; name at least one layer to hold out.")
    unknown = sorted({int(x) for x in held_out} - set(existing))
    if unknown:
        raise ValueError(
            f"held_out names layers {unknown} that do not exist; layers are {existing}."
        )
    sel = np.isin(layer_ids, np.asarray(held_out))
    if sel.all():
        raise ValueError(
            f"held_out={list(held_out)} covers every layer; the training part "
            "would be empty."
        )
    return np.flatnonzero(~sel), np.flatnonzero(sel)
