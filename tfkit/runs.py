"""The run folder: where a run lives, its status, its progress, and reading a finished one.

Each run gets its own directory::

    runs/<name>/<run_name or timestamp>/
        status.json          {"state": "running" | "finished" | "failed", ...}
        progress.json        epochs, training seconds over every attempt, attempts, trained
        config.yaml          the resolved config (tfkit train config.yaml reproduces it)
        preprocessor.json    adapted vocabulary and settings
        logs/train, logs/validation, logs/test   TensorBoard event files
        checkpoints/best.weights.h5   the best epoch's weights (``train.monitor``), while
                             running (the finished model holds them)
        backup/              BackupAndRestore state while running (resume after a crash)
        model.keras          the final (best) model, token ids in, saved uncompiled:
                             without the optimizer's state (a third of Adam's size)
        metrics.json         test metrics, timings, export path; written last

A run is finished when ``status.json`` says so; ``metrics.json`` only exists then.
"""

from __future__ import annotations

import json
import time
import zipfile
from datetime import datetime
from pathlib import Path

import keras

from tfkit.baseline import compare
from tfkit.config import Config, ConfigError, load_config
from tfkit.data import load_preprocessor


class RunProgress(keras.callbacks.Callback):
    """Keeps ``progress.json`` in the run folder: the epochs the run has finished, its
    training seconds summed over every attempt (a resumed run starts a new one), the number
    of attempts, and whether training is over (the model is saved). Written after each epoch
    (a temporary file, then renamed), so a run killed at any point resumes with the right
    counts, and :func:`train` reports the whole run, not the last attempt.
    """

    FILE = "progress.json"

    def __init__(self, run_dir: Path):
        super().__init__()
        self.file = Path(run_dir) / self.FILE
        saved = json.loads(self.file.read_text(encoding="utf-8")) if self.file.is_file() else {}
        self.state = {"epochs": 0, "train_seconds": 0.0, "attempts": 0, "trained": False, **saved}
        self.state["attempts"] += 1
        self._before, self._started = self.state["train_seconds"], time.perf_counter()
        self._write()

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.state["epochs"] = epoch + 1  # BackupAndRestore's epochs count from the run's start
        self.state["train_seconds"] = self._before + time.perf_counter() - self._started
        self._write()

    def on_train_end(self, logs=None):
        self.state["train_seconds"] = self._before + time.perf_counter() - self._started
        self._write()

    def finish_training(self) -> None:
        self.state["trained"] = True
        self._write()

    def _write(self) -> None:
        partial = self.file.with_name(f".{self.FILE}.partial")
        partial.write_text(json.dumps(self.state), encoding="utf-8")
        partial.replace(self.file)


def write_status(run_dir: Path, state: str, **facts) -> None:
    payload = {"state": state, "time": datetime.now().isoformat(timespec="seconds"), **facts}
    (run_dir / "status.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


def read_status(run_dir: str | Path) -> dict:
    file = Path(run_dir, "status.json")
    if not file.is_file():
        return {"state": "missing"}
    return json.loads(file.read_text(encoding="utf-8"))


def config_differences(given: Config, saved: Config) -> list[str]:
    """The keys whose value in ``given`` (what a command asks for) differs from ``saved`` (an
    interrupted run's ``config.yaml``), as ``key: value here, value in the run folder``;
    ``auto`` values, which the run folder records as what they became, do not count."""
    def flat(values, prefix=""):
        out = {}
        for key, value in values.items():
            if isinstance(value, dict) and key != "params" and prefix.count(".") < 1:
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    mine, theirs = flat(given.to_dict()), flat(saved.to_dict())
    return [f"{key}: {mine[key]!r} here, {theirs.get(key)!r} in the run folder"
            for key in mine if mine[key] != theirs.get(key) and mine[key] != "auto"]


def export_dir(config: Config) -> Path:
    """``export.base_dir/<export.name or name>``: the folder of the run's SavedModel versions."""
    return Path(config.export.base_dir, config.export.name or config.name)


def run_path(config: Config, chief: bool = True, worker: int = 0, stamp: str = "") -> Path:
    """Where a run lives: ``runs_dir/name/<run_name or stamp>``; a worker that is not the
    chief keeps only its own config, vocabulary and backup, in ``.../worker-<id>``."""
    path = Path(config.train.runs_dir, config.name, config.train.run_name or stamp).resolve()
    return path if chief else path / f"worker-{worker}"


def create_run_dir(config: Config, chief: bool = True, worker: int = 0) -> Path:
    """Creates a new run directory (a timestamp unless ``train.run_name`` names it); never
    reuses an existing one, even when two processes start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1 if config.train.run_name else 1000):
        path = run_path(config, chief, worker, stamp if attempt == 0 else f"{stamp}-{attempt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"run directory '{path}' already exists; choose another train.run_name.")


def load_run(run_dir: str | Path):
    """Loads a finished run: ``(config, model, preprocessor, label_names)``.

    Raises:
        ConfigError: if ``run_dir`` is not a finished tfkit run.
    """
    run_dir = Path(run_dir)
    state = read_status(run_dir)["state"]
    if state != "finished":
        raise ConfigError(f"'{run_dir}' is not a finished tfkit run (state: {state}); "
                          "expected status.json with state 'finished'.")
    config = load_config(run_dir / "config.yaml")
    model = load_keras_model(run_dir / "model.keras")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return config, model, load_preprocessor(run_dir), metrics["label_names"]


def run_multi_label(run_dir: str | Path) -> dict | None:
    """A finished multi-label run's ``{"thresholds": one per label, "separator": ...}``
    (``metrics.json``), or None for a run with one label per example."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    return metrics.get("multi_label")


def save_trained_model(model: keras.Model, path: Path) -> None:
    """``model.save(path)`` of the trained model as an uncompiled one: its architecture and
    weights, without the optimizer, whose two Adam moments per weight would triple the file
    (the backup holds them while training). It loads without warnings; compile it to train
    it further (``tfkit evaluate`` and ``tfkit export`` compile it from the run's config).
    The model itself stays compiled."""
    compiled = getattr(model, "compiled", False)
    optimizer = getattr(model, "optimizer", None)
    if not compiled:
        model.save(path)
        return
    model.optimizer, model.compiled = None, False
    try:
        model.save(path)
    finally:
        model.optimizer, model.compiled = optimizer, compiled


def load_keras_model(path: Path) -> keras.Model:
    """``keras.models.load_model(path, safe_mode=True)``, with a clear error for a file that
    is missing, not a ``.keras`` zip, or names a class or function Keras cannot find (a
    custom layer whose package is not imported, or a file that is not a model at all).

    Raises:
        ConfigError: naming the file and the cause.
    """
    if not path.is_file():
        raise ConfigError(f"'{path}' does not exist: the run has no trained model.")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"'{path}' is not a Keras model file (a .keras file is a zip "
                          "archive; this one is not).")
    try:
        import tfkit.models.layers  # noqa: F401  (registers tfkit's layers for loading)

        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises TypeError, ValueError, KeyError... by cause
        reason = " ".join(str(exc).split())
        raise ConfigError(f"'{path}' cannot be loaded as a Keras model: "
                          f"{reason[:300]}{'...' if len(reason) > 300 else ''} (a custom layer "
                          "must be importable and registered with "
                          "keras.saving.register_keras_serializable).") from None


def run_summary(metrics: dict, run_dir: Path) -> str:
    """One line for people: the test scores, the best epoch, the time, where things are."""
    scores = ", ".join(f"{key[5:]} {value:.4g}" for key, value in metrics.items()
                       if key.startswith("test_") and isinstance(value, float))
    best = metrics.get("best_epoch")
    versus = compare(metrics, metrics.get("baseline"))
    parts = [f"test {scores}"] + ([versus] if versus else []) + [
             f"best epoch {best} of {metrics['epochs']}" if best else f"{metrics['epochs']} epochs",
             f"{metrics['train_seconds']} s of training"]
    if metrics.get("export_path"):
        parts.append(f"SavedModel {metrics['export_path']}")
    elif (metrics.get("blessing") or {}).get("reasons"):
        parts.append(f"NOT published for serving ({'; '.join(metrics['blessing']['reasons'])})")
    return "; ".join(parts + [f"tensorboard --logdir {run_dir}"])
