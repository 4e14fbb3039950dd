"""Meta-gradient and paper-setting AutoS variants on validation seeds (5, 6).

LeNet-300-100 / MNIST-1D (study 3's target), 98 / 99 / 99.5 %, the study's
recipe; the methods of ``experiments.variants_metagrad``: ``prospr``,
``prospr_paths``, ``autos_metagrad_paths`` (direction 5), ``autos_gsum`` and
``autos_paperpreset`` (direction 2), and ``autos_global`` (not run on these
seeds before) beside the last two. SynFlow, ``synflow_ahead`` and
``autos_lookahead30_paths`` on the same seeds and recipe are in
``results/variants_mnist1d_lenet300`` and
``results/variants_ahead3_mnist1d_lenet300``. The scorers learn from the
LeNet-300-100 / Fashion-MNIST IRP run of seed 0 and are shared by the three
validation studies (``variant_scorers``).

    .venv/bin/python -m experiments.run_benchmark \\
        --config experiments/configs/variants_metagrad_mnist1d_lenet300.py \\
        --workdir experiments/results/variants_metagrad_mnist1d_lenet300
"""

import ml_collections

from experiments.configs import variants_mnist1d_lenet300

METHODS = (
    "prospr", "prospr_paths", "autos_metagrad_paths", "autos_gsum",
    "autos_paperpreset",
    "autos_global",  # the paper's AutoS as it stands, for the two above
)  # fmt: skip
SCORERS = "experiments/results/variants_metagrad_scorers"


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
    config = variants_mnist1d_lenet300.get_config(quick)
    config.methods = METHODS
    if not quick:  # a smoke test fits its own scorers in its work directory
        config.variant_scorers = SCORERS
    return config
