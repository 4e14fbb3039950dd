"""Scoring-speed benchmark of AutoS: weights scored per second, and a ResNet-18.

Command (2 CPU cores here: about 2 minutes):

    .venv/bin/python -m experiments.bench_scorer

1. ``scorer.predict_flat`` (jitted) on ``[N, 2]`` random features for the
   ``"default"`` and ``"paper"`` presets (freshly initialised: speed does not
   depend on the trained values); N = 2**20 for the default, 2**16 for the
   paper preset, whose 1024 x 1024 hidden layer makes it about 1,000 times
   costlier per weight.
2. A CIFAR ResNet-18 (11.2M prunable weights): the jitted
   ``features.compute_features`` ("paper" features: ``g0`` on one batch of 32
   random 32x32x3 images, a speed input only), ``predict_scores`` with the
   default scorer, and the whole jitted ``criteria.prune_at_init`` with the
   AutoS criterion at 98% sparsity.
Every time is the median of repeats after a compiling warm-up call. Timings on
shared machines are noisy; compare numbers measured in one run.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, features, models
from autosparse_jax import scorer as scorer_lib

FEATURES = features.FeatureConfig()


def _median_seconds(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def _fresh_scorer(preset: str) -> scorer_lib.Scorer:
    fc = FEATURES
    width = features.num_features(fc.feature_set)
    return scorer_lib.init_scorer(
        jax.random.key(0),
        jnp.zeros(width),
        jnp.ones(width),
        config=scorer_lib.PRESETS[preset],
        feature_config=fc,
    )


def bench_presets(sizes: dict[str, int]) -> list[dict]:
    rows = []
    predict = jax.jit(
        functools.partial(scorer_lib.predict_flat, feature_config=FEATURES)
    )
    for preset, n in sizes.items():
        x = jax.random.normal(jax.random.key(1), (n, 2))
        seconds = _median_seconds(predict, _fresh_scorer(preset), x)
        rows.append(
            {"preset": preset, "weights": n, "seconds": seconds, "per_s": n / seconds}
        )
    return rows


def bench_resnet18(batch_size: int) -> dict:
    model = models.get_model("resnet18", num_classes=10)
    params, model_state = models.init_params(jax.random.key(0), model, (32, 32, 3))
    apply_fn = models.make_apply_fn(model, model_state)
    k1, k2 = jax.random.split(jax.random.key(2))
    batch = {
        "image": jax.random.normal(k1, (batch_size, 32, 32, 3)),
        "label": jax.random.randint(k2, (batch_size,), 0, 10),
    }
    autos = scorer_lib.as_criterion(_fresh_scorer("default"))
    key = jax.random.key(3)
    feats_fn = jax.jit(features.compute_features, static_argnames="apply_fn")
    feats = feats_fn(params, batch, apply_fn=apply_fn)
    predict = jax.jit(
        functools.partial(scorer_lib.predict_scores, feature_config=FEATURES)
    )
    prune = jax.jit(criteria.prune_at_init, static_argnames=("criterion", "apply_fn"))
    num = int(features.stack_leaves(params).shape[0])
    return {
        "model": "resnet18",
        "prunable_weights": num,
        "features_s": _median_seconds(
            lambda p, b: feats_fn(p, b, apply_fn=apply_fn), params, batch
        ),
        "predict_s": _median_seconds(predict, autos.scorer, feats),
        "autosparse_prune_s": _median_seconds(
            lambda k, p, b: prune(k, autos, p, b, apply_fn=apply_fn, sparsity=0.98),
            key,
            params,
            batch,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    device = f"{jax.devices()[0].device_kind}"
    print(f"device: {device}")
    for row in bench_presets({"default": 2**20, "paper": 2**16}):
        print(
            f"predict_flat  preset={row['preset']:<8} {row['weights']:>9,} weights "
            f"in {row['seconds']:.3f} s = {row['per_s'] / 1e6:.2f} M weights/s"
        )
    res = bench_resnet18(args.batch_size)
    print(
        f"resnet18 ({res['prunable_weights']:,} prunable weights): features "
        f"{res['features_s']:.2f} s, predict (default scorer) "
        f"{res['predict_s']:.2f} s, autosparse_prune end to end "
        f"{res['autosparse_prune_s']:.2f} s"
    )
    print(json.dumps({"device": device, **res}))


if __name__ == "__main__":
    main()
