"""Records the masks of the pruning paths before the single-path API (run once).

Every criterion x allocation pair of the old API (``criteria.prune_at_init``
with ``scope``, ``allocation.allocate`` with a string allocation,
``scorer.autosparse_prune``) on LeNet-300-100 (init key 0) and a generated
batch, at 90 / 99 / 99.5 % sparsity. Writes ``legacy_masks.json``: per case
the SHA-256 of the packed prunable mask bits and the kept count per layer.
``tests/test_criteria.py`` checks that the new path reproduces every one. This
script needs the old API, so it runs only at the commit that added it.
"""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import allocation as al
from autosparse_jax import criteria, features, masks, models, scorer

SPARSITIES = (0.9, 0.99, 0.995)
OUT = pathlib.Path(__file__).with_name("legacy_masks.json")
ALLOCATION_MODEL = al.AllocationModel(
    weights=(0.3, -0.2, 0.0, 0.5, -0.4, 0.2, 0.1),
    slopes=(0.05, 0.1, 0.0, -0.1, 0.2, 0.0, -0.05),
    feature_mean=(5.0, 4.0, 0.0, 0.3, 0.5, 0.3, 0.3),
    feature_std=(1.0, 1.0, 1.0, 0.3, 0.4, 0.5, 0.5),
)


def setup():
    model = models.get_model("lenet300_100")
    params, state = models.init_params(jax.random.key(0), model, (28, 28, 1))
    k1, k2 = jax.random.split(jax.random.key(1))
    batch = {
        "image": jax.random.normal(k1, (2, 32, 28, 28, 1)),
        "label": jax.random.randint(k2, (2, 32), 0, 10),
    }
    return params, models.make_apply_fn(model, state), batch


def record(mask):
    leaves = [np.asarray(m) for _, m in masks._prunable_mask_leaves(mask, masks.is_prunable)]
    bits = np.packbits(np.concatenate([m.ravel() for m in leaves]))
    return {
        "sha256": hashlib.sha256(bits.tobytes()).hexdigest(),
        "kept": [int(m.sum()) for m in leaves],
    }


def test_scorer(normalization):
    fc = features.FeatureConfig(normalization=normalization)
    return scorer.init_scorer(
        jax.random.key(3),
        jnp.array([0.0, 0.0]),
        jnp.array([0.05, 0.01]),
        config=scorer.ScorerConfig(hidden_sizes=(8, 8)),
        feature_config=fc,
    )


def main():
    params, apply_fn, batch = setup()
    key = jax.random.key(2)
    out = {}
    for s in SPARSITIES:
        for name, crit in criteria.CRITERIA.items():
            rounds = criteria.DEFAULT_ROUNDS.get(name, 1)
            for scope in ("global", "layerwise"):
                mask = criteria.prune_at_init(
                    key, crit, params, batch, apply_fn=apply_fn, sparsity=s,
                    scope=scope, num_rounds=rounds,
                )
                out[f"prune_at_init/{name}/{scope}/{s}"] = record(mask)
            scores = criteria.compute_scores(key, crit, params, batch, apply_fn=apply_fn)
            snip = criteria.compute_scores(key, criteria.snip, params, batch, apply_fn=apply_fn)
            phi = al.layer_features(params, apply_fn=apply_fn, input_shape=(28, 28, 1))
            for allocation in al.ALLOCATIONS:
                mask = al.allocate(
                    scores, s, allocation=allocation, phi=phi, model=ALLOCATION_MODEL,
                    reference_scores=snip,
                )
                out[f"allocate/{name}/{allocation}/{s}"] = record(mask)
        for normalization in ("none", "layer"):
            sc = test_scorer(normalization)
            for allocation in (None, *scorer.ALLOCATIONS):
                for scope in ("global", "layerwise") if allocation is None else ("-",):
                    mask = scorer.autosparse_prune(
                        key, sc, params, batch, apply_fn=apply_fn, sparsity=s,
                        scope="global" if scope == "-" else scope,
                        allocation=allocation, allocation_model=ALLOCATION_MODEL,
                    )
                    out[f"autosparse_prune/{normalization}/{allocation}/{scope}/{s}"] = record(mask)
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(len(out), "cases")


if __name__ == "__main__":
    main()
