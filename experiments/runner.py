"""The study runner: a grid of methods x sparsities x seeds on one target.

A study config names a target (``model``, ``dataset``, the ``train`` recipe
and splits), the grid (``methods``, ``sparsities``, ``seeds``) and what the
methods need (scoring batches; ``source`` and the scorer settings for AutoS;
``irp`` for IRP of the target seed). ``run_study`` initialises each seed's
network once (``common.make_target``), builds every method's mask of that
same network (``methods.resolve``), trains it with the config's one recipe and
the seed's one data key, and appends the result to the run log. Rerunning
the same command resumes: finished runs are skipped, the AutoS learners are
loaded from the work directory instead of refitted, IRP runs continue from
their last checkpointed round.

Work directory: ``config.json`` (a directory of another config is refused),
``runs.jsonl`` (the run log), ``learners/`` and ``learners.json`` (the fitted
AutoSparse and its held-out evaluation), ``irp_seed<S>.jsonl`` and
``checkpoints/`` (IRP runs), and the report: ``table.md``, ``accuracy.png``,
``layer_density.png``. Each record carries its own prune and train seconds,
so the report's time survives an invocation killed mid-study.
"""

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections

from autosparse_jax import autosparse, checkpoint, data, irp, train
from experiments import common, methods, report

RunKey = tuple[str, float, int]


def run_key(method: str, sparsity: float, seed: int) -> RunKey:
    """The identity of one run in the log (sparsity rounded to 1e-6)."""
    return str(method), round(float(sparsity), 6), int(seed)


# ------------------------------------------------------------------ the log


class RunLog:
    """A resumable log of finished runs: one JSON object per line.

    A run killed while writing leaves at most a half-written last line; it is
    dropped (with a warning) on reading and cut off before the next append,
    so it is the only thing lost. Any other unreadable line is corruption,
    and reading refuses it, naming the line, instead of dropping the file.
    """

    def __init__(self, path: str):
        self.path = path

    def _lines(self) -> tuple[list[str], bool]:
        """The file's lines and whether its last line is complete."""
        if not os.path.exists(self.path):
            return [], True
        with open(self.path) as f:
            text = f.read()
        return text.splitlines(), text.endswith("\n") or not text

    def records(self) -> list[dict[str, Any]]:
        lines, complete = self._lines()
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1 and not complete:
                    warnings.warn(
                        f"{self.path}: dropped a half-written last line (a run "
                        "killed while saving); that run will be repeated.",
                        stacklevel=2,
                    )
                    continue
                raise ValueError(
                    f"{self.path}, line {i + 1}, is not valid JSON: the log is "
                    "corrupt. Restore it or delete that line; the other runs "
                    "in it are intact."
                ) from None
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Appends one record durably, first cutting a half-written tail."""
        lines, complete = self._lines()
        if not complete:
            with open(self.path, "r+") as f:
                f.truncate(len("".join(line + "\n" for line in lines[:-1])))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def done(self) -> set[RunKey]:
        return {run_key(r["method"], r["sparsity"], r["seed"]) for r in self.records()}


# ---------------------------------------------------------------- the study


class Learners(NamedTuple):
    """What AutoS methods use, from the labelled source run."""

    autos: autosparse.AutoSparse
    oracle: tuple[Any, list[float]]  # source run's round masks and sparsities
    report: dict[str, Any]  # held-out evaluation, allocation model


@dataclasses.dataclass
class Study:
    """What a method sees besides its target: config, recipe, data, learners."""

    config: ml_collections.ConfigDict
    workdir: str
    recipe: common.Recipe
    host_train: dict[str, Any]
    datasets: tuple[Any, Any]
    _learners: Learners | None = None
    _irp: dict[int, irp.IRPResult] = dataclasses.field(default_factory=dict)

    def learners(self) -> Learners:
        """The AutoS learners: loaded from the work directory, else fitted once."""
        if self._learners is None:
            self._learners = load_or_fit_learners(self.config, self.workdir)
        return self._learners

    def irp(self, target: common.Target) -> irp.IRPResult:
        """The target seed's IRP run (``methods.run_irp``), once per seed."""
        if target.seed not in self._irp:
            self._irp = {target.seed: methods.run_irp(target, self)}
        return self._irp[target.seed]


def load_or_fit_learners(config: ml_collections.ConfigDict, workdir: str) -> Learners:
    """``common.fit_learners`` once per work directory; later calls load it."""
    path = os.path.abspath(os.path.join(workdir, "learners"))
    report_path = os.path.join(workdir, "learners.json")
    if not (os.path.isdir(path) and os.path.exists(report_path)):
        tic = time.perf_counter()
        fitted, fit_report = common.fit_learners(config)
        fit_report["fit_s"] = time.perf_counter() - tic
        with open(report_path, "w") as f:
            json.dump(fit_report, f, indent=2)
        autosparse.save(path, fitted["autos"])
    with open(report_path) as f:
        fit_report = json.load(f)
    source = irp.load_labels(config.source)
    oracle = (source.masks[1:], [h["sparsity"] for h in source.metadata["history"]])
    return Learners(autosparse.load(path), oracle, fit_report)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the fix, on a grid the runner cannot run."""
    for name in config.methods:
        methods.resolve(name)  # raises on an unknown name
    bad = [s for s in config.sparsities if not 0.0 < s < 1.0]
    if bad:
        raise ValueError(
            f"config.sparsities must lie in (0, 1) (fractions of prunable weights "
            f"removed), got {bad}; dense is run once per seed by naming 'dense'."
        )
    if "irp" in config.methods and max(config.sparsities) > config.irp.final_sparsity:
        raise ValueError(
            f"IRP ends at {config.irp.final_sparsity} but the grid reaches "
            f"{max(config.sparsities)}; raise config.irp.final_sparsity "
            "(and num_rounds) or drop 'irp' from config.methods."
        )
    if any(m.startswith("irp+") for m in config.methods):
        meta = checkpoint.load_metadata(config.source)
        if (meta["model"], meta["dataset"]) != (config.model, config.dataset):
            raise ValueError(
                "the IRP-oracle allocation ('irp+...') needs the source run's "
                f"model and dataset ({meta['model']}, {meta['dataset']}); drop "
                "those methods for a transfer target."
            )


def planned(config: ml_collections.ConfigDict) -> list[RunKey]:
    """Every run of the grid, seed-major: dense first, then each sparsity.

    Sanity checks run only at ``config.sanity_min_sparsity`` and above.
    """
    floor = config.get("sanity_min_sparsity", 0.0)
    runs = []
    for seed in config.seeds:
        if "dense" in config.methods:
            runs.append(run_key("dense", 0.0, seed))
        for s in config.sparsities:
            for m in config.methods:
                if m == "dense" or (methods.is_sanity_check(m) and s < floor):
                    continue
                runs.append(run_key(m, s, seed))
    return runs


def train_run(
    study: Study, t: common.Target, method: str, sparsity: float, fn: methods.MaskFn
) -> dict[str, Any] | None:
    """One run's record: prune, train, summarise (``None``: undefined)."""
    tic = time.perf_counter()
    out = fn(t, sparsity, study)
    if out is None:
        return None
    mask, params = jax.block_until_ready(out)
    prune_s = time.perf_counter() - tic
    tic = time.perf_counter()
    _, history = common.train_masked(
        study.recipe, t.data_key, params, t.model_state, mask, *study.datasets,
        progress=False,
    )  # fmt: skip
    record = {"method": method, "sparsity": sparsity, "seed": t.seed}
    record.update(device=common.device_name(), prune_s=prune_s)
    record.update(common.summarize_training(mask, history, time.perf_counter() - tic))
    record["diverged"] = train.divergence(history)
    return record


def run_study(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    extra_methods: Mapping[str, methods.MaskFn] | None = None,
    progress: bool = True,
) -> str:
    """Runs (or resumes) every planned run, writes the report; returns the table.

    ``extra_methods`` adds methods by name (or replaces ``methods.resolve``'s).
    """
    from tqdm.auto import tqdm

    extra = dict(extra_methods or {})
    known = {m: extra[m] if m in extra else None for m in config.methods}
    check_config(_without(config, extra))
    common.prepare_workdir(workdir, config)
    log = RunLog(os.path.join(workdir, "runs.jsonl"))
    done = log.done()
    todo = [p for p in planned(config) if p not in done]
    if todo:
        host_train = data.load_dataset(config.dataset, config.train_split)
        test = data.load_dataset(config.dataset, config.test_split)
        recipe = common.make_recipe(config, len(host_train["label"]))
        datasets = (train.to_device(host_train), train.to_device(test))
        study = Study(config, workdir, recipe, host_train, datasets)
        bar = tqdm(total=len(todo), unit="run", disable=not progress)
        for seed in config.seeds:
            runs = [p for p in todo if p[2] == seed]
            if not runs:
                continue
            t = common.make_target(seed, recipe, host_train, config)
            for method, sparsity, _ in runs:
                fn = known[method] or methods.resolve(method)
                record = train_run(study, t, method, sparsity, fn)
                if record is not None:
                    log.append(record)
                    bar.set_postfix_str(_progress_line(record), refresh=False)
                bar.update()
        bar.close()
    return write_report(config, workdir)


def write_report(config: ml_collections.ConfigDict, workdir: str) -> str:
    """``table.md``, ``accuracy.png``, ``layer_density.png`` from the log."""
    order = {k: i for i, k in enumerate(planned(config))}
    records = sorted(
        (r for r in RunLog(os.path.join(workdir, "runs.jsonl")).records()
         if run_key(r["method"], r["sparsity"], r["seed"]) in order),
        key=lambda r: order[run_key(r["method"], r["sparsity"], r["seed"])],
    )  # fmt: skip
    learners_path = os.path.join(workdir, "learners.json")
    learned = None
    if os.path.exists(learners_path):
        with open(learners_path) as f:
            learned = json.load(f)
    text = report.markdown(
        records, title=config.get("title") or f"{config.model} on {config.dataset}",
        header=report.recipe_line(config, learned, records), methods=config.methods,
    )  # fmt: skip
    report.write_text(os.path.join(workdir, "table.md"), text)
    if records:
        report.plot_accuracy(
            records, os.path.join(workdir, "accuracy.png"), methods=config.methods,
            title=f"{config.model} on {config.dataset}, seeds {tuple(config.seeds)}",
        )  # fmt: skip
        if config.get("density_plot_sparsity"):
            report.plot_layer_density(
                records, config.density_plot_sparsity,
                os.path.join(workdir, "layer_density.png"), methods=config.methods,
            )  # fmt: skip
    return text


def _without(config, names: Sequence[str]) -> ml_collections.ConfigDict:
    """``config`` with methods ``names`` removed (they need no checking)."""
    checked = config.copy_and_resolve_references()
    checked.methods = tuple(m for m in config.methods if m not in names)
    return checked


def _progress_line(record: Mapping[str, Any]) -> str:
    acc = f"{100 * record['final_test_accuracy']:.2f}%"
    if record.get("diverged"):
        acc = f"diverged at epoch {record['diverged']['epoch']}"
    return f"{record['method']} {record['sparsity']:g} seed {record['seed']}: {acc}"


def main(argv: list[str] | None, *, default_config: str, description: str) -> None:
    """The command line of a grid study: ``--config``, ``--workdir``,
    ``--quick``, ``--source`` / ``--held-out`` (override the labelled runs)."""

    def add_arguments(parser):
        parser.add_argument("--source", default=None, help="overrides config.source")
        parser.add_argument("--held-out", default=None, help="overrides held_out")

    args, config, workdir = common.parse_args(
        description, default_config, argv, add_arguments
    )
    for name, value in (("source", args.source), ("held_out", args.held_out)):
        if value is not None:
            config[name] = value
    print(run_study(config, workdir))
    print(f"Wrote {workdir}/runs.jsonl, table.md, accuracy.png")
