"""Iterative rewind pruning (IRP) from a config, with dense and random baselines.

The study behind ``experiments/run_irp.py``, importable (from a notebook, the
demo): ``run(config, workdir)`` does everything the script does after parsing
its arguments and returns an ``IRPStudy``.

``key = jax.random.key(config.seed)`` is split into init, score, data and IRP
keys (the first three as in ``common.make_target``, so at equal recipes the
dense and random rows repeat the PaI baselines'). ``irp.irp`` runs
``IRPConfig(**config.irp)`` with the config's one training recipe
(``common.make_recipe``; on CPU the model's fastest twin, ``common.cpu_twin``),
checkpointing every round to ``<workdir>/checkpoints``: running again on the
same work directory continues after the last complete round. Then dense and
random masks (at ``config.baselines.random_sparsities``, as the PaI baselines
draw them) are trained with the same recipe from the same initial params;
finished ones are skipped on restart.

Progress: a bar over all epochs of all rounds (a round is one jitted call,
so it advances by ``epochs_per_round`` when a round ends) and one log line per
round. Writes to the work directory: ``config.json`` (a directory holding
another config is refused), ``history.jsonl`` (one line per round),
``labels/`` (``irp.save_labels``: the AutoS training data),
``baselines.jsonl``, ``invocations.jsonl`` (wall time and compilations of each
run), ``summary.md`` (per-layer sparsity per round, timings, the comparison
with random) and ``irp_curve.png`` (test accuracy against density, log
scale). Timing: a round's ``seconds`` is one jitted program (score, prune,
rewind, train, evaluate); score + prune + rewind and the evaluation are timed
separately as jitted calls on the final round's arrays, and XLA compilations
are counted with a ``jax.monitoring`` listener.
"""

import collections
import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from autosparse_jax import criteria, data, irp, masks, models, train
from experiments import common

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_BACKEND_COMPILE = _COMPILE_EVENTS[-1]
_ROUND_PROGRAM = "run_round"  # the name of irp's jitted round function
_DENSITY_TICKS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


class IRPStudy(NamedTuple):
    """What ``run`` returns.

    Attributes:
      summary: the text of ``summary.md``.
      rows: one dict per round, as in ``history.jsonl``: ``round`` (0-based),
        ``sparsity`` (the round's mask, fraction of prunable weights removed),
        ``test_accuracy`` and ``test_loss`` (after the round's training: its
        final epoch), ``train_accuracy`` and ``train_loss`` (that last epoch's
        means), ``seconds`` (the round program), ``checkpoint_seconds`` and
        ``compile_seconds`` (``nan`` for a round whose line a killed run never
        wrote).
      labels_dir: ``<workdir>/labels``, the run saved by ``irp.save_labels``.
    """

    summary: str
    rows: list[dict[str, Any]]
    labels_dir: str


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a config whose rounds and baselines would train differently."""
    if config.train.num_epochs != config.irp.epochs_per_round:
        raise ValueError(
            f"train.num_epochs ({config.train.num_epochs}) must equal "
            f"irp.epochs_per_round ({config.irp.epochs_per_round}): every round "
            "and baseline trains with one run of the recipe; link them with "
            "config.train.num_epochs = config.irp.get_ref('epochs_per_round')."
        )


def write_jsonl(path: str, records: list[Mapping[str, Any]]) -> None:
    """Replaces ``path`` atomically with one JSON line per record."""
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------- the setup


class Setup(NamedTuple):
    """Everything built once: data, recipe (with its trained model), keys, params."""

    host_train: dict[str, np.ndarray]
    train_data: dict[str, jax.Array]
    test_data: dict[str, jax.Array]
    recipe: common.Recipe
    params: Any
    model_state: Any
    prune_key: jax.Array  # run_pai_baselines' prune key for the same seed
    data_key: jax.Array
    irp_key: jax.Array


def make_setup(
    config: ml_collections.ConfigDict,
    host_data: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
) -> Setup:
    """Loads the data (or takes ``host_data = (train, test)``) and builds the
    recipe and the params."""
    if host_data is None:
        host_data = (
            data.load_dataset(config.dataset, config.train_split),
            data.load_dataset(config.dataset, config.test_split),
        )
    host_train, host_test = host_data
    recipe = common.make_recipe(config, len(host_train["label"]))
    key = jax.random.key(config.seed)
    init_key, score_key, data_key, irp_key = jax.random.split(key, 4)
    del key
    params, model_state = models.init_params(init_key, recipe.model, recipe.input_shape)
    return Setup(
        host_train=host_train,
        train_data=train.to_device(host_train),
        test_data=train.to_device(host_test),
        recipe=recipe,
        params=params,
        model_state=model_state,
        prune_key=jax.random.split(score_key)[1],
        data_key=data_key,
        irp_key=irp_key,
    )


# ----------------------------------------------------------------------- IRP


@contextlib.contextmanager
def compile_events() -> Iterator[list[tuple[str, str, float]]]:
    """Records ``(stage, function name, seconds)`` of every XLA compilation.

    Stages are JAX's tracing, lowering and backend-compile events (public
    ``jax.monitoring`` listener; a persistent-cache hit still counts as a
    backend compile).
    """
    events: list[tuple[str, str, float]] = []

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        if event in _COMPILE_EVENTS:
            events.append((event, str(kwargs.get("fun_name", "?")), duration))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def log_line(row: Mapping[str, Any], num_rounds: int) -> str:
    """One line per round."""
    return (
        f"round {row['round'] + 1:2d}/{num_rounds}  sparsity {row['sparsity']:.4f}  "
        f"train loss {row['train_loss']:.4f}  "
        f"test acc {100 * row['test_accuracy']:.2f}%  {row['seconds']:.1f} s "
        f"(compile {row['compile_seconds']:.1f} s)  "
        f"checkpoint {row['checkpoint_seconds']:.2f} s"
        + ("  DIVERGED" if row.get("diverged") else "")
    )


def run_rounds(
    config, setup: Setup, workdir: str, *, progress: bool = True
) -> tuple[irp.IRPResult, list[dict[str, Any]], dict[str, Any]]:
    """``irp.irp`` with a bar over epochs, one log line and one JSON line per round.

    ``progress=False`` keeps the bar and the log lines off (the JSON lines are
    written either way).

    Returns the result; the history rows, each with ``compile_seconds`` (the
    round program's tracing, lowering and compiling in that round; ``nan`` for
    a round whose line a killed run never wrote); and ``{"compiles": backend
    compilations per jitted function during this call, "rounds_run": rounds
    it ran}``.
    """
    from tqdm.auto import tqdm

    irp_config = irp.IRPConfig(**config.irp)
    path = os.path.join(workdir, "history.jsonl")
    epochs, num_rounds = irp_config.epochs_per_round, irp_config.num_rounds
    bar = tqdm(
        total=num_rounds * epochs,
        unit="epoch",
        desc="IRP",
        disable=None if progress else True,
    )
    seen, rounds_run = 0, 0
    with compile_events() as events:

        def callback(r: int, row: dict[str, float]) -> None:
            nonlocal seen, rounds_run
            new = [e[2] for e in events[seen:] if _ROUND_PROGRAM in e[1]]
            row = {**row, "compile_seconds": sum(new)}
            seen, rounds_run = len(events), rounds_run + 1
            common.append_jsonl(path, row)
            bar.set_postfix_str(
                f"round {r + 1}/{num_rounds}, sparsity {row['sparsity']:.4f}, "
                f"test acc {100 * row['test_accuracy']:.2f}%",
                refresh=False,
            )
            bar.update((r + 1) * epochs - bar.n)  # the round program is one call
            if progress:
                tqdm.write(log_line(row, num_rounds))

        result = irp.irp(
            setup.irp_key,
            setup.params,
            setup.train_data,
            model=setup.recipe.trained_model,
            optimizer=setup.recipe.optimizer,
            config=irp_config,
            eval_data=setup.test_data,
            model_state=setup.model_state,
            preprocess=data.preprocess_config(config.dataset),
            checkpoint_dir=os.path.abspath(os.path.join(workdir, "checkpoints")),
            callback=callback,
            progress=False,
        )
    bar.close()
    logged = {r["round"]: r for r in common.read_jsonl(path)}
    missing = {"compile_seconds": float("nan")}
    rows = [logged.get(h["round"], {**h, **missing}) for h in result.history]
    write_jsonl(path, rows)
    compiles = collections.Counter(e[1] for e in events if e[0] == _BACKEND_COMPILE)
    return result, rows, {"compiles": dict(compiles), "rounds_run": rounds_run}


# ----------------------------------------------------------------- timings


def time_overheads(config, setup: Setup, result: irp.IRPResult) -> dict[str, float]:
    """Seconds of a round's score + prune + rewind, and of its evaluation.

    Both are timed as separate jitted calls on the final round's arrays (the
    round program fuses them with training, so they cannot be timed inside it).
    """
    model, state = setup.recipe.trained_model, result.final_state
    criterion = criteria.CRITERIA[config.irp.criterion]

    def prune_rewind(key, params, model_state, rewind_params, mask, batch):
        def apply_fn(p, x):
            return model.apply({"params": p, **model_state}, x, train=False)

        scores = criteria.compute_scores(
            key, criterion, params, batch, apply_fn=apply_fn, mask=mask
        )
        new_mask = masks.mask_from_scores(
            scores, config.irp.final_sparsity, scope=config.irp.scope, mask=mask
        )
        return new_mask, masks.apply_mask(rewind_params, new_mask)

    fn = jax.jit(prune_rewind)
    args = (setup.prune_key, state.params, state.model_state, result.rewind_params)
    batch = common.score_batches(
        setup.prune_key,
        setup.host_train,
        config.dataset,
        config.irp.num_score_batches,
        config.irp.batch_size,
    )
    args += (state.mask, batch)
    evaluate = setup.recipe.evaluate
    return {
        "prune_rewind_s": common.timed(lambda: fn(*args)),
        "eval_s": common.timed(lambda: evaluate(state, setup.test_data), repeats=3),
    }


# ----------------------------------------------------------------- baselines


def baseline_mask(setup: Setup, method: str, sparsity: float, scope: str):
    """Dense, or ``run_pai_baselines``' random mask for the same seed."""
    if method == "dense":
        return masks.dense_mask(setup.params)
    apply_fn = models.make_apply_fn(setup.recipe.model, setup.model_state)
    return criteria.prune_at_init(
        common.criterion_key(setup.prune_key, 1),
        criteria.random,
        setup.params,
        None,  # random reads no data
        apply_fn=apply_fn,
        sparsity=sparsity,
        allocation=common.SCOPES[scope],
    )


def train_baseline(setup: Setup, mask) -> dict[str, Any]:
    """Trains ``mask`` from the initial params with the recipe and the data key."""
    tic = time.perf_counter()
    _, history = common.train_masked(
        setup.recipe,
        setup.data_key,
        setup.params,
        setup.model_state,
        mask,
        setup.train_data,
        setup.test_data,
    )
    return common.summarize_training(mask, history, time.perf_counter() - tic)


def run_baselines(
    config, setup: Setup, workdir: str, progress: bool = True
) -> list[dict[str, Any]]:
    """Dense and random masks, trained once each (``baselines.jsonl``).

    Returns the records in planned order (dense, then random at each of
    ``config.baselines.random_sparsities``); those already in the file are
    kept, not retrained. ``progress``: one line before and after each training.
    """
    path = os.path.join(workdir, "baselines.jsonl")
    planned = [("dense", 0.0)]
    planned += [("random", float(s)) for s in config.baselines.random_sparsities]
    done = {(r["method"], r["sparsity"]): r for r in common.read_jsonl(path)}
    for method, sparsity in planned:
        if (method, sparsity) in done:
            continue
        if progress:
            print(f"{method} at sparsity {sparsity}: {config.train.num_epochs} epochs")
        mask = baseline_mask(setup, method, sparsity, config.irp.scope)
        record = {"method": method, "sparsity": sparsity, "seed": config.seed}
        record.update(train_baseline(setup, mask))
        common.append_jsonl(path, record)
        done[(method, sparsity)] = record
        if progress:
            print(
                f"{method} at sparsity {sparsity}: final test acc "
                f"{100 * record['final_test_accuracy']:.2f}% "
                f"({record['train_s']:.0f} s)"
            )
    return [done[k] for k in planned]


# ------------------------------------------------------------------- summary


def _layers(sparsity_by_layer: Mapping[str, float]) -> str:
    """``0.9943 / 0.9652 / 0.5310``; an emptied layer is flagged."""
    return " / ".join(
        f"{s:.4f}" + (" EMPTY" if s == 1.0 else "") for s in sparsity_by_layer.values()
    )


def round_table(rows, result: irp.IRPResult, overheads: Mapping[str, float]) -> str:
    """Rounds x (accuracy, per-layer sparsity, timings) as markdown."""
    by_layer = [masks.sparsity_by_layer(m) for m in result.masks[1:]]
    names = " / ".join(n.removesuffix("/kernel") for n in by_layer[0])
    pr, ev = overheads["prune_rewind_s"], overheads["eval_s"]
    lines = [
        f"| round | sparsity | test acc % | train loss | sparsity per layer ({names}) "
        "| round s | compile s | train s (est.) | checkpoint s "
        "| (prune+rewind+checkpoint) / train |",
        "|" + "---|" * 10,
    ]
    for row, layers in zip(rows, by_layer, strict=True):
        compile_s = row["compile_seconds"]
        train_s = row["seconds"] - np.nan_to_num(compile_s) - pr - ev
        overhead = pr + row["checkpoint_seconds"]
        lines.append(
            f"| {row['round']} | {row['sparsity']:.4f} "
            f"| {100 * row['test_accuracy']:.2f} | {row['train_loss']:.4f} "
            f"| {_layers(layers)} | {row['seconds']:.2f} | {compile_s:.2f} "
            f"| {train_s:.2f} | {row['checkpoint_seconds']:.2f} "
            f"| {overhead:.2f} s / {train_s:.2f} s = {100 * overhead / train_s:.1f}% |"
        )
    return "\n".join(lines)


def baseline_table(baselines: list[dict[str, Any]]) -> str:
    lines = [
        "| method | sparsity | final test acc % | best test acc % (selected on test) "
        "| sparsity per layer | train s |",
        "|" + "---|" * 6,
    ]
    lines += [
        f"| {b['method']} | {b['measured_sparsity']:.4f} "
        f"| {100 * b['final_test_accuracy']:.2f} "
        f"| {100 * b['best_test_accuracy_selected_on_test']:.2f} "
        f"| {_layers(b['sparsity_by_layer'])} | {b['train_s']:.1f} |"
        for b in baselines
    ]
    return "\n".join(lines)


def comparison_table(rows, baselines: list[dict[str, Any]]) -> str:
    """Each random baseline against the IRP round of nearest sparsity."""
    lines = [
        "| sparsity | IRP round (its sparsity) | IRP test acc % | random test acc % "
        "| IRP - random |",
        "|" + "---|" * 5,
    ]
    for b in baselines:
        if b["method"] != "random":
            continue
        row = min(rows, key=lambda r: abs(r["sparsity"] - b["sparsity"]))
        irp_acc, rand_acc = 100 * row["test_accuracy"], 100 * b["final_test_accuracy"]
        lines.append(
            f"| {b['sparsity']} | {row['round']} ({row['sparsity']:.4f}) "
            f"| {irp_acc:.2f} | {rand_acc:.2f} | {irp_acc - rand_acc:+.2f} |"
        )
    return "\n".join(lines)


def invocation_lines(invocations: list[dict[str, Any]]) -> str:
    """One markdown bullet per invocation of the script on this work directory."""
    lines = []
    for k, inv in enumerate(invocations):
        compiles = inv["compiles"]
        rounds = sum(n for f, n in compiles.items() if _ROUND_PROGRAM in f)
        other = {f: n for f, n in compiles.items() if _ROUND_PROGRAM not in f}
        others = sum(other.values())
        lines.append(
            f"- invocation {k + 1}: {inv['rounds_run']} round(s) run, round program "
            f"`jit(run_round)` compiled {rounds} time(s); {others} other small "
            f"compilations during `irp.irp` ({', '.join(sorted(other))}); wall "
            f"time {inv['wall_s']:.0f} s (data, IRP, timings, baselines) on "
            f"{inv['device']}"
        )
    return "\n".join(lines)


def baseline_sections(rows, baselines: list[dict[str, Any]]) -> str:
    """The summary's two baseline sections (empty without baselines)."""
    if not baselines:
        return ""
    return f"""
## Baselines (same recipe, seed, initial params and data order)

{baseline_table(baselines)}

## IRP against random pruning at the same sparsity

{comparison_table(rows, baselines)}
"""


def format_summary(config, rows, result, baselines, overheads, invocations) -> str:
    """The whole ``summary.md`` (without baselines: no baseline sections)."""
    tc, ic = config.train, config.irp
    rounds_s = sum(r["seconds"] for r in rows)
    ckpt_s = sum(r["checkpoint_seconds"] for r in rows)
    return f"""# IRP: {config.model} on {config.dataset}, seed {config.seed}

{ic.num_rounds} rounds, {ic.schedule} schedule to sparsity {ic.final_sparsity}, \
{ic.criterion} criterion, {ic.scope} scope, reset {ic.reset}, rewind step \
{ic.rewind_step}. Every round and every baseline trains {ic.epochs_per_round} \
epochs: SGD momentum {tc.momentum} (Nesterov {tc.nesterov}), lr \
{tc.learning_rate} {tc.schedule}, weight decay {tc.weight_decay}, batch \
{tc.batch_size}, split `{config.train_split}`. Accuracy: final-epoch test \
accuracy after each round's training.

Time: {rounds_s:.0f} s in rounds + {ckpt_s:.0f} s in checkpoints. Invocations \
(compilations counted from backend-compile events of a `jax.monitoring` \
listener around `irp.irp`):

{invocation_lines(invocations)}

## IRP rounds

{round_table(rows, result, overheads)}

Timing: `round s` is one call of the jitted round program (score, prune, \
rewind, train, evaluate), including its tracing and compilation in the first \
round of an invocation (`compile s`). Score + prune + rewind \
({1000 * overheads["prune_rewind_s"]:.1f} ms) and evaluation \
({1000 * overheads["eval_s"]:.1f} ms) were timed as separate jitted calls on the \
final round's arrays (median of repeats) and subtracted to estimate `train s`, \
the same estimate for every round.
{baseline_sections(rows, baselines)}"""


def plot(config, rows, baselines, path: str) -> None:
    """IRP test accuracy against density (log x, sparsest right), baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    density = [1 - r["sparsity"] for r in rows]
    acc = [100 * r["test_accuracy"] for r in rows]
    ax.plot(density, acc, marker="o", label=f"IRP ({config.irp.criterion})")
    for b in baselines:
        acc_b = 100 * b["final_test_accuracy"]
        if b["method"] == "dense":
            ax.axhline(acc_b, color="black", linestyle="--", label="dense")
        else:
            ax.plot(1 - b["measured_sparsity"], acc_b, "x", color="C3", ms=9)
    if any(b["method"] == "random" for b in baselines):
        ax.plot([], [], "x", color="C3", label="random (same recipe)")
    ax.axhline(10.0, color="gray", linestyle=":", label="chance (10 classes)")
    ax.set_xscale("log")
    ticks = [t for t in _DENSITY_TICKS if min(density) / 1.2 <= t <= 1.0]
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of prunable weights kept, log scale)")
    ax.set_ylabel("final-epoch test accuracy (%)")
    ax.set_title(
        f"IRP, {config.model} / {config.dataset}: {config.irp.num_rounds} rounds x "
        f"{config.irp.epochs_per_round} epochs, seed {config.seed}"
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def save_labels(config, setup: Setup, result: irp.IRPResult, path: str) -> None:
    """Writes the run as AutoS training data (``irp.save_labels``), once."""
    if os.path.exists(path):
        return
    irp.save_labels(
        path,
        result,
        config=irp.IRPConfig(**config.irp),
        init_params=setup.params,
        init_model_state=setup.model_state,
        metadata={
            "model": config.model,
            "dataset": config.dataset,
            "train_split": config.train_split,
            "seed": config.seed,
        },
    )


# ----------------------------------------------------------------------- run


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    baselines: bool = True,
    progress: bool = True,
) -> IRPStudy:
    """The whole study in ``workdir`` (resumable); see the module docstring.

    Args:
      config: an IRP study config (``experiments/configs/irp_*.py``); with
        ``baselines`` it needs ``config.baselines.random_sparsities``.
      workdir: the work directory (created; one holding another config is
        refused).
      baselines: also train the dense and random baselines (``baselines.jsonl``
        and their sections of the summary); the demo skips them.
      progress: the bar over epochs and one line per round and baseline.
    """
    tic = time.perf_counter()
    check_config(config)
    common.prepare_workdir(workdir, config)
    setup = make_setup(config)
    result, rows, stats = run_rounds(config, setup, workdir, progress=progress)
    labels_dir = os.path.join(workdir, "labels")
    save_labels(config, setup, result, labels_dir)
    overheads = time_overheads(config, setup, result)
    done = run_baselines(config, setup, workdir, progress) if baselines else []
    path = os.path.join(workdir, "invocations.jsonl")
    common.append_jsonl(
        path,
        {"device": common.device_name(), "wall_s": time.perf_counter() - tic, **stats},
    )
    summary = format_summary(
        config, rows, result, done, overheads, common.read_jsonl(path)
    )
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(summary)
    plot(config, rows, done, os.path.join(workdir, "irp_curve.png"))
    return IRPStudy(summary=summary, rows=rows, labels_dir=labels_dir)
