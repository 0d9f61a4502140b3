"""``tfkit tune``: a hyperparameter search on KerasTuner, where every trial is a tfkit run.

KerasTuner's oracle (Bayesian optimisation by default, or random search) proposes values for a
search space over the model family (``text_linear``, ``text_fasttext``, ``text_cnn``,
``text_bilstm``, ``text_transformer``, and ``han`` where the texts have several sentences; for
arrays ``image_cnn`` and ``sequence_lstm``), their key parameters, ``data.max_len``, and
anything ``tune.space`` adds. Each proposal becomes ``--set`` values on the config and trains as
an ordinary run (``runs/<name>/<tune>-<trial>``: its TensorBoard logs and hyperparameters, so
TensorBoard's HParams tab lays the trials side by side), ranked by its best epoch's score on the
validation split (``val_accuracy``; ``val_micro_f1`` for several labels per example;
``val_loss`` for multi-task models). Only the best trial is exported, after the search, with the
usual checks before serving.

The search stops when the time budget (``--budget 15m``) cannot fit another trial of the mean
length so far, or after ``tune.max_trials``. Killed at any moment, the same command (or
``tfkit tune --resume``) continues: KerasTuner reloads its oracle from the tune folder, finished
trials are not repeated, and an interrupted trial's run resumes from its backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from tfkit.config import (
    Config,
    ConfigError,
    check_search,
    config_from_dict,
    load_config,
    monitor_direction,
    parse_budget,
    save_config,
    score_monitor,
    space_entry,
)
from tfkit.errors import excerpt

log = logging.getLogger("tfkit")

# the families searched for each kind of input, and each family's own parameters:
# {config key: [values]} (a choice) or {"min", "max", "sampling"} (a range)
FAMILIES = {
    "text": ("text_linear", "text_fasttext", "text_cnn", "text_bilstm", "text_transformer"),
    "documents": ("han",),  # added for texts of several sentences
    "image": ("image_cnn",),
    "sequence": ("sequence_lstm",),
}
FAMILY_SPACE = {
    "text_linear": {"model.params.l2": {"min": 1e-8, "max": 1e-5, "sampling": "log"},
                    "model.params.ngrams": [1, 2]},
    "text_fasttext": {"model.params.embedding_dim": [32, 64, 128],
                      "model.params.head_dropout": [0.0, 0.3], "model.params.ngrams": [1, 2],
                      "data.max_len": ["auto", 512]},
    "text_cnn": {"model.params.filters": [64, 128], "model.params.dropout": [0.3, 0.5],
                 "data.max_len": ["auto", 512]},
    "text_bilstm": {"model.params.units": [32, 64], "model.params.head_dropout": [0.0, 0.3],
                    "data.max_len": ["auto", 256]},
    "text_transformer": {"model.params.embedding_dim": [32, 64],
                         "model.params.num_layers": [1, 2], "model.params.dropout": [0.1, 0.3],
                         "data.max_len": ["auto", 256]},
    "han": {"model.params.word_units": [25, 50], "model.params.dropout": [0.0, 0.3]},
    "image_cnn": {"model.params.dense_units": [64, 128], "model.params.dropout": [0.0, 0.3],
                  "model.params.batch_norm": [True, False]},
    "sequence_lstm": {"model.params.hidden_size": [64, 128], "model.params.num_layers": [1, 2]},
    # models that wrap a text encoder: which encoder (unless model.params.encoder_params
    # configures one), and their own layers
    "text_table": {"model.params.encoder": ["text_fasttext", "text_cnn", "text_bilstm"],
                   "model.params.table_units": [16, 32, 64]},
    "multitask": {"model.params.encoder": ["text_bilstm", "text_fasttext", "text_cnn"]},
}
# every trial: the learning rate from a range test on its own model (tfkit.lr_range), unless
# tune.space says otherwise
COMMON_SPACE = {"train.learning_rate": ["auto"]}


@dataclass
class Dimension:
    """One searched config key: a choice of ``values``, or a ``low``..``high`` range
    (``log``: sampled on a log scale)."""

    key: str
    values: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    default: object = None  # the first trial's value (the model's own default, when searched)

    @classmethod
    def parse(cls, key: str, spec) -> Dimension:
        """``[values]`` or ``{min, max, sampling: log|linear}`` (:func:`tfkit.config.space_entry`).

        Raises:
            ConfigError: naming the key and what is allowed.
        """
        return cls(key, **space_entry(key, spec))

    def samples(self) -> list:
        """Values that stand for the dimension when its settings are checked."""
        return self.values if self.values is not None else [self.low, self.high]

    def register(self, hp, name: str):
        """The KerasTuner hyperparameter (named ``name``) and its value for this trial."""
        sampling = "log" if self.log else "linear"
        if self.values is not None:
            default = self.default if self.default in self.values else None
            if len({type(v) for v in self.values}) == 1 and type(self.values[0]) in (
                    int, float, str):
                return hp.Choice(name, self.values, default=default)
            # KerasTuner's choices hold one type of int, float or str (booleans come back as
            # 0 and 1): mixed values (auto or 512), booleans, lists and mappings travel as YAML
            value = hp.Choice(name, [as_yaml(v) for v in self.values],
                              default=None if default is None else as_yaml(default))
            return None if value is None else yaml.safe_load(value)  # None: another family's
        inside = isinstance(self.default, (int, float)) and self.low <= self.default <= self.high
        if isinstance(self.low, int) and isinstance(self.high, int):
            return hp.Int(name, self.low, self.high, sampling=sampling,
                          default=int(self.default) if inside else None)
        return hp.Float(name, float(self.low), float(self.high), sampling=sampling,
                        default=float(self.default) if inside else None)


@dataclass
class SearchSpace:
    """The families searched, each with its dimensions (its own plus the common ones)."""

    families: dict  # model name -> [Dimension]

    def overrides(self, hp) -> list[str]:
        """Registers the space with KerasTuner's ``hp`` (each family's parameters under a
        conditional scope of ``model.name``) and returns this trial's ``--set`` values."""
        family = hp.Choice("model.name", list(self.families)) if len(self.families) > 1 \
            else next(iter(self.families))
        sets = [f"model.name={family}"]
        for name, dimensions in self.families.items():
            with hp.conditional_scope("model.name", [name]) if len(self.families) > 1 \
                    else contextlib.nullcontext():
                for dimension in dimensions:
                    value = dimension.register(hp, f"{name}:{dimension.key}")
                    if name == family:
                        sets.append(f"{dimension.key}={as_yaml(value)}")
        return sets


def as_yaml(value) -> str:
    """``value`` as a ``--set`` value writes it (flow-style YAML, one line)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def objective_of(config: Config) -> tuple[str, str]:
    """The validation score trials are ranked by (:func:`tfkit.config.score_monitor`), and
    its direction."""
    monitor = score_monitor(config.data)
    return monitor, monitor_direction(monitor)


def search_space(config: Config, data_kind: str, documents: bool = False) -> SearchSpace:
    """The search space for ``config``: ``tune.models`` (default: the families for
    ``data_kind``, plus ``han`` when ``documents``) with their parameters, the common ones and
    ``tune.space`` on top. A model wrapping a text encoder (``multitask``, ``text_table``) is
    searched over its encoder (unless ``model.params.encoder_params`` configures one) and its
    own layers, starting from the config's values; a pretrained backbone as it is, over the
    common keys and ``tune.space``.

    Raises:
        ConfigError: for a family that does not fit the data, a key that no searched family
            takes, or a value the config refuses, before anything is trained.
    """
    from tfkit.config import input_kind_problem
    from tfkit.models import MODELS, model_params

    t = config.tune
    fixed = config.model.name in ("multitask", "text_table", "hub_text", "image_backbone")
    if t.models is not None:
        families = list(t.models)
    elif fixed:
        families = [config.model.name]
    else:
        families = list(FAMILIES[data_kind]) + (list(FAMILIES["documents"]) if documents else [])
    extra = {key: Dimension.parse(key, spec) for key, spec in (t.space or {}).items()}
    if "model.name" in extra:
        raise ConfigError("tune.space.model.name: list the families in tune.models instead.")
    gives_text = data_kind == "text"
    space = {}
    for name in families:
        if name not in MODELS:
            raise ConfigError(f"tune.models: unknown model {excerpt(name)}; registered: "
                              f"{', '.join(MODELS)}.")
        problem = input_kind_problem(name, {}, config.data.source, gives_text,
                                     "text" if gives_text else f"{data_kind} arrays")
        if problem:
            raise ConfigError(f"tune.models: {problem}")
        own = dict(FAMILY_SPACE.get(name, {}))
        configured = dict(config.model.params) if name == config.model.name else {}
        if "encoder_params" in configured:  # parameters of one encoder: that encoder only
            own.pop("model.params.encoder", None)
        dimensions = {**{k: Dimension.parse(k, v) for k, v in {**COMMON_SPACE, **own}.items()},
                      **extra}
        takes = model_params(name)  # the first trial: the model's own defaults, the config's
        defaults = {f"model.params.{k}": v for k, v in {**takes, **configured}.items()}
        defaults.update({"data.max_len": "auto", "train.learning_rate": "auto"})
        space[name] = [dataclasses.replace(d, default=defaults.get(d.key))
                       for d in dimensions.values()
                       if not d.key.startswith("model.params.") or d.key.split(".", 2)[2] in takes]
    for key in extra:
        if key.startswith("model.params.") and not any(
                key.split(".", 2)[2] in model_params(name) for name in families):
            raise ConfigError(f"tune.space.{key}: none of the searched models "
                              f"({', '.join(families)}) takes {key.split('.', 2)[2]!r}.")
    result = SearchSpace(space)
    check_space(config, result)
    return result


def check_space(config: Config, space: SearchSpace) -> None:
    """Every value of every dimension, with its family, makes a valid config.

    Raises:
        ConfigError: naming the key and value the config refuses.
    """
    base = config.to_dict()
    for name, dimensions in space.families.items():
        for dimension in dimensions:
            for value in dimension.samples():
                values = json.loads(json.dumps(base))
                if name != config.model.name:
                    values["model"] = {**values["model"], "name": name, "params": {}}
                node = values
                keys = dimension.key.split(".")
                for key in keys[:-1]:
                    node = node.setdefault(key, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"tune.space.{dimension.key}: not a config key.")
                node[keys[-1]] = value
                try:
                    config_from_dict(values)
                except ConfigError as exc:
                    raise ConfigError(f"tune.space.{dimension.key} = {excerpt(value)} with "
                                      f"model {name}: {exc}") from None


@dataclass
class TuneResult:
    """What :func:`tune` produced: ``trials`` (one dict per finished trial: its ``--set``
    values, run folder, validation score and test scores), ``ranked`` (best first), the
    ``best`` trial, the ``export_path`` of its SavedModel (None when not exported), the
    linear ``baseline`` on the same split, and the ``summary`` JSON file."""

    trials: list[dict]
    ranked: list[dict]
    best: dict | None
    export_path: Path | None
    baseline: dict | None
    summary: Path
    tune_dir: Path


def tune(config: Config | str | None = None, overrides=(), *, budget=None,
         resume: str | Path | None = None) -> TuneResult:
    """Searches models and hyperparameters for the config's data with KerasTuner, every trial
    a tfkit run, and exports the best (see this module's description).

    Args:
        config: a :class:`Config`, a YAML path or preset name (None: the default preset).
        overrides: ``--set`` strings applied to the config (and so to every trial).
        budget: the search's wall time (``"15m"``; default ``tune.budget``).
        resume: a tune folder to continue (``runs/<name>/<tune>``).

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigError, DataError: before any folder exists, for a config, budget or search
            space that cannot work.

    Examples:
        >>> result = tune("fine_foods_fasttext", ["data.limit=200", "train.epochs=2",
        ...               "tune.max_trials=2", "tune.models=[text_linear]", "train.verbose=0"],
        ...               budget="5m")
        >>> len(result.trials), result.best["run_dir"] == result.ranked[0]["run_dir"]
        (2, True)
    """

    from tfkit.baseline import linear_baseline
    from tfkit.data import load_data
    from tfkit.datasets import data_kind, resolve_model

    if resume is not None:
        tune_dir = Path(resume).resolve()
        if not (tune_dir / "config.yaml").is_file():
            raise ConfigError(f"'{resume}' is not a tune folder (no config.yaml in it).")
        config = load_config(tune_dir / "config.yaml")
    elif not isinstance(config, Config):
        config = load_config(config, overrides)
    seconds = parse_budget(budget if budget is not None else config.tune.budget)
    check_search(config, "tune")
    data = load_data(config.data)
    kind, documents = data_kind(data)
    config = resolve_model(config, data)
    space = search_space(config, kind, documents)
    objective, direction = objective_of(config)
    if resume is None:
        name = config.train.run_name or datetime.now().strftime("tune-%Y%m%d-%H%M%S")
        tune_dir = Path(config.train.runs_dir, config.name, name).resolve()
        if tune_dir.exists() and not (tune_dir / "config.yaml").is_file():
            raise ConfigError(f"'{tune_dir}' exists and is not a tune folder; choose another "
                              "train.run_name.")
        tune_dir.mkdir(parents=True, exist_ok=True)
        if not (tune_dir / "config.yaml").is_file():
            save_config(config, tune_dir / "config.yaml")
    baseline = linear_baseline(data, config.data.split, config.train.seed) \
        if config.train.baseline else None
    del data  # every trial reads its data itself
    log.info("tune: %s search of at most %d trials in %s over %s; ranked by %s; folder %s",
             config.tune.algorithm, config.tune.max_trials, _duration(seconds),
             ", ".join(space.families), objective, tune_dir)
    started, rows = time.monotonic(), {}

    def trial(hp, trial_id: str):
        sets = space.overrides(hp)
        try:
            row = run_trial(config, sets, trial_id, tune_dir.name, objective)
        except (ValueError, FileNotFoundError) as exc:  # a setting that cannot work
            raise ValueError(f"trial {int(trial_id) + 1} ({' '.join(sets)}): {exc}") from exc
        rows[trial_id] = row
        _report(trial_id, row, rows, objective, direction,
                seconds - (time.monotonic() - started), config.tune.max_trials)
        return row["value"]

    tuner = search(_oracle(config, objective, direction), tune_dir, trial, seconds)
    return _finish(config, tuner, tune_dir, objective, direction, baseline)


def _oracle(config: Config, objective: str, direction: str):
    import keras_tuner

    oracles = {"bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
               "random": keras_tuner.oracles.RandomSearchOracle}
    return oracles[config.tune.algorithm](
        objective=keras_tuner.Objective(objective, direction),
        max_trials=config.tune.max_trials, seed=config.train.seed)


def search(oracle, folder: Path, trial, seconds: float = math.inf, overwrite: bool = False):
    """KerasTuner's search loop, every trial a tfkit run: ``oracle`` proposes each trial's
    hyperparameters, ``trial(hp, trial_id)`` trains it and returns the objective's value
    (None: no value, ranked last). The oracle keeps its state in ``folder`` (a search killed
    at any moment continues from it, unless ``overwrite``); no trial starts once ``seconds``
    cannot fit another of the mean length so far. What ``tfkit tune`` (Bayesian or random
    search) and ``tfkit sweep`` (a grid) both run.

    Raises:
        ConfigError: a trial's ``ValueError`` or ``FileNotFoundError`` (a setting that cannot
            work), with its message; any other error of a trial as it came. The search stops
            at the first.
    """
    import keras_tuner

    name, direction = oracle.objective.name, oracle.objective.direction
    started, timed, failed = time.monotonic(), [], []

    class TrialRuns(keras_tuner.Tuner):
        """KerasTuner's tuner whose trial is a tfkit run (``run_trial`` overridden: no
        hypermodel), stopping when the budget cannot fit another trial."""

        def pre_create_trial(self):
            spent = time.monotonic() - started
            mean = spent / len(timed) if timed else 0.0
            if spent + mean > seconds and not self.oracle.ongoing_trials:
                self.oracle.max_trials = len(self.oracle.trials)  # the oracle stops here
                finished = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
                log.info("tune: stopping: %s of the budget used, %d trials finished",
                         _duration(spent), len(finished))

        def run_trial(self, one, *args, **kwargs):
            begun = time.monotonic()
            try:
                value = trial(one.hyperparameters, one.trial_id)
            except Exception as exc:  # stops the search (KerasTuner would log and go on)
                failed.append(exc)
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            timed.append(time.monotonic() - begun)
            return {name: value if value is not None else
                    (math.inf if direction == "min" else -math.inf)}

        def save_model(self, trial_id, model, step=0):
            """Each trial's model is its run folder's ``model.keras``."""

        def load_model(self, trial):
            raise NotImplementedError("a trial's model is its run folder's model.keras")

    tuner = TrialRuns(oracle=oracle, directory=str(folder.parent), project_name=folder.name,
                      overwrite=overwrite)
    try:
        tuner.search(verbose=0)  # tfkit's own line per trial instead of KerasTuner's
    except keras_tuner.errors.FatalError as exc:
        if failed and not isinstance(failed[0], (ValueError, FileNotFoundError)):
            raise failed[0] from None  # not a setting: the error as it came
        raise ConfigError(str(exc)) from None
    return tuner


def run_trial(config: Config, sets: list[str], trial_id: str, prefix: str,
              objective: str) -> dict:
    """Trains (or resumes, or reads back when finished) one trial's run; returns its row:
    ``--set`` values, run folder, validation score at the best epoch, test scores."""
    from tfkit.runs import read_status, run_path
    from tfkit.training import train

    values = config.to_dict()
    fixed = [f"train.run_name={prefix}-{trial_id}", "export.enabled=false",
             "train.baseline=false", f"train.monitor={objective}"]
    trial = _apply(values, sets + fixed)
    folder = run_path(trial)
    if read_status(folder)["state"] == "finished":  # killed after it finished: read it back
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    else:
        metrics = train(trial).metrics
    return {"trial": trial_id, "overrides": sets, "run_dir": str(folder),
            "value": (metrics.get("best_monitor") or {}).get("value"),
            "best_epoch": metrics.get("best_epoch"), "epochs": metrics.get("epochs"),
            "train_seconds": metrics.get("train_seconds"),
            **{k: v for k, v in metrics.items() if k.startswith("test_") and isinstance(v, float)}}


def _apply(values: dict, sets: list[str]) -> Config:
    from tfkit.config import parse_override

    values = json.loads(json.dumps(values))
    for text in sets:
        keys, value = parse_override(text)
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if keys == ["model", "name"] and node.get("name") != value:
            node["params"] = {}  # another family: its own defaults
        node[keys[-1]] = value
    return config_from_dict(values)


def _report(trial_id: str, row: dict, rows: dict, objective: str, direction: str,
            left: float, most: int) -> None:
    sign = 1 if direction == "max" else -1
    scored = [r for r in rows.values() if r["value"] is not None]
    best = max(scored, key=lambda r: sign * r["value"]) if scored else None
    value = "none" if row["value"] is None else f"{row['value']:.4f}"
    log.info("tune: trial %d of at most %d: %s %s (best %s, trial %d); %s left: %s",
             int(trial_id) + 1, most, objective, value,
             "none" if best is None else f"{best['value']:.4f}",
             0 if best is None else int(best["trial"]) + 1, _duration(max(left, 0)),
             " ".join(row["overrides"]))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _finish(config: Config, tuner, tune_dir: Path, objective: str, direction: str,
            baseline: dict | None) -> TuneResult:
    """Reads every finished trial back (this search's and, after a resume, the earlier ones'),
    exports the best, writes the summary."""
    from tfkit.publishing import NotPublished, export_run
    from tfkit.runs import read_status

    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":
            continue
        folder = Path(tune_dir.parent, f"{tune_dir.name}-{trial.trial_id}")
        if read_status(folder)["state"] != "finished":
            continue
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows.append({"trial": trial.trial_id, "run_dir": str(folder),
                     "hyperparameters": dict(trial.hyperparameters.values),
                     "value": (metrics.get("best_monitor") or {}).get("value"),
                     "best_epoch": metrics.get("best_epoch"), "epochs": metrics.get("epochs"),
                     "model": metrics.get("model"),
                     **{k: v for k, v in metrics.items()
                        if k.startswith("test_") and isinstance(v, float)}})
    sign = -1 if direction == "max" else 1
    ranked = sorted(rows, key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0)))
    best = ranked[0] if ranked else None
    export_path = None
    if best is not None and config.export.enabled:
        try:
            export_path = export_run(best["run_dir"], base_dir=config.export.base_dir,
                                     name=config.export.name or config.name)
        except NotPublished as exc:
            log.warning("tune: the best trial is not published: %s", exc)
    summary = tune_dir / "summary.json"
    partial = summary.with_name("summary.json.partial")
    partial.write_text(json.dumps({
        "objective": objective, "algorithm": config.tune.algorithm, "baseline": baseline,
        "ranked": ranked, "export_path": None if export_path is None else str(export_path)},
        indent=2, default=str), encoding="utf-8")
    partial.replace(summary)
    if best is not None:
        key = "test_accuracy" if "test_accuracy" in best else "test_micro_f1"
        versus = ""
        if baseline and key in best and key in baseline:
            versus = f"; linear baseline {baseline[key]:.4f} on the same split"
        log.info("tune: best trial %d (%s): %s %.4f, %s %s%s; %s", int(best["trial"]) + 1,
                 best["model"], objective, best["value"] or float("nan"), key,
                 f"{best.get(key, float('nan')):.4f}", versus,
                 f"SavedModel {export_path}" if export_path else "not exported")
    return TuneResult(rows, ranked, best, export_path, baseline, summary, tune_dir)


__all__ = ["TuneResult", "search_space", "tune"]
