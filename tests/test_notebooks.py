"""Executes the notebooks at tiny budgets so they cannot rot.

Each notebook runs in a fresh kernel with ``AUTOSPARSE_NOTEBOOK_TINY=1`` from
the repository root (as a reader would run it); any cell that raises fails the
test. The checks on the outputs are about plumbing (every method trained, masks
at the requested sparsity, the committed IRP labels read back), never about
accuracy at these budgets.

The selected notebooks run at the same time, one kernel each, in a module
fixture (a kernel keeps about one core busy); each test then checks its own
notebook's outputs, or re-raises what stopped it.
"""

import ast
import asyncio
import collections
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
IRP_LABELS = REPO / "experiments/results/irp_fmnist_lenet300/labels"


def _client(name: str):
    """A kernel client for ``notebooks/<name>`` with its code outputs cleared.

    The notebook on disk is not modified (it keeps its committed outputs).
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:  # outputs seen below are this run's, not committed ones
        if cell.cell_type == "code":
            cell.outputs = []
    return nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )


def _outputs(nb) -> tuple[str, int]:
    """An executed notebook's stdout text and image count."""
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            if out.output_type == "stream" and out.name == "stdout":
                texts.append(out.text)
            images += "image/png" in out.get("data", {})
    return "".join(texts), images


async def _execute_all(names: list[str]) -> dict:
    """Runs the notebooks concurrently; ``name -> (text, images) or exception``."""

    async def one(name):
        try:
            client = _client(name)
            await client.async_execute()  # raises CellExecutionError if a cell raised
            return _outputs(client.nb)
        except Exception as e:  # Re-raised by that notebook's test.
            return e

    results = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, results, strict=True))


NOTEBOOK_OF = {  # test -> the notebook it executes
    "test_quickstart_runs_in_tiny_mode": "01_quickstart.ipynb",
    "test_what_autos_learned_runs_in_tiny_mode": "02_what_autos_learned.ipynb",
    "test_your_model_runs_in_tiny_mode": "03_your_model.ipynb",
}


@pytest.fixture(scope="module")
def executed(request):
    """``name -> (text, images) or exception`` of every notebook whose test is
    selected and not skipped, all run at once in tiny mode."""
    names = [
        NOTEBOOK_OF[item.originalname]
        for item in request.session.items
        if item.module is request.module
        and item.originalname in NOTEBOOK_OF
        and not any(m.args[0] for m in item.iter_markers("skipif"))
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSPARSE_NOTEBOOK_TINY", "1")  # read by the kernels
        return asyncio.run(_execute_all(names))


def execute(name: str, executed: dict) -> tuple[str, int]:
    """``notebooks/<name>``'s text and image count from its tiny-mode run."""
    result = executed[name]
    if isinstance(result, BaseException):
        raise result
    return result


def table_rows(text: str, names: list[str]) -> dict[str, list[str]]:
    """The whitespace-split fields after each name, on the line it starts."""
    rows = {}
    for name in names:
        match = re.search(rf"^{re.escape(name)}  +(.*)$", text, re.MULTILINE)
        assert match, f"no table row for {name!r} in:\n{text}"
        rows[name] = match.group(1).split()
    return rows


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_quickstart_runs_in_tiny_mode(executed):
    text, images = execute("01_quickstart.ipynb", executed)
    assert "TINY=True" in text
    still_zero = re.search(
        r"^pruned weights still zero after training: (.*)$", text, re.M
    )
    assert still_zero and "False" not in still_zero.group(1), text
    assert images == 2  # the sample images and the per-layer densities
    methods = ["dense", "random", "snip", "autos_global", "autos_learned"]
    rows = table_rows(text, [*methods, "irp (source net)"])
    for name, (sparsity, *kept_percent, accuracy) in rows.items():
        assert len(kept_percent) == 3, name  # one column per prunable layer
        expected = 0.0 if name == "dense" else 0.98
        assert float(sparsity) == pytest.approx(expected, abs=1e-3), name
        assert 0.0 <= float(accuracy) <= 1.0, name


@pytest.mark.slow
@pytest.mark.fashion_mnist
@pytest.mark.skipif(not IRP_LABELS.exists(), reason=f"{IRP_LABELS} missing")
def test_what_autos_learned_runs_in_tiny_mode(executed):
    text, images = execute("02_what_autos_learned.ipynb", executed)
    assert "TINY=True" in text
    # (a) on the committed labels |w0| predicts survival; |g0| alone does not.
    spearman = table_rows(text, ["|w0|", "|g0|"])
    assert float(spearman["|w0|"][0]) > 0.5
    assert abs(float(spearman["|g0|"][0])) < 0.2
    # (c) every mask keeps IRP's count; IRP against itself has IoU 1.
    names = ["IRP", "|w0| (magnitude)", "AutoS, paper", "AutoS, global"]
    rows = table_rows(text, [*names, "AutoS, learned"])
    kept = {name: int(fields[0]) for name, fields in rows.items()}
    assert len(set(kept.values())) == 1, kept
    assert float(rows["IRP"][4]) == 1.0
    for name, fields in rows.items():
        assert 0.0 <= float(fields[4]) <= 1.0, name
    # (c) the masks' structure: one row per mask after its header, the same
    # number kept, at most that many on a path; plus the first-layer figure.
    block = text.split("units alive / inputs used / median fan-in\n")[1]
    shape_rows = [
        line.rsplit("   ", 1)[0].split()[-2:] for line in block.splitlines()[:3]
    ]
    assert len({kept for kept, _ in shape_rows}) == 1, shape_rows
    assert all(0 < int(on) <= int(kept) for kept, on in shape_rows), shape_rows
    # (d) the benchmark CSV is read whatever rows it has so far.
    num_runs = int(re.search(r"^(\d+) complete runs", text, re.MULTILINE).group(1))
    assert images == (4 if num_runs else 3)


@pytest.mark.slow
def test_your_model_runs_in_tiny_mode(executed):
    text, images = execute("03_your_model.ipynb", executed)
    assert "TINY=True" in text
    assert images == 2  # the example images, and accuracy with per-layer densities
    sparsities = ast.literal_eval(re.search(r"SPARSITIES=(\(.*?\))", text).group(1))
    num_prunable = int(re.search(r"^\S+ parameters, (\d+) prunable", text, re.M)[1])
    methods = ["random", "magnitude", "snip", "grasp", "synflow"]
    autos = ["autos_learned", "autos_global"]
    rows = collections.defaultdict(dict)  # method -> {sparsity: fields}
    for name, fields in re.findall(
        rf"^({'|'.join(['dense', *methods, *autos])})  +(.*)$", text, re.M
    ):
        sparsity, kept, *kept_percent, accuracy = fields.split()
        rows[name][round(float(sparsity), 3)] = (int(kept), kept_percent, accuracy)
    # Every method is trained at every requested sparsity (dense once).
    assert set(rows) == {"dense", *methods, *autos}, text
    assert list(rows["dense"]) == [0.0]
    for name in [*methods, *autos]:
        assert sorted(rows[name]) == sorted(sparsities), (name, text)
    for name, by_sparsity in rows.items():
        for sparsity, (kept, kept_percent, accuracy) in by_sparsity.items():
            # One column per prunable layer; exactly round((1 - s) N) weights kept.
            assert len(kept_percent) == 4, name
            assert kept == round((1 - sparsity) * num_prunable), (name, sparsity)
            assert 0.0 <= float(accuracy) <= 1.0, name
            if name in autos:  # AutoS never leaves a layer empty
                assert all(float(k) > 0 for k in kept_percent), (name, sparsity)
