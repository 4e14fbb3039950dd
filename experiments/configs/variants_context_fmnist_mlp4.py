"""``variants_fmnist_mlp4`` with the context-feature AutoS variants (validation).

The same validation seeds (5, 6), grid and recipe; the methods of
``experiments.variants_context``: the within-layer scorer on
``"context"`` features under the learned allocation and on SynFlow's
paths, and on ``"context_lookahead"`` features (30 % look-ahead) on
SynFlow's paths. SynFlow, ``synflow_ahead`` and
``autos_lookahead30_paths`` are in the committed tables of the same seeds,
``variants_fmnist_mlp4`` and ``variants_ahead3_fmnist_mlp4``.

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_context_fmnist_mlp4.py \\
        --workdir experiments/results/variants_context_fmnist_mlp4
"""

import ml_collections

from experiments.configs import variants_fmnist_mlp4


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_fmnist_mlp4.get_config(quick)
    config.methods = (
        "autos_context", "autos_context_paths", "autos_context_lookahead30_paths",
    )  # fmt: skip
    return config
