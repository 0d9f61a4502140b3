"""The compile recipe: optimizer, learning-rate schedule, losses and metrics (per head for
multi-task models), XLA and the dtype policy."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from tfkit.config import Config, ConfigError, warmup_epochs
from tfkit.data import LabeledData
from tfkit.distillation import DistillationLoss, LabelAccuracy
from tfkit.monitor import ClassCounts
from tfkit.optimizers import LazyAdam, WarmUp

WEIGHTED_MEAN = "mean_with_sample_weight"  # a loss's mean over the rows that weigh


OPTIMIZERS = {"adam": keras.optimizers.Adam, "lazy_adam": LazyAdam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}  # train.optimizer


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


def epoch_steps(config: Config, dataset: tf.data.Dataset, examples: int, batch_size: int) -> int:
    """Steps in one epoch: ``train.steps_per_epoch``, or the training dataset's batches
    (tfkit's datasets in memory know their number of batches, length buckets included; for
    streamed data, ``examples / batch_size`` rounded up: length buckets make a few more)."""
    batches = int(dataset.cardinality())
    return config.train.steps_per_epoch or (batches if batches >= 0 else
                                            max(1, -(-examples // batch_size)))


def learning_rate(config: Config, replicas: int = 1, steps_per_epoch: int = 1):
    """``train.learning_rate`` (times ``replicas`` with ``scale_learning_rate``), constant or
    decaying to 0 over ``train.epochs * steps_per_epoch`` steps (``train.lr_schedule``),
    after a linear warm-up over the first ``train.warmup_epochs`` (:class:`WarmUp`).

    The TensorBoard callback logs the rate each epoch, whichever schedule.
    """
    rate = config.train.learning_rate
    if config.train.scale_learning_rate:
        rate *= replicas  # the linear scaling rule for a global batch `replicas` x larger
    warm = round(warmup_epochs(config.train) * steps_per_epoch)
    steps = max(1, config.train.epochs * steps_per_epoch - warm)
    if config.train.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps)
    elif config.train.lr_schedule == "linear":
        rate = keras.optimizers.schedules.PolynomialDecay(rate, decay_steps=steps,
                                                          end_learning_rate=0.0)
    return WarmUp(rate, warm) if warm else rate


def compile_model(model: keras.Model, config: Config, heads: dict | None = None,
                  replicas: int = 1, steps_per_epoch: int = 1) -> None:
    """Compiles with the configured optimizer, sparse cross-entropy, accuracy and macro F1
    (:class:`tfkit.monitor.ClassCounts`, which keeps the counts the validation confusion
    matrix and PR curves are drawn from).

    Losses average over the sample weights and the metrics are ``weighted_metrics``: the
    filler rows of the training batches (``token_dataset(full_batches=True)``) weigh 0.

    With ``train.teacher`` (knowledge distillation): :class:`tfkit.distillation.DistillationLoss`
    and the accuracy of the label ids the training targets carry before the teacher's
    probabilities.

    Multi-label (``data.multi_label``: multi-hot targets, sigmoid outputs): binary cross-entropy,
    micro and macro F1 and subset accuracy, each label answered at probability 0.5 (the
    thresholds chosen on the validation split after training apply to the test scores and
    the export).

    Multi-task (``heads`` from :func:`head_specs`): per head, cross-entropy and accuracy
    for classification, mean squared error and MAE for regression. A regression loss is
    weighted by ``1 / std**2`` on top of ``train.loss_weights``, i.e. it is the MSE of the
    standardised target, so heads in years and in class probabilities weigh alike.
    """
    rate = learning_rate(config, replicas, steps_per_epoch)
    optimizer = OPTIMIZERS[config.train.optimizer](learning_rate=rate)
    loss, loss_weights, metrics = losses_and_metrics(model, config, heads)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights,
                  weighted_metrics=metrics, jit_compile=jit_setting(config, replicas),
                  steps_per_execution=config.train.steps_per_execution)


def build_state(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Makes a compiled model's optimizer, loss and metric variables from ``dataset``'s
    element spec, before ``fit``. Keras does this itself under a distribution strategy; on
    one device it leaves them to the first train step, and a ``tf.function`` that makes
    variables is traced twice (0.1-0.4 s more per run of a tiny model, measured)."""
    if model._distribute_strategy is None:  # Keras's own build, as under a strategy
        model._symbolic_build(data_batch=dataset.element_spec)


def losses_and_metrics(model: keras.Model, config: Config, heads: dict | None):
    """``(loss, loss_weights, weighted_metrics)`` for :func:`compile_model`."""
    if config.data.multi_label:
        return (keras.losses.BinaryCrossentropy(reduction=WEIGHTED_MEAN), None,
                multi_label_metrics())
    if not heads:
        classes = model.output_shape[-1]
        counts = ClassCounts(classes)
        if config.train.teacher:  # targets: [label id, the teacher's probabilities...]
            loss = DistillationLoss(classes, config.train.distill_alpha,
                                    config.train.distill_temperature, reduction=WEIGHTED_MEAN)
            return loss, None, [LabelAccuracy(classes), counts]
        return (keras.losses.SparseCategoricalCrossentropy(reduction=WEIGHTED_MEAN), None,
                ["accuracy", counts])
    weights = config.train.loss_weights or {}
    losses, loss_weights, metrics = {}, {}, {}
    for head, spec in heads.items():
        weight = float(weights.get(head, 1.0))
        if "num_classes" in spec:
            losses[head] = keras.losses.SparseCategoricalCrossentropy(reduction=WEIGHTED_MEAN)
            metrics[head] = ["accuracy", ClassCounts(spec["num_classes"], head)]
        else:
            losses[head], metrics[head] = keras.losses.MeanSquaredError(reduction=WEIGHTED_MEAN), ["mae"]
            weight /= spec["std"] ** 2
        loss_weights[head] = weight
    return losses, loss_weights, metrics


def multi_label_metrics() -> list:
    """Per-epoch metrics of a multi-label model, each label answered at probability 0.5:
    micro F1 (over every label decision), macro F1 (the mean of the labels' F1: rare labels
    count as much) and subset accuracy (every label of the example right)."""
    return [keras.metrics.F1Score(average="micro", threshold=0.5, name="micro_f1"),
            keras.metrics.F1Score(average="macro", threshold=0.5, name="macro_f1"),
            SubsetAccuracy()]


class SubsetAccuracy(keras.metrics.MeanMetricWrapper):
    """The share of examples whose every label is right at probability 0.5 (exact match)."""

    def __init__(self, name: str = "subset_accuracy", dtype=None):
        super().__init__(subset_accuracy, name=name, dtype=dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


def subset_accuracy(y_true, y_pred):
    """1 where every label of the example is right at probability 0.5, else 0."""
    right = keras.ops.equal(keras.ops.cast(y_true > 0.5, "int32"),
                            keras.ops.cast(y_pred > 0.5, "int32"))
    return keras.ops.cast(keras.ops.all(right, axis=-1), "float32")


@contextlib.contextmanager
def precision_policy(name: str):
    """Sets the Keras global dtype policy (``"none"`` = float32) for the block, then restores it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
