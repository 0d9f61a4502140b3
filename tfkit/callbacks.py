"""The Keras callbacks tfkit adds to ``fit``: the best epoch's weights, backup and restore,
early stopping, TensorBoard and its extras."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import h5py
import keras
import numpy as np

from tfkit.config import Config, ConfigError, monitor_direction
from tfkit.monitor import Throughput
from tfkit.multiworker import BackupsAgree

log = logging.getLogger("tfkit")


def monitored(config: Config, has_validation: bool, heads: dict | None,
              multi_worker: bool) -> str:
    """The quantity that picks the best checkpoint (and stops early): ``train.monitor``, or
    the training loss when there is no validation split.

    ``val_macro_f1`` is the compiled macro-F1 metric's (:class:`tfkit.monitor.ClassCounts`)
    on the validation split; multi-task models name their metrics per head.

    Raises:
        ConfigError: for a monitor the run cannot compute, before any run folder exists.
    """
    monitor = config.train.monitor
    if monitor == "val_loss":
        return monitor if has_validation else "loss"
    if not has_validation:
        raise ConfigError(f"train.monitor '{monitor}' needs a validation split "
                          "(data.validation_fraction > 0); val_loss falls back to the training loss.")
    if heads:
        raise ConfigError(f"train.monitor '{monitor}': a multi-task model has per-head metrics; "
                          "use val_loss (the weighted sum of the heads' losses).")
    if monitor == "val_macro_f1" and multi_worker:
        raise ConfigError("train.monitor 'val_macro_f1' is not offered under multi-worker "
                          "training; use val_loss or val_accuracy.")
    return monitor


class BestWeights(keras.callbacks.Callback):
    """Keeps the model's weights of the epoch where ``monitor`` was best (``mode`` ``"min"``
    or ``"max"``; NaN never is), in memory, and writes them to ``path`` when :meth:`write`
    is called (with each backup, :class:`Backup`), without the optimizer's state: they only
    serve to restore the best epoch (:meth:`restore`), and Adam's two moments per weight
    would triple the file (58 against 20 MB for the default fastText model). Written to a
    temporary file and renamed, so a crash never leaves half a file as the best epoch.

    The file records the monitor, its value and the epoch (HDF5 attributes), so a run
    resumed after a crash keeps its best epoch from before the crash (Keras's
    ``ModelCheckpoint`` and ``EarlyStopping`` start again from nothing).
    """

    def __init__(self, path: Path, monitor: str, mode: str):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = np.inf if mode == "min" else -np.inf
        self.weights, self.epoch, self.written = None, None, True

    def on_train_begin(self, logs=None):
        saved = best_epoch(self.path)
        if saved and saved["monitor"] == self.monitor:
            self.best = saved["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            log.warning("best weights: '%s' is not in the epoch's logs %s; not saved",
                        self.monitor, sorted(logs or {}))
            return
        if not (value < self.best if self.mode == "min" else value > self.best):
            return
        self.best, self.epoch, self.written = float(value), epoch + 1, False
        self.weights = self.model.get_weights()

    def write(self) -> None:
        """Writes the best epoch's weights to :attr:`path`, if they changed since the last write."""
        if self.written or self.weights is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"partial-{self.path.name}")  # Keras wants .weights.h5
        current = self.model.get_weights()
        self.model.set_weights(self.weights)
        try:
            keras.saving.save_weights(self.model, partial, objects_to_skip=[self.model.optimizer])
        finally:
            self.model.set_weights(current)
        with h5py.File(partial, "a") as handle:
            handle.attrs.update(tfkit_monitor=self.monitor, tfkit_value=self.best,
                                tfkit_epoch=self.epoch)
        partial.replace(self.path)
        self.written = True

    def restore(self) -> int | None:
        """Puts the best epoch's weights back into the model and returns that epoch (from 1):
        this attempt's best from memory, else the file's (a resumed run whose best epoch came
        before the crash); None when no epoch improved (every loss NaN, say) and the model
        keeps its last weights."""
        if self.weights is not None:
            self.model.set_weights(self.weights)
            return self.epoch
        return restore_best_weights(self.model, self.path)


class Backup(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` (the model's and the optimizer's state, from which a
    crashed run resumes) written at the end of an epoch only when ``every`` seconds have
    passed since the last write (0: every epoch). Writing the default fastText model's
    state (58 MB) every epoch costs more than a tenth of its epoch; a crash loses at most
    ``every`` seconds of training. ``before_write`` callbacks run just before each write
    (:class:`BestWeights` writes its file then, so both describe the same moment)."""

    def __init__(self, backup_dir: str, every: float = 0.0, before_write=()):
        # kept when training ends: the run removes it once the trained model is saved, so a
        # kill in between resumes from the last epoch instead of training again from scratch
        super().__init__(backup_dir, delete_checkpoint=False)
        self.every, self.before_write = every, list(before_write)
        self.last, self.saved_epoch = time.monotonic(), None

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch, self._last_batch_seen = epoch + 1, 0
        if time.monotonic() - self.last >= self.every:
            self.write()

    def on_train_end(self, logs=None):
        """The last epoch backed up too (when ``every`` skipped it), so a run killed before
        its trained model is saved resumes with nothing left to train."""
        if self._current_epoch and self.saved_epoch != self._current_epoch:
            self.write()

    def write(self) -> None:
        for write in self.before_write:
            write()
        self._save_model()
        self.last, self.saved_epoch = time.monotonic(), self._current_epoch


def backup_callback(run_dir: Path, config: Config, multi_worker: bool = False,
                    best: BestWeights | None = None) -> Backup:
    """The run's :class:`Backup` under ``run_dir/backup``: every ``train.backup_seconds``,
    or every epoch under a multi-worker strategy (the workers' backups must hold the same
    epoch); ``best``'s file is written with each backup."""
    every = 0.0 if multi_worker else config.train.backup_seconds
    return Backup(str(run_dir / "backup"), every, [best.write] if best else [])


def best_epoch(path: Path) -> dict | None:
    """``{"monitor", "value", "epoch"}`` (epochs counted from 1) of a :class:`BestWeights`
    file, or None when there is none."""
    if not Path(path).is_file():
        return None
    with h5py.File(path, "r") as handle:
        return {"monitor": str(handle.attrs["tfkit_monitor"]),
                "value": float(handle.attrs["tfkit_value"]), "epoch": int(handle.attrs["tfkit_epoch"])}


def restore_best_weights(model: keras.Model, path: Path) -> int | None:
    """Loads :class:`BestWeights`' file into ``model`` (its optimizer left as it is) and
    returns that epoch (from 1); None when there is none (no epoch improved, e.g. every
    loss was NaN) and the model keeps its last weights."""
    saved = best_epoch(path)
    if saved:
        keras.saving.load_weights(model, path, objects_to_skip=[model.optimizer])
    return saved and saved["epoch"]


def best_weights_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.weights.h5"


def make_callbacks(out_dir: Path, run_dir: Path, config: Config, monitor: str,
                   multi_worker: bool = False, extra=(), batch_size: int | None = None) -> list:
    """The training speed (:class:`Throughput`, before TensorBoard, which logs it; global
    ``batch_size``, default ``train.batch_size``), TensorBoard (weight histograms every
    ``train.histogram_freq`` epochs, the profiler over ``train.profile_batch``), the ``extra``
    callbacks (all under ``out_dir``); then the run's state under ``run_dir``, which a
    restart finds (a worker's own folder under multi-worker training, whose ``out_dir`` is
    temporary): the best weights by ``monitor`` (:func:`monitored`, :class:`BestWeights`)
    and BackupAndRestore (checked to agree across workers under a multi-worker strategy);
    optional early stopping (the best weights are restored from :class:`BestWeights`' file,
    one way for both).

    The extras (:class:`ConfusionMatrix`) come after TensorBoard and before the checkpoint:
    they add ``val_macro_f1`` to the epoch's logs, which the checkpoint, early stopping and
    the history then see (TensorBoard already got its own copy from them).
    """
    mode = monitor_direction(monitor)
    best = BestWeights(best_weights_path(run_dir), monitor, mode)
    callbacks = [
        Throughput(batch_size or config.train.batch_size),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), update_freq="epoch",
                                    histogram_freq=config.train.histogram_freq,
                                    profile_batch=tuple(config.train.profile_batch or (0, 0))),
        *extra,
        best,
        backup_callback(run_dir, config, multi_worker, best),
    ] + ([BackupsAgree()] if multi_worker else [])
    if config.train.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.train.early_stopping_patience))
    return callbacks
