"""Knowledge distillation (Hinton et al. 2015): a student trained on a teacher's softened
probabilities as well as on the true labels (``train.teacher``).

The teacher is read as it is served: a SavedModel on raw inputs (any export tfkit wrote, so
the teacher may come from another machine or another vocabulary), or a finished run folder
(its model and preprocessor, traced as its export would be). Its probabilities on the
training split are computed once, before training, in batches, and travel with the labels
through the student's own tf.data pipeline: each training target is ``[label id, teacher's
probability of each class]``. The loss (:class:`DistillationLoss`) and the metrics read the
label id from column 0; validation and test targets are plain label ids, so ``val_loss`` and
the test scores are the student's own cross-entropy and accuracy, comparable with a student
trained alone.

Keras 3 has ``keras.distillation.Distiller``; it runs the teacher, a Keras model on the
student's own inputs, at every training step. tfkit's teachers take raw inputs through
their own preprocessing, and a large teacher at every step of every epoch would cost more
than the whole student's training, hence one pass and the targets.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfkit.config import Config, ConfigError
from tfkit.data import LabeledData, Split
from tfkit.export import serving_function
from tfkit.monitor import hard_labels
from tfkit.runs import load_run
from tfkit.served import ServedModel

log = logging.getLogger("tfkit")

TEACHER_BATCH = 256  # inputs per call of the teacher
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before their logarithm


@keras.saving.register_keras_serializable(package="tfkit")
class DistillationLoss(keras.losses.Loss):
    """``(1 - alpha) x`` cross-entropy with the label ``+ alpha x T^2 x KL(teacher_T ||
    student_T)``, where ``p_T`` is ``p`` softened by the temperature ``T`` (``softmax(log p /
    T)``: the model's logits over ``T``). Targets ``[batch, 1 + classes]`` carry the label id
    and the teacher's probabilities; plain label ids (validation, test) get the cross-entropy
    alone.

    Examples:
        >>> loss = DistillationLoss(num_classes=2, alpha=1.0, temperature=1.0)
        >>> round(float(loss([[0, 0.9, 0.1]], [[0.9, 0.1]])), 6)  # student = teacher
        0.0
        >>> round(float(loss([[0]], [[0.9, 0.1]])), 4)  # a label id alone: cross-entropy
        0.1054
    """

    def __init__(self, num_classes: int, alpha: float = 0.5, temperature: float = 2.0,
                 reduction="sum_over_batch_size", name: str = "distillation", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes, self.alpha, self.temperature = int(num_classes), alpha, temperature

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.cast(y_pred, "float32")
        labels = hard_labels(y_true, self.num_classes)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            ops.cast(labels, "int32"), y_pred)
        if labels is y_true:  # label ids alone
            return cross_entropy
        t = self.temperature
        teacher = ops.log_softmax(ops.log(ops.clip(ops.cast(y_true[:, 1:], "float32"),
                                                   EPSILON, 1.0)) / t, axis=-1)
        student = ops.log_softmax(ops.log(ops.clip(y_pred, EPSILON, 1.0)) / t, axis=-1)
        divergence = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1) * (t * t)
        return (1.0 - self.alpha) * cross_entropy + self.alpha * divergence

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha,
                "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfkit")
class LabelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Keras's accuracy of label ids, for targets that may carry a teacher's probabilities
    after the id (:class:`DistillationLoss`)."""

    def __init__(self, num_classes: int, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(hard_labels(y_true, self.num_classes), y_pred, sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


class Teacher:
    """A trained classifier answering raw inputs: a SavedModel's ``serving_default`` or a
    finished run's model behind its preprocessor.

    Raises:
        ConfigError: for a path that is neither, or a multi-task model.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"train.teacher: '{path}' does not exist (a finished run folder, "
                              "or a SavedModel: saved_models/<name> or one of its versions).")
        if (self.path / "status.json").is_file():  # a run folder
            _, model, preprocessor, names = load_run(self.path)
            function = serving_function(model, preprocessor, names)
            self.input_key, self.label_names = preprocessor.serving_input, names
            self._call = function
        else:
            try:
                served = ServedModel(self.path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"train.teacher: '{path}' is neither a finished tfkit run "
                                  f"nor a SavedModel tfkit can read: {exc}") from None
            self.input_key, self.label_names = served.input_key, served.label_names
            dtype = served.signature.structured_input_signature[1][served.input_key].dtype
            self._call = lambda batch: served.signature(
                **{served.input_key: tf.constant(served.prepare(batch), dtype)})
        if isinstance(self.label_names, dict):
            raise ConfigError(f"train.teacher: '{path}' is a multi-task model; a teacher must "
                              "be a single-task classifier.")

    def probabilities(self, inputs, columns: list[int]) -> np.ndarray:
        """The teacher's probabilities for ``inputs`` (what clients send), columns in the
        student's label order."""
        out = self._call(inputs)["probabilities"].numpy()
        return out[:, columns].astype(np.float32)


def _columns(teacher: Teacher, label_names: list[str]) -> list[int]:
    if sorted(teacher.label_names) != sorted(label_names):
        raise ConfigError(f"train.teacher '{teacher.path}' answers the labels "
                          f"{sorted(teacher.label_names)}; the data's labels are "
                          f"{sorted(label_names)}: a teacher must answer the same labels.")
    return [list(teacher.label_names).index(name) for name in label_names]


def _answer(teacher: Teacher, batches, preprocessor, columns
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The teacher's probabilities on ``batches`` (``(x, y)`` or ``(key hashes, x, y)``), the
    label ids and the key hashes (None without them), in the batches' order."""
    probabilities, labels, hashes = [], [], []
    for batch in batches:
        *keys, x, y = batch
        probabilities.append(teacher.probabilities(preprocessor.client_inputs(x), columns))
        labels.append(np.asarray(y).reshape(-1))
        hashes += keys
    classes = len(columns)
    return (np.concatenate(probabilities) if probabilities else np.zeros((0, classes), np.float32),
            np.concatenate(labels) if labels else np.zeros((0,), np.int64),
            np.concatenate(hashes) if hashes else None)


def teach(config: Config, data: LabeledData, preprocessor):
    """The training split with targets ``[label id, teacher's probabilities...]``, and facts
    for ``metrics.json`` (the teacher, ``alpha``, ``temperature``, the teacher's accuracy on
    the training and test splits, the seconds its pass took).

    Data in memory: a :class:`tfkit.data.Split` whose ``y`` holds those targets. Streamed
    data: the same :class:`tfkit.data.streams.StreamSplit` with ``taught`` set (each
    example's key hash and the teacher's probabilities: 8 + 4 x classes bytes per example,
    never the inputs), which its stream joins to each example as it reads it.

    Raises:
        ConfigError: before any run folder exists, for a teacher that cannot teach this data
            (see :class:`Teacher`; other labels; another input; multi-task data).
    """
    t = config.train
    if data.heads:
        raise ConfigError("train.teacher: distillation trains single-task classifiers; "
                          "this data has data.heads.")
    teacher = Teacher(t.teacher)
    if teacher.input_key != preprocessor.serving_input:
        raise ConfigError(f"train.teacher '{t.teacher}' takes '{teacher.input_key}' inputs; "
                          f"this data gives the model '{preprocessor.serving_input}'.")
    columns = _columns(teacher, list(data.label_names))
    started = time.perf_counter()
    train = data.train
    try:
        soft, labels, hashes = _answer(teacher, train.keyed_batches(TEACHER_BATCH)
                                       if train.streamed else train.batches(TEACHER_BATCH),
                                       preprocessor, columns)
        test_soft, test_labels, _ = _answer(teacher, data.test.batches(TEACHER_BATCH),
                                            preprocessor, columns)
    except (tf.errors.OpError, ValueError) as exc:
        raise ConfigError(f"train.teacher '{t.teacher}' could not answer the training "
                          f"inputs: {str(exc).splitlines()[0][:300]}") from None
    seconds = time.perf_counter() - started
    facts = {"teacher": str(teacher.path), "alpha": t.distill_alpha,
             "temperature": t.distill_temperature,
             "teacher_train_accuracy": round(float(np.mean(soft.argmax(1) == labels)), 6),
             "teacher_test_accuracy": round(float(np.mean(test_soft.argmax(1) == test_labels)),
                                            6) if len(test_labels) else None,
             "teacher_seconds": round(seconds, 2)}
    log.info("teacher %s: answered %d training and %d test examples in %.1f s; its accuracy "
             "%.4f on the training split, %s on the test split", teacher.path, len(labels),
             len(test_labels), seconds, facts["teacher_train_accuracy"],
             "-" if facts["teacher_test_accuracy"] is None
             else f"{facts['teacher_test_accuracy']:.4f}")
    if train.streamed:  # one answer per key (an input read twice gets the same answer)
        unique, first = np.unique(hashes, return_index=True)
        return dataclasses.replace(train, taught=(unique, soft[first])), facts
    targets = np.concatenate([labels[:, None].astype(np.float32), soft], axis=1)
    return Split(train.x, targets), facts
