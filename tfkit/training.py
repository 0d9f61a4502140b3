"""Training: data -> preprocessor -> tf.data -> builder, ``compile``/``fit`` under a strategy.

Reads top to bottom: :func:`train` is the whole job. Each run gets its own directory::

    runs/<name>/<timestamp>/
        status.json          {"state": "running" | "finished" | "failed", ...}
        config.yaml          the resolved config (tfkit train config.yaml reproduces it)
        preprocessor.json    adapted vocabulary and settings
        logs/train, logs/validation, logs/test   TensorBoard event files (scalars; the
                             validation confusion matrix per epoch; the validation examples
                             most confidently misclassified; hparams in logs/; the word
                             vectors for the Projector in logs/train)
        checkpoints/best.weights.h5   the best epoch's weights (``train.monitor``)
        backup/              BackupAndRestore state while running (resume after a crash)
        model.keras          the final (best) model, token ids in
        metrics.json         test metrics, timings, export path; written last

A run is finished when ``status.json`` says so; ``metrics.json`` only exists then.
Bad config or data fails before the directory is created.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf

from tfkit.config import (
    Config,
    ConfigError,
    check_name,
    input_kind_problem,
    load_config,
    save_config,
)
from tfkit.data import (
    HierarchicalTextPreprocessor,
    ImagePreprocessor,
    LabeledData,
    SequencePreprocessor,
    TextPreprocessor,
    add_vector_words,
    array_dataset,
    load_data,
    load_preprocessor,
    load_word_vectors,
    token_dataset,
)
from tfkit.distribute import is_chief, is_multi_worker, resolve_strategy, task_id
from tfkit.evaluation import bless, score_saved_model
from tfkit.explain import has_attention
from tfkit.export import (
    ExportError,
    check_next_version,
    export_facts,
    export_for_serving,
    is_saved_model,
    serving_function,
    version_folder,
)
from tfkit.models import build_model, model_inputs
from tfkit.monitor import (
    ConfusionMatrix,
    Throughput,
    classification_report,
    confusion_counts,
    log_attention,
    log_embeddings,
    log_graph,
    log_hparams,
    log_misclassified,
    predictions,
    traced_call,
    write_classification,
)
from tfkit.multiworker import BackupsAgree, broadcast, multi_worker_fixes
from tfkit.optimizers import LazyAdam

log = logging.getLogger("tfkit")
WEIGHTED_MEAN = "mean_with_sample_weight"  # a loss's mean over the rows that weigh

OPTIMIZERS = {"adam": keras.optimizers.Adam, "lazy_adam": LazyAdam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}  # keys: config.OPTIMIZERS


class NotPublished(ExportError):
    """A model failed the checks before serving (:func:`tfkit.evaluation.bless`)."""


@dataclass
class RunResult:
    """What :func:`train` produced."""

    run_dir: Path
    metrics: dict
    history: dict
    model: keras.Model
    preprocessor: object
    label_names: list[str]
    export_path: Path | None


def make_preprocessor(config: Config, data: LabeledData):
    """The preprocessor the model's ``inputs`` kind needs, adapted on the training split.

    Raises:
        ConfigError: when the data cannot feed the model (say text data for ``image_cnn``).
    """
    name, inputs = config.model.name, model_inputs(config.model.name, config.model.params)
    x = data.train.x
    is_text = x.dtype == object
    problem = input_kind_problem(name, config.model.params, config.data.source, is_text,
                                 "text" if is_text else f"arrays of shape {x.shape[1:]}")
    if problem:  # tfds, which the config cannot tell
        raise ConfigError(problem)
    if inputs == "tokens":
        preprocessor = TextPreprocessor(max_tokens=config.data.max_tokens,
                                        max_len=config.data.max_len, split=config.data.split)
    elif inputs == "documents":
        preprocessor = HierarchicalTextPreprocessor(max_tokens=config.data.max_tokens,
                                                    max_sentences=config.data.max_sentences,
                                                    max_words=config.data.max_words,
                                                    split=config.data.split)
    elif inputs == "image":
        if x.ndim not in (3, 4):
            raise ConfigError(f"model '{name}' takes images; data.source "
                              f"'{config.data.source}' gives arrays of shape {x.shape[1:]}.")
        height, width = config.data.image_size or x.shape[1:3]
        channels = config.data.channels or (x.shape[3] if x.ndim == 4 else 1)
        preprocessor = ImagePreprocessor(height, width, channels, config.export.max_image_pixels)
    else:
        steps = x.shape[1]
        preprocessor = SequencePreprocessor(steps, int(np.prod(x.shape[2:])))
    preprocessor.adapt(x)
    extra = config.model.word_vectors_vocabulary
    if extra:  # words training never saw, which the vectors file knows
        size = preprocessor.vocab_size
        preprocessor = add_vector_words(preprocessor, config.model.word_vectors, extra)
        log.info("vocabulary: %d words from the training texts + %d from %s",
                 size, preprocessor.vocab_size - size, config.model.word_vectors)
    return preprocessor


FEW_EXAMPLES = 5  # per class, in the validation or test split: fewer makes noisy scores


def warn_small_splits(data: LabeledData) -> list[str]:
    """Logs a warning for each class with fewer than ``FEW_EXAMPLES`` examples in the
    validation or test split (per classification head): its scores, the best epoch and the
    checks before publishing then rest on a handful of examples. Tiny data is fine for a try,
    so this is no error. Returns the warnings."""
    multitask = isinstance(data.label_names, dict)
    heads = data.label_names if multitask else {None: data.label_names}
    warnings = []
    for split_name, split in (("validation", data.validation), ("test", data.test)):
        if not len(split):
            continue
        for head, names in heads.items():
            if not names:
                continue
            y = split.y[head] if multitask else split.y
            counts = np.bincount(np.asarray(y).astype(np.int64).reshape(-1), minlength=len(names))
            few = [f"{name!r} {count}" for name, count in zip(names, counts)
                   if count < FEW_EXAMPLES]
            if few:
                where = f"the {split_name} split" + (f" (head {head})" if head else "")
                warnings.append(f"{where} has fewer than {FEW_EXAMPLES} examples of "
                                f"{len(few)} class(es) ({', '.join(few[:5])}): its scores are noisy")
    for warning in warnings:
        log.warning("small data: %s", warning)
    return warnings


def class_weights(config: Config, data: LabeledData) -> np.ndarray | None:
    """``train.class_weight`` as one weight per label id, or None when it is not set.

    ``balanced``: ``n / (classes * count)`` over the training split (scikit-learn's
    definition: every class then weighs as much in the loss as the others); a mapping:
    ``{label name: weight}``, 1.0 for labels not named.

    Raises:
        ConfigError: naming a label that the data does not have.
    """
    setting = config.train.class_weight
    if setting is None:
        return None
    names = list(data.label_names)
    if setting == "balanced":
        counts = np.bincount(np.asarray(data.train.y).reshape(-1), minlength=len(names))
        return (counts.sum() / (len(names) * np.maximum(counts, 1))).astype(np.float32)
    unknown = sorted(str(label) for label in setting if str(label) not in names)
    if unknown:
        raise ConfigError(f"train.class_weight: no label {', '.join(map(repr, unknown))} in "
                          f"the data; its labels are {names}.")
    given = {str(label): float(weight) for label, weight in setting.items()}
    return np.array([given.get(name, 1.0) for name in names], np.float32)


def make_dataset(split, preprocessor, config: Config, batch_size: int, *, training: bool,
                 weights: np.ndarray | None = None):
    """The tf.data pipeline for one split (shuffled, and for text bucketed, as configured).

    ``weights`` (training, :func:`class_weights`): each example's sample weight is its
    label's weight (times 0 for the filler rows of full batches). Keras's
    ``fit(class_weight=...)`` does the same but refuses datasets that already carry sample
    weights, as full batches do.

    The data is in memory, so under a multi-worker strategy it is sharded by element
    (auto-shard policy DATA): every worker builds the same pipeline and keeps its share
    of each global batch. (FILE sharding needs one file per shard; there are none here.)
    """
    if isinstance(preprocessor, TextPreprocessor):
        ds = token_dataset(split.x, split.y, preprocessor, batch_size, shuffle=training,
                           bucket=config.data.bucket_by_length, seed=config.data.seed,
                           full_batches=training)
    else:
        ds = array_dataset(split.x, split.y, preprocessor, batch_size, shuffle=training,
                           seed=config.data.seed)
    if weights is not None:
        table = tf.constant(weights)

        def weigh(x, y, sample_weight=1.0):
            return x, y, sample_weight * tf.gather(table, tf.reshape(y, [-1]))

        ds = ds.map(weigh)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


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


def head_specs(data: LabeledData) -> dict | None:
    """What a multi-task builder needs per head: ``{"num_classes": n}`` or the training
    targets' ``{"mean": m, "std": s}`` (None for single-task data)."""
    if not data.heads:
        return None
    specs = {}
    for head, kind in data.heads.items():
        if kind == "regression":
            values = data.train.y[head]
            specs[head] = {"mean": float(values.mean()), "std": float(values.std()) or 1.0}
        else:
            specs[head] = {"num_classes": len(data.label_names[head])}
    return specs


def jit_setting(config: Config, replicas: int):
    """``train.jit_compile`` for ``model.compile``, refusing the known crash: loss scaling
    (``mixed_float16``) + XLA + more than one replica (keras-team/keras#21366)."""
    jit = {"auto": "auto", "true": True, "false": False}[str(config.train.jit_compile).lower()]
    if config.train.mixed_precision == "mixed_float16" and replicas > 1:
        if jit is True:
            raise ConfigError("train.jit_compile: true with train.mixed_precision: mixed_float16 "
                              f"on {replicas} replicas crashes in Keras (LossScaleOptimizer under "
                              "XLA, keras-team/keras#21366); set jit_compile: false or auto.")
        return False
    return jit


def fit_verbosity(verbose: str) -> int:
    """``train.verbose`` as ``fit`` takes it; ``auto``: the progress bar where someone watches.

    Keras's ``auto`` is always the live bar (1), and Keras redraws it with backspaces, carriage
    returns and colour codes even when the output is a file (its ``Progbar`` treats every POSIX
    system as a terminal), so a log file or CI log gets one unreadable line per epoch. tfkit's
    ``auto`` is 1 in a notebook or when the output (stdout, which the CLI points at stderr) is a
    terminal, and 2 (one plain line per epoch) otherwise.
    """
    if verbose != "auto":
        return int(verbose)
    interactive = "ipykernel" in sys.modules or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
    return 1 if interactive else 2


def epoch_steps(config: Config, dataset: tf.data.Dataset) -> int:
    """Steps in one epoch: ``train.steps_per_epoch``, or the training dataset's batches
    (tfkit's datasets know their number of batches, length buckets included)."""
    return config.train.steps_per_epoch or int(dataset.cardinality())


def learning_rate(config: Config, replicas: int = 1, steps_per_epoch: int = 1):
    """``train.learning_rate`` (times ``replicas`` with ``scale_learning_rate``), constant or
    decaying to 0 over ``train.epochs * steps_per_epoch`` steps (``train.lr_schedule``).

    The TensorBoard callback logs the rate each epoch, whichever schedule.
    """
    rate = config.train.learning_rate
    if config.train.scale_learning_rate:
        rate *= replicas  # the linear scaling rule for a global batch `replicas` x larger
    steps = max(1, config.train.epochs * steps_per_epoch)
    if config.train.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps)
    if config.train.lr_schedule == "linear":
        return keras.optimizers.schedules.PolynomialDecay(rate, decay_steps=steps,
                                                          end_learning_rate=0.0)
    return rate


def compile_model(model: keras.Model, config: Config, heads: dict | None = None,
                  replicas: int = 1, steps_per_epoch: int = 1) -> None:
    """Compiles with the configured optimizer, sparse cross-entropy and accuracy.

    Losses average over the sample weights and the metrics are ``weighted_metrics``: the
    filler rows of the training batches (``token_dataset(full_batches=True)``) weigh 0.

    Multi-task (``heads`` from :func:`head_specs`): per head, cross-entropy and accuracy
    for classification, mean squared error and MAE for regression. A regression loss is
    weighted by ``1 / std**2`` on top of ``train.loss_weights``, i.e. it is the MSE of the
    standardised target, so heads in years and in class probabilities weigh alike.
    """
    rate = learning_rate(config, replicas, steps_per_epoch)
    optimizer = OPTIMIZERS[config.train.optimizer](learning_rate=rate)
    jit = jit_setting(config, replicas)
    if not heads:
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
                          reduction=WEIGHTED_MEAN), weighted_metrics=["accuracy"],
                      jit_compile=jit, steps_per_execution=config.train.steps_per_execution)
        return
    weights = config.train.loss_weights or {}
    losses, loss_weights, metrics = {}, {}, {}
    for head, spec in heads.items():
        weight = float(weights.get(head, 1.0))
        if "num_classes" in spec:
            losses[head] = keras.losses.SparseCategoricalCrossentropy(reduction=WEIGHTED_MEAN)
            metrics[head] = ["accuracy"]
        else:
            losses[head], metrics[head] = keras.losses.MeanSquaredError(reduction=WEIGHTED_MEAN), ["mae"]
            weight /= spec["std"] ** 2
        loss_weights[head] = weight
    model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights,
                  weighted_metrics=metrics, jit_compile=jit,
                  steps_per_execution=config.train.steps_per_execution)


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


def score_test_split(model: keras.Model, test_ds: tf.data.Dataset, label_names: list | dict):
    """The test split's ``(label ids, probabilities)`` and, from their confusion matrix,
    ``test_macro_f1``, ``test_per_class`` (precision, recall, F1, support per label) and
    ``test_confusion_matrix`` for metrics.json. For a multi-task model (``label_names``
    ``{head: names}``): per classification head, ``{head: (label ids, probabilities)}``,
    ``test_<head>_macro_f1`` and ``{head: ...}`` in the other two.

    Accuracy alone hides a weak class: on the fine-food reviews (65% ``great``) a model
    answering ``great`` every time scores 0.66 accuracy and 0.40 macro F1 on the test split.
    """
    labels, probabilities = predictions(traced_call(model), test_ds)
    if not isinstance(label_names, dict):
        report = classification_report(confusion_counts(labels, probabilities), label_names)
        return (labels, probabilities), {
            "test_macro_f1": report["macro_f1"], "test_per_class": report["per_class"],
            "test_confusion_matrix": report["confusion_matrix"]}
    predicted, scores = {}, {"test_per_class": {}, "test_confusion_matrix": {}}
    for head, names in label_names.items():
        if names:  # classification heads; regression heads have no classes
            predicted[head] = (labels[head].astype(np.int64), probabilities[head])
            report = classification_report(confusion_counts(*predicted[head]), names)
            scores[f"test_{head}_macro_f1"] = report["macro_f1"]
            scores["test_per_class"][head] = report["per_class"]
            scores["test_confusion_matrix"][head] = report["confusion_matrix"]
    return predicted, scores


def log_test_metrics(run_dir: Path, metrics: dict, step: int, predicted=None,
                     label_names=()) -> None:
    """Writes the test metrics as TensorBoard scalars under ``logs/test``, and for
    classifiers (``predicted``: :func:`score_test_split`'s labels and probabilities, per
    classification head for multi-task models) the test confusion matrix, per-class scores
    and PR curves (:func:`write_classification`)."""
    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "test"))
    with writer.as_default():
        for key, value in metrics.items():
            tf.summary.scalar(f"epoch_{key}", value, step=step)
        if isinstance(predicted, dict):
            for head, (labels, probabilities) in predicted.items():
                write_classification(labels, probabilities, list(label_names[head]), step, head)
        elif predicted is not None:
            write_classification(*predicted, list(label_names), step)
    writer.close()


def train(config: Config | str | None = None, overrides=(), *, callbacks=(),
          resume: str | Path | None = None) -> RunResult:
    """Trains, evaluates and exports one model as the config says.

    Args:
        config: a :class:`Config`, a YAML path or preset name, or None for the default
            preset (``fine_foods_fasttext``: ``text_fasttext`` on the embedded fine-food reviews).
        overrides: ``"section.key=value"`` strings applied to a YAML config.
        callbacks: extra Keras callbacks, run after tfkit's own (TensorBoard, best
            checkpoint, BackupAndRestore, early stopping).
        resume: an interrupted run directory to continue (its config is used and
            BackupAndRestore picks up after the last finished epoch).

    Returns:
        A :class:`RunResult` with the run directory, test metrics and export path.

    Raises:
        ConfigError, DataError: before anything is written.

    Examples:
        >>> result = tfkit.train("fine_foods_fasttext", ["train.verbose=0"])  # ~15 s
        >>> result.metrics["test_accuracy"] > 0.78  # 0.805 with the preset's seeds
        True
        >>> result.export_path.parts[-2:]
        ('fine_foods_fasttext', '1')
    """
    if resume is None and not isinstance(config, Config):
        config = load_config(config, overrides)
    # the strategy comes first: multi-worker collectives must be set up before TF starts
    settings = (config if resume is None else load_config(Path(resume) / "config.yaml")).train
    strategy = resolve_strategy(settings.strategy, tpu=settings.tpu, devices=settings.devices,
                                tf_config=settings.tf_config)
    chief, worker = is_chief(strategy), task_id(strategy)
    if resume is None and config.train.run_name:
        candidate = run_path(config, chief, worker)
        if candidate.exists():
            resume = candidate  # a named run that was interrupted: carry on
    if resume is not None:
        run_dir = Path(resume).resolve()
        state = read_status(run_dir)["state"]
        if state != "running" and state != "failed":
            raise ConfigError(f"cannot resume '{run_dir}': its state is '{state}' "
                              "(only an interrupted or failed run can be resumed; "
                              "choose another train.run_name for a new run).")
        config = load_config(run_dir / "config.yaml")
    keras.utils.set_random_seed(config.train.seed)
    data = load_data(config.data)
    warn_small_splits(data)
    if resume is not None:
        preprocessor = load_preprocessor(run_dir)
    else:
        preprocessor = make_preprocessor(config, data)
    replicas = strategy.num_replicas_in_sync
    batch_size = config.train.batch_size * replicas
    log.info("batch size %d per replica x %d replica(s) = %d global",
             config.train.batch_size, replicas, batch_size)
    jit_setting(config, replicas)  # a refused combination fails here, before any folder exists
    if config.export.enabled:  # and an export that would replace another model's answers
        check_next_version(export_dir(config), data.label_names, preprocessor)
    weights = class_weights(config, data)
    if weights is not None:
        log.info("class weights: %s", ", ".join(
            f"{name} {w:.3g}" for name, w in zip(data.label_names, weights)))
    train_ds = make_dataset(data.train, preprocessor, config, batch_size, training=True,
                            weights=weights)
    val_ds = (make_dataset(data.validation, preprocessor, config, batch_size, training=False)
              if len(data.validation) else None)
    test_ds = make_dataset(data.test, preprocessor, config, batch_size, training=False)

    heads = head_specs(data)
    monitor = monitored(config, val_ds is not None, heads, is_multi_worker(strategy))
    with precision_policy(config.train.mixed_precision):
        with strategy.scope():
            try:  # the builder checks its arguments' values: fail before any folder exists
                model = build_model(config.model.name, num_classes=data.num_classes, heads=heads,
                                    vocab_size=getattr(preprocessor, "vocab_size", None),
                                    input_shape=getattr(preprocessor, "input_shape", None),
                                    **config.model.params)
                if not model.built:  # a Sequential without keras.Input: fit would build it
                    # after the run folder exists and after BackupAndRestore refused it
                    model(next(iter(train_ds.take(1)))[0], training=False)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"model.params of model '{config.model.name}' "
                                  f"{dict(config.model.params)}: {exc}") from exc
            vectors = None
            if config.model.word_vectors is not None:  # before compile: a frozen embedding
                vectors = load_word_vectors(  # has no optimizer slots (a resumed run too)
                    model, preprocessor.vocabulary(), config.model.word_vectors,
                    config.model.freeze_word_vectors)
                log.info("word vectors: %d of %d words found in %s (%.1f%%)%s",
                         vectors["words_found"], vectors["vocabulary"], vectors["path"],
                         100 * vectors["coverage"], ", frozen" if vectors["frozen"] else "")
            compile_model(model, config, heads, replicas,
                          epoch_steps(config, train_ds))
        if resume is None:
            run_dir = create_run_dir(config, chief, worker)
            save_config(config, run_dir / "config.yaml")
            preprocessor.save(run_dir)
        write_status(run_dir, "running")
        # only the chief keeps logs and the model; other workers write logs to a temporary
        # folder that is removed at the end, and keep just their own backup and best weights
        out_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix=f"tfkit-worker-{worker}-"))
        log.info("run directory: %s%s", run_dir, "" if chief else f" (worker {worker}, not the chief)")
        extra = []  # TensorBoard extras: the chief's only, classifiers with validation
        if chief and val_ds is not None and (not heads or any(
                "num_classes" in spec for spec in heads.values())):
            extra.append(ConfusionMatrix(out_dir / "logs", val_ds, data.label_names))
        if chief:
            log_hparams(out_dir / "logs", config.to_dict(), run_dir.name)
        progress = RunProgress(run_dir)  # epochs and seconds of every attempt at this run
        trained = progress.state["trained"] and (run_dir / "model.keras").is_file()
        try:
            with multi_worker_fixes(strategy):
                if trained:  # killed after training (while exporting, say): do not train again
                    log.info("resuming after training: the trained model is '%s'",
                             run_dir / "model.keras")
                    with warnings.catch_warnings():  # its optimizer state is not needed
                        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
                        model.load_weights(run_dir / "model.keras")
                    history_dict = {}
                    best = (best_epoch(best_weights_path(run_dir)) or {}).get("epoch")
                else:
                    history = model.fit(
                        train_ds, validation_data=val_ds, epochs=config.train.epochs,
                        steps_per_epoch=config.train.steps_per_epoch,
                        callbacks=[progress] + make_callbacks(
                            out_dir, run_dir, config, monitor, is_multi_worker(strategy),
                            extra, batch_size) + list(callbacks),
                        shuffle=False,
                        verbose=fit_verbosity(config.train.verbose))
                    history_dict = {k: [float(v) for v in values]
                                    for k, values in history.history.items()}
                    best = restore_best_weights(model, best_weights_path(run_dir))
                if is_multi_worker(strategy):  # one model everywhere, the chief's: after a
                    broadcast(strategy, model.variables)  # repaired restart best files may differ
                test = model.evaluate(test_ds, return_dict=True, verbose=0)
            epochs_run, seconds = progress.state["epochs"], progress.state["train_seconds"]
            metrics = {f"test_{k}": float(v) for k, v in test.items()}
            metrics.update({
                "train_seconds": round(seconds, 2), "epochs": epochs_run, "best_epoch": best,
                "resumes": progress.state["attempts"] - 1,
                "train_examples_per_second": round(len(data.train) * epochs_run / seconds, 1)
                if epochs_run and seconds else 0.0,
                "train_examples": len(data.train), "validation_examples": len(data.validation),
                "test_examples": len(data.test), "label_names": data.label_names,
                "replicas": replicas, "model": config.model.name, "heads": heads,
                "class_weights": None if weights is None else
                dict(zip(data.label_names, weights.tolist())),
                "word_vectors": vectors,
            })
            export_path = None
            if not chief:
                shutil.rmtree(run_dir, ignore_errors=True)  # its backup is no longer needed
                with contextlib.suppress(OSError):
                    run_dir.parent.rmdir()  # the run folder, when only this worker used it
                return RunResult(None, metrics, history_dict, model, preprocessor, data.label_names,
                                 None)
            model.save(run_dir / "model.keras")
            progress.finish_training()
            # per-class scores on the test split (per classification head for multi-task)
            predicted, report = score_test_split(model, test_ds, data.label_names)
            metrics.update(report)
            log_test_metrics(run_dir, test, max(epochs_run - 1, 0), predicted, data.label_names)
            log_graph(run_dir / "logs", serving_function(model, preprocessor, data.label_names))
            if isinstance(preprocessor, TextPreprocessor):  # hierarchical ones included
                log_embeddings(run_dir / "logs", model, preprocessor.vocabulary())
            if (isinstance(preprocessor, (TextPreprocessor, ImagePreprocessor))
                    and len(data.validation) and not heads):
                log_misclassified(run_dir / "logs", model, preprocessor, data.validation.x,
                                  data.validation.y, data.label_names,
                                  step=max(epochs_run - 1, 0))
                if has_attention(model):
                    log_attention(run_dir / "logs", model, preprocessor, data.validation.x,
                                  data.validation.y, data.label_names, step=max(epochs_run - 1, 0))
            published = {}
            if config.export.enabled:
                blessing = (bless(metrics, data, export_dir(config), config.export.max_regression)
                            if config.export.blessing else None)
                metrics["blessing"] = blessing
                if blessing is None or blessing["blessed"]:
                    export_path = export_for_serving(
                        model, preprocessor, data.label_names, export_dir(config),
                        preprocessor.export_samples(data.test.x),
                        serving_root=config.export.serving_root,
                        metadata={"run_dir": str(run_dir), "metrics": metrics})
                    metrics["export_path"] = str(export_path)
                else:
                    published = {"published": False, "not_published": blessing["reasons"]}
                    log.warning("not published for serving: %s. To publish it anyway: tfkit "
                                "export %s --force", "; ".join(blessing["reasons"]), run_dir)
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
            write_status(run_dir, "finished", test_accuracy=metrics.get("test_accuracy"),
                         **published)
            log.info("finished: %s", run_summary(metrics, run_dir))
        except BaseException as exc:
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            if not chief:
                shutil.rmtree(out_dir, ignore_errors=True)
    return RunResult(run_dir, metrics, history_dict, model, preprocessor, data.label_names,
                     export_path)


def run_summary(metrics: dict, run_dir: Path) -> str:
    """One line for people: the test scores, the best epoch, the time, where things are."""
    scores = ", ".join(f"{key[5:]} {value:.4g}" for key, value in metrics.items()
                       if key.startswith("test_") and isinstance(value, float))
    best = metrics.get("best_epoch")
    parts = [f"test {scores}",
             f"best epoch {best} of {metrics['epochs']}" if best else f"{metrics['epochs']} epochs",
             f"{metrics['train_seconds']} s of training"]
    if metrics.get("export_path"):
        parts.append(f"SavedModel {metrics['export_path']}")
    elif (metrics.get("blessing") or {}).get("reasons"):
        parts.append(f"NOT published for serving ({'; '.join(metrics['blessing']['reasons'])})")
    return "; ".join(parts + [f"tensorboard --logdir {run_dir}"])


@contextlib.contextmanager
def precision_policy(name: str):
    """Sets the Keras global dtype policy (``"none"`` = float32) for the block, then restores it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


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
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises TypeError, ValueError, KeyError... by cause
        reason = " ".join(str(exc).split())
        raise ConfigError(f"'{path}' cannot be loaded as a Keras model: "
                          f"{reason[:300]}{'...' if len(reason) > 300 else ''} (a custom layer "
                          "must be importable and registered with "
                          "keras.saving.register_keras_serializable).") from None


def evaluate(run_dir: str | Path, data_overrides=()) -> dict:
    """Evaluates a finished run's model on its config's test split; returns the metrics
    (``model.evaluate``'s, and for single-task classifiers :func:`score_test_split`'s) and
    ``test_examples``. Given a SavedModel instead (``saved_models/<name>`` or a version
    folder), scores what TF Serving would serve: :func:`evaluate_saved_model`.

    Args:
        run_dir: a finished run, or an exported text model.
        data_overrides: ``"data.key=value"`` strings, e.g. ``"data.test_path=new.csv"`` to
            score the model on newly labelled data. Only the data section can change: the
            model, its preprocessing and its training are the run's.

    Raises:
        ConfigError: for an override outside ``data.``, or labels that differ from the run's.
    """
    for text in data_overrides:
        if not text.strip().startswith("data."):
            raise ConfigError(f"evaluate --set {text!r}: only data.* keys can change (the "
                              "model, its preprocessing and its training are the run's).")
    if not (Path(run_dir) / "status.json").is_file() and is_saved_model(run_dir):
        return evaluate_saved_model(run_dir, data_overrides)
    config, model, preprocessor, label_names = load_run(run_dir)
    if data_overrides:
        config = load_config(Path(run_dir) / "config.yaml", data_overrides)
    data = load_data(config.data)
    if data.label_names != label_names:
        raise ConfigError(f"the data's labels {data.label_names} differ from the run's {label_names}.")
    heads = head_specs(data)
    compile_model(model, config, heads)
    test_ds = make_dataset(data.test, preprocessor, config, config.train.batch_size, training=False)
    metrics = {f"test_{k}": float(v) for k, v in
               model.evaluate(test_ds, return_dict=True, verbose=0).items()}
    metrics.update(score_test_split(model, test_ds, label_names)[1])
    return {**metrics, "test_examples": len(data.test)}


def evaluate_saved_model(path: str | Path, data_overrides=()) -> dict:
    """Scores an exported classifier on labelled data through its ``serving_default``
    signature, raw strings (or PNG-encoded images) in, as TF Serving would answer: is the
    version you serve still right on this month's labelled reviews?

    The data are the test split of the config of the run that exported it
    (``assets.extra/tfkit.json``'s ``run_dir``) changed by ``data_overrides``, or of the
    default config when that run is gone. Labels are matched to the export's by name.
    Returns :func:`tfkit.evaluation.score_saved_model`'s scores.
    """
    version = version_folder(path)
    facts = export_facts(version) if (version / "saved_model.pb").is_file() else {}
    if facts is None:
        raise FileNotFoundError(f"'{version}' has no assets.extra/tfkit.json (not a tfkit export?).")
    run_config = Path(facts.get("run_dir", "-"), "config.yaml")
    config = load_config(run_config if run_config.is_file() else None, data_overrides)
    return score_saved_model(version, load_data(config.data))


def export_run(run_dir: str | Path, base_dir: str | None = None, name: str | None = None,
               force: bool = False) -> Path:
    """Exports a finished run as the next SavedModel version (``tfkit export``).

    ``base_dir`` may be any folder; ``name`` (default: the run's ``export.name`` or ``name``)
    must be one folder name inside it (:func:`tfkit.config.check_name`). Unless ``force``,
    the model must pass the checks that ``train`` runs before publishing
    (:func:`tfkit.evaluation.bless`, when the run's ``export.blessing`` is on), against the
    version that folder serves now.

    Raises:
        NotPublished: for a model that fails those checks, naming why.
        ExportError: for an export that fails.
    """
    check_name("export --name", name)
    config, model, preprocessor, label_names = load_run(run_dir)
    data = load_data(config.data)
    model_dir = Path(base_dir or config.export.base_dir, name or config.export.name or config.name)
    check_next_version(model_dir, label_names, preprocessor)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    if config.export.blessing and not force:
        blessing = bless(metrics, data, model_dir, config.export.max_regression)
        if not blessing["blessed"]:
            raise NotPublished(f"'{run_dir}' is not published: {'; '.join(blessing['reasons'])}. "
                               "tfkit export --force publishes it anyway.")
    return export_for_serving(model, preprocessor, label_names, model_dir,
                              preprocessor.export_samples(data.test.x),
                              serving_root=config.export.serving_root,
                              metadata={"run_dir": str(run_dir), "metrics": metrics})
