"""The Keras callbacks tfkit adds to ``fit``: the best epoch's weights, backup and restore,
early stopping, TensorBoard and its extras."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import keras
import numpy as np

from tfkit.config import Config, ConfigError
from tfkit.monitor import Throughput
from tfkit.multiworker import BackupsAgree

log = logging.getLogger("tfkit")


def monitored(config: Config, has_validation: bool, heads: dict | None,
              multi_worker: bool) -> str:
    """The quantity that picks the best checkpoint (and stops early): ``train.monitor``, or
    the training loss when there is no validation split.

    ``val_macro_f1`` comes from the :class:`ConfusionMatrix` callback, which only single-task
    classifiers have and only the chief runs (under multi-worker training the workers would
    disagree on when to stop); multi-task models name their metrics per head.

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
        raise ConfigError("train.monitor 'val_macro_f1' is computed by the chief alone; under "
                          "multi-worker training use val_loss or val_accuracy.")
    return monitor


class BestWeights(keras.callbacks.Callback):
    """Saves the model's weights each time ``monitor`` improves (``mode`` ``"min"`` or
    ``"max"``; NaN never does), without the optimizer's state: they only serve to restore
    the best epoch (:func:`restore_best_weights`), and Adam's two moments per weight would
    triple the file (58 against 20 MB for the default fastText model). Written to a
    temporary file and renamed, so a crash never leaves half a file as the best epoch.

    The file records the monitor, its value and the epoch (HDF5 attributes), so a run
    resumed after a crash keeps its best epoch from before the crash (Keras's
    ``ModelCheckpoint`` and ``EarlyStopping`` start again from nothing).
    """

    def __init__(self, path: Path, monitor: str, mode: str):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = np.inf if mode == "min" else -np.inf

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
        self.best = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"partial-{self.path.name}")  # Keras wants .weights.h5
        keras.saving.save_weights(self.model, partial, objects_to_skip=[self.model.optimizer])
        with h5py.File(partial, "a") as handle:
            handle.attrs.update(tfkit_monitor=self.monitor, tfkit_value=self.best,
                                tfkit_epoch=epoch + 1)
        partial.replace(self.path)


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
    mode = "min" if monitor.endswith("loss") else "max"
    callbacks = [
        Throughput(batch_size or config.train.batch_size),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), update_freq="epoch",
                                    histogram_freq=config.train.histogram_freq,
                                    profile_batch=tuple(config.train.profile_batch or (0, 0))),
        *extra,
        BestWeights(best_weights_path(run_dir), monitor, mode),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
    ] + ([BackupsAgree()] if multi_worker else [])
    if config.train.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.train.early_stopping_patience))
    return callbacks
