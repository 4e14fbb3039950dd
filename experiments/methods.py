"""Every pruning method of the grid studies, by name: ``resolve(name)``.

A method is a function ``(target, sparsity, study) -> (mask, params)`` (or
``None`` where it is undefined at that sparsity): the mask of the target's
network and the params to train under it. Names:

* ``dense``; a criterion of ``criteria.CRITERIA`` (``random``, ``magnitude``,
  ``snip``, ``grasp``, ``synflow``): the published baselines' one global
  threshold (a layer may empty), SynFlow iterated ``DEFAULT_ROUNDS`` times;
* ``autos_global``: the paper's AutoS scorer under one global threshold;
  ``autos_learned``: the within-layer scorer under the learned allocation;
* ``irp``: the round of the target seed's own IRP run nearest the sparsity,
  rewound to the seed's initialisation;
* ``<allocation>+<ranking>``: counts per layer from an allocation (``global``,
  ``erk``, ``uniform``, ``snip``, ``learned``, or ``irp``: the source run's
  own per-layer densities) and the ranking inside each layer from a criterion
  or ``autos``;
* the AutoS variants and their references of ``experiments.variants``
  (``autos_paths``, ``autos_lookahead``, ...);
* ``<method>_shuffled`` (the mask permuted within every layer: random pruning
  at the method's per-layer densities) and ``<method>_reinit`` (the mask on
  freshly initialised weights): sanity checks of any method.

Composition, not flags: a study that needs another method passes its own
function to ``runner.run_study(..., methods={name: fn})``.
"""

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from autosparse_jax import allocation as al
from autosparse_jax import criteria, data, evaluation, irp, masks, models
from experiments import (
    common,
    variants,
    variants_allocation,
    variants_context,
    variants_metagrad,
)

MaskFn = Callable[[common.Target, float, Any], tuple[Any, Any] | None]
SANITY_CHECKS = ("shuffled", "reinit")
ALLOCATIONS = {
    "global": al.global_topk(),
    "erk": al.erk(),
    "uniform": al.uniform(),
    "snip": al.like(criteria.snip),
}
"""Allocations by name ("learned" and "irp" come from the source run)."""


def dense(t: common.Target, sparsity: float, study: Any) -> tuple[Any, Any]:
    del sparsity, study
    return masks.dense_mask(t.params), t.params


def baseline(name: str) -> MaskFn:
    """A criterion under the plain global threshold (``common.SCOPES``)."""
    criterion = criteria.CRITERIA[name]
    rounds = criteria.DEFAULT_ROUNDS.get(name, 1)

    def method(t, sparsity, study):
        del study
        mask = common.prune_at_init(
            common.criterion_key(t.prune_key, rounds),
            criterion,
            t.params,
            t.batches,
            apply_fn=t.apply_fn,
            sparsity=jnp.asarray(sparsity, jnp.float32),
            allocation=common.SCOPES["global"],
            num_rounds=rounds,
            schedule="geometric",
        )
        return mask, t.params

    return method


def _prune(t: common.Target, criterion, allocation, sparsity: float) -> Any:
    """One round of ``criterion`` under ``allocation`` (jitted; the same masks
    as the eager call, which compiled every operation on its own)."""
    return common.prune_at_init(
        t.prune_key, criterion, t.params, t.batches, apply_fn=t.apply_fn,
        sparsity=jnp.asarray(sparsity, jnp.float32), allocation=allocation,
    )  # fmt: skip


def autos_global(t, sparsity, study):
    """The paper's scorer, one global threshold that never empties a layer."""
    autos = study.learners().autos
    return _prune(t, autos.paper_criterion, al.global_topk(), sparsity), t.params


def autos_learned(t, sparsity, study):
    """The within-layer scorer under the learned layer allocation."""
    autos = study.learners().autos
    return _prune(t, autos.criterion, autos.allocation, sparsity), t.params


def irp_round(t, sparsity, study):
    """The target seed's IRP round nearest ``sparsity`` (run once per seed)."""
    result = study.irp(t)
    rounds = [h["sparsity"] for h in result.history]
    return result.masks[1 + evaluation.irp_round_at(rounds, sparsity)], t.params


def run_irp(t: common.Target, study: Any) -> irp.IRPResult:
    """IRP of the target seed with the recipe (checkpointed; resumable)."""
    config, recipe = study.config, study.recipe
    log = os.path.join(study.workdir, f"irp_seed{t.seed}.jsonl")
    return irp.irp(
        t.data_key,
        t.params,
        study.datasets[0],
        model=recipe.trained_model,
        optimizer=recipe.optimizer,
        config=irp.IRPConfig(**config.irp),
        eval_data=study.datasets[1],
        model_state=t.model_state,
        preprocess=data.preprocess_config(config.dataset),
        checkpoint_dir=os.path.abspath(
            os.path.join(study.workdir, "checkpoints", f"irp_seed{t.seed}")
        ),
        callback=lambda r, row: common.append_jsonl(log, {"seed": t.seed, **row}),
        progress=None,
    )


def irp_oracle(study: Any, sparsity: float) -> Any:
    """The source run's per-layer densities at its round nearest ``sparsity``
    as an allocation; ``None`` if no round is within ``oracle_tolerance``."""
    round_masks, round_sparsities = study.learners().oracle
    r = evaluation.irp_round_at(round_sparsities, sparsity)
    if abs(round_sparsities[r] - sparsity) > study.config.oracle_tolerance:
        return None
    density = al.layer_densities([round_masks[r]])[0]

    def oracle(scores, s, ctx):
        del scores
        kept, total = density * ctx.sizes, al.num_keep(s, ctx)
        return al.integer_counts(
            jnp.asarray(kept * total / kept.sum()), ctx.alive, total
        )

    return oracle


def allocated(allocation: str, ranking: str) -> MaskFn:
    """Counts from ``allocation``, the top ``ranking`` scores in each layer.

    AutoS ranks with the paper's scorer under the global threshold and with
    the within-layer scorer under every other allocation.
    """
    if allocation not in (*ALLOCATIONS, "learned", "irp"):
        raise ValueError(
            f"Unknown allocation {allocation!r}; choose from "
            f"{[*ALLOCATIONS, 'learned', 'irp']}."
        )
    if ranking not in (*criteria.CRITERIA, "autos"):
        raise ValueError(
            f"Unknown ranking {ranking!r}; choose from {[*criteria.CRITERIA, 'autos']}."
        )

    def method(t, sparsity, study):
        if allocation == "irp":
            alloc = irp_oracle(study, sparsity)
            if alloc is None:
                return None
        elif allocation == "learned":
            alloc = study.learners().autos.allocation
        else:
            alloc = ALLOCATIONS[allocation]
        if ranking == "autos":
            autos = study.learners().autos
            global_ = allocation == "global"
            criterion = autos.paper_criterion if global_ else autos.criterion
        else:
            criterion = criteria.CRITERIA[ranking]
        return _prune(t, criterion, alloc, sparsity), t.params

    return method


def sanity_check(check: str, base: MaskFn) -> MaskFn:
    """``base``'s mask shuffled within layers, or on re-initialised weights."""

    def method(t, sparsity, study):
        out = base(t, sparsity, study)
        if out is None:
            return None
        mask, params = out
        key = jax.random.fold_in(t.prune_key, int(1e6 * sparsity))
        if check == "shuffled":
            return criteria.shuffle_within_layers(key, mask), params
        recipe = study.recipe

        def init_fn(k):
            return models.init_params(k, recipe.model, recipe.input_shape)[0]

        return mask, criteria.reinitialize(key, params, mask, init_fn=init_fn)

    return method


METHODS: dict[str, MaskFn] = {
    "dense": dense,
    **{name: baseline(name) for name in criteria.CRITERIA},
    "autos_global": autos_global,
    "autos_learned": autos_learned,
    "irp": irp_round,
    **variants.VARIANTS,
    **variants_allocation.VARIANTS,
    **variants_context.VARIANTS,
    **variants_metagrad.VARIANTS,
}
"""The methods known by plain name (see the module docstring for the rest)."""


def resolve(name: str) -> MaskFn:
    """The method called ``name`` (plain, ``a+r`` or ``<method>_<check>``)."""
    if name in METHODS:
        return METHODS[name]
    base, _, check = name.rpartition("_")
    if base and check in SANITY_CHECKS:
        return sanity_check(check, resolve(base))
    if name.count("+") == 1:
        return allocated(*name.split("+"))
    raise ValueError(
        f"Unknown method {name!r}; use one of {sorted(METHODS)}, "
        "'<allocation>+<ranking>' (e.g. 'learned+autos') or "
        f"'<method>_<check>' with a check in {SANITY_CHECKS}."
    )


def needs_learners(name: str) -> bool:
    """Whether method ``name`` uses the AutoS learners of the source run."""
    allocation = name.split("+")[0] if "+" in name else ""
    return "autos" in name or allocation in ("learned", "irp")


def is_sanity_check(name: str) -> bool:
    return name.endswith(SANITY_CHECKS)
