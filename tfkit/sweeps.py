"""Grid sweeps: several ``tfkit train`` runs that differ in a few keys, the best one served.

Each trial is an ordinary run (``runs/<name>/<sweep>-<i>``, its own TensorBoard logs and
hparams, so the HParams tab compares the trials side by side). Trials are ranked on the
validation split by ``train.monitor`` at their best epoch, never on the test split: picking
on the test split would make its score an optimistic guess. Only the best trial is exported,
so TF Serving never picks up a trial that lost.

A sweep is the grid case of ``tfkit tune``'s search loop (:func:`tfkit.tuning.search`):
KerasTuner's ``GridSearchOracle`` proposes every combination once, in the grid's order.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tfkit.config import (
    Config,
    ConfigError,
    check_search,
    load_config,
    monitor_direction,
    parse_override,
)
from tfkit.publishing import NotPublished, export_run
from tfkit.training import RunResult, train
from tfkit.tuning import Dimension, as_yaml, search

log = logging.getLogger("tfkit")


@dataclass
class SweepResult:
    """What :func:`sweep` produced.

    ``trials``: one dict per trial in grid order (``overrides``, ``run_dir``, ``monitor``,
    ``value``: the monitor's validation value at the ``best_epoch``, and the test metrics);
    ``ranked``: the same, best first; ``best``: the winner's :class:`RunResult`;
    ``export_path``: its SavedModel version (None when export is off); ``summary``: the
    ranking as JSON, ``runs_dir/<name>/<sweep>.json`` beside the trials' folders.
    """

    trials: list[dict]
    ranked: list[dict]
    best: RunResult
    export_path: Path | None
    summary: Path


def parse_grid(texts) -> dict[str, list]:
    """``["train.learning_rate=[0.001, 0.003]", ...]`` -> ``{key: [values]}``.

    Raises:
        ConfigError: for a value that is not a non-empty YAML list, or a key given twice.
    """
    grid = {}
    for text in texts:
        keys, values = parse_override(text)
        key = ".".join(keys)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {text}: the values must be a YAML list, e.g. "
                              f"{key}=[1, 2]; got {values!r}.")
        if key in grid:
            raise ConfigError(f"--grid {text}: '{key}' is already in the grid.")
        grid[key] = values
    return grid


def trial_overrides(grid: dict[str, list]) -> list[list[str]]:
    """The grid's combinations as ``--set`` strings, the last key varying fastest."""
    return [[f"{key}={as_yaml(value)}" for key, value in zip(grid, combination)]
            for combination in itertools.product(*grid.values())]


def sweep(config: str | None, grid: dict[str, list], overrides=()) -> SweepResult:
    """Trains one run per combination of ``grid``'s values, ranks them on the validation
    split and exports the best.

    Args:
        config: a YAML path or preset name (None: the default preset).
        grid: ``{"section.key": [values]}``; every combination is one trial.
        overrides: ``--set`` strings applied to every trial.

    Returns:
        A :class:`SweepResult`.

    Raises:
        ConfigError: for a trial config that is not valid (all are checked before the first
            trial trains), a config without a validation split, or multi-worker training.

    Examples:
        >>> result = sweep("fine_foods_fasttext", {"train.learning_rate": [0.003, 0.01]},
        ...                ["train.epochs=1", "train.verbose=0", "data.limit=300"])
        >>> [trial["overrides"] for trial in result.trials]
        [['train.learning_rate=0.003'], ['train.learning_rate=0.01']]
        >>> result.best.run_dir in [trial["run_dir"] for trial in result.trials]
        True
    """
    if not grid:
        raise ConfigError("a sweep needs at least one --grid KEY=[values].")
    stamp = datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    trials = [list(overrides) + sets for sets in trial_overrides(grid)]
    configs = [load_config(config, sets) for sets in trials]  # every error before any run
    first = configs[0]
    check_search(first, "sweep")
    for key, values in grid.items():
        if len({as_yaml(v) for v in values}) < len(values):
            raise ConfigError(f"--grid {key}: a value is listed twice in {as_yaml(values)}.")
    if "train.monitor" in grid:
        raise ConfigError("--grid train.monitor: the trials are ranked by one train.monitor; "
                          "set it with --set.")
    export = first.export.enabled
    prefix = first.train.run_name or stamp  # trials <prefix>-1, -2, ...; summary <prefix>.json
    monitor = first.train.monitor
    by_sets = {tuple(sets[len(overrides):]): trial for sets, trial in zip(trials, configs)}
    results, rows = run_grid(grid, by_sets, prefix, monitor, first.train.seed)
    sign = 1 if monitor_direction(monitor) == "min" else -1  # lower loss, higher F1 first
    ranked = sorted(range(len(rows)), key=lambda i: _key(rows[i]["value"], sign))
    best = results[ranked[0]]
    export_path = None
    if export:
        try:
            export_path = export_run(best.run_dir)
        except NotPublished as exc:  # the winner failed the checks before serving
            log.warning("sweep: the best trial is not published: %s", exc)
    for i in ranked:
        log.info("sweep: %s %s %s %s, test accuracy %s: %s", "best" if i == ranked[0] else "    ",
                 rows[i]["run_dir"].name, monitor, _round(rows[i]["value"]),
                 _round(rows[i].get("test_accuracy")), " ".join(rows[i]["overrides"]))
    if export_path is not None:
        log.info("sweep: exported the best trial: %s", export_path)
    summary = write_summary(Path(first.train.runs_dir, first.name, f"{prefix}.json"), {
        "grid": grid, "overrides": list(overrides), "monitor": monitor,
        "ranked": [rows[i] for i in ranked],
        "export_path": None if export_path is None else str(export_path)})
    log.info("sweep: summary %s", summary)
    return SweepResult(rows, [rows[i] for i in ranked], best, export_path, summary)


def run_grid(grid: dict[str, list], configs: dict[tuple, Config], prefix: str, monitor: str,
             seed: int) -> tuple[list[RunResult], list[dict]]:
    """Trains ``configs`` (``{grid --set values: trial config}``) as KerasTuner's
    ``GridSearchOracle`` proposes them, through :func:`tfkit.tuning.search`: runs
    ``<prefix>-1``, ``-2``, ... in the grid's order. Returns their results and rows, in that
    order."""
    import keras_tuner

    dimensions = [Dimension(key, values=list(values), default=values[0])
                  for key, values in grid.items()]
    results, rows = {}, {}

    def run(hp, trial_id: str):
        sets = tuple(f"{d.key}={as_yaml(d.register(hp, d.key))}" for d in dimensions)
        trial, number = configs[sets], int(trial_id) + 1
        trial.export.enabled = False  # only the winner is exported
        trial.train.run_name = f"{prefix}-{number}"
        log.info("sweep: trial %d of %d: %s", number, len(configs), " ".join(sets))
        results[sets] = train(trial)
        rows[sets] = _row(list(sets), trial, results[sets])
        return rows[sets]["value"]

    hyperparameters = keras_tuner.HyperParameters()
    for dimension in dimensions:  # the whole grid known before the first trial
        dimension.register(hyperparameters, dimension.key)
    oracle = keras_tuner.oracles.GridSearchOracle(
        objective=keras_tuner.Objective(monitor, monitor_direction(monitor)),
        hyperparameters=hyperparameters, seed=seed)
    with tempfile.TemporaryDirectory() as state:  # a sweep does not resume: no state kept
        search(oracle, Path(state, "grid"), run, overwrite=True)
    order = [sets for sets in configs if sets in rows]  # the grid's order
    return [results[sets] for sets in order], [rows[sets] for sets in order]


def write_summary(path: Path, summary: dict) -> Path:
    """The sweep's ranking as JSON next to its trials' run folders (written to a partial
    file, then renamed: never half a summary)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    os.replace(partial, path)
    return path.resolve()


def _round(value):
    return None if value is None else round(value, 4)


def _key(value: float | None, sign: int) -> tuple:
    """Trials without a value (NaN loss) rank last."""
    missing = value is None or math.isnan(value)
    return (missing, 0.0 if missing else sign * value)


def _row(sets: list[str], config: Config, result: RunResult) -> dict:
    monitor = config.train.monitor
    values = result.history.get(monitor, [])
    best = result.metrics.get("best_epoch")
    value = values[best - 1] if best and len(values) >= best else None
    return {"overrides": sets, "run_dir": result.run_dir, "monitor": monitor, "value": value,
            "best_epoch": best,
            **{k: v for k, v in result.metrics.items()
               if k.startswith("test_") and isinstance(v, float)}}
