"""TensorBoard extras beyond Keras' scalars: a confusion matrix per epoch, the run's hparams,
the learned word vectors and the validation texts the model gets most wrong.

- :class:`ConfusionMatrix` writes, after every epoch, the validation confusion matrix as
  an image (``Images`` tab) and as a table with the label names (``Text`` tab) into
  ``logs/validation`` (tags ``confusion_matrix`` and ``confusion_matrix_table``), with
  per-class precision, recall and F1 (``classification_report``), the macro F1 scalar
  (``epoch_macro_f1``, next to Keras's ``epoch_accuracy``) and a precision-recall curve per
  class (``PR Curves`` tab); :func:`write_classification` does the same for the test split at
  the end of a run (``logs/test``).
- :class:`Throughput` adds the epoch's training speed, ``examples_per_second`` (validation
  excluded), to the epoch's logs: ``epoch_examples_per_second`` in ``logs/train``.
- :func:`log_hparams` records the resolved config in ``logs/`` for the ``HParams`` tab,
  so runs with different settings can be compared next to their validation metrics.
- :func:`log_embeddings` writes the trained word embedding, labelled by word, for the
  ``Projector`` tab (into ``logs/train``).
- :func:`log_misclassified` writes the validation texts predicted wrong with the highest
  confidence as a table (``Text`` tab, ``logs/validation``, tag ``misclassified``).
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.pr_curve import summary as pr_curve

from tfkit.data.vectors import word_embedding
from tfkit.explain import attention_weights, word_importance
from tfkit.metrics import classification_report, confusion_counts

EMBEDDING_TENSOR = "word_embedding/.ATTRIBUTES/VARIABLE_VALUE"  # its name in the checkpoint


def confusion_image(matrix: np.ndarray, label_names: list[str]) -> np.ndarray:
    """The matrix, rows normalised, as an ``uint8 [1, h, w, 4]`` image (matplotlib's pixels,
    which ``tf.summary.image`` encodes: no PNG written and decoded again)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no global state, safe in any thread

    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.45 * len(label_names)
    figure = Figure(figsize=(size + 1, size), dpi=80)
    canvas = FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(label_names) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                        color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[None].copy()


def traced_call(model: keras.Model):
    """``model(x, training=False)`` in a ``tf.function`` (traced once per input signature,
    with relaxed shapes for length buckets).

    Called eagerly, a recurrent model runs its time loop op by op in Python, which took ~8 s
    per epoch for ``text_lstm`` on 400 reviews. Not ``model.predict``: under a multi-worker
    strategy only the chief runs these extras, and ``predict`` would wait on the other
    workers' collectives.

    One function per model, shared by every caller (the epoch's confusion matrix, the
    misclassified examples, the test scores): each shape is traced once per run, not once
    per caller, and TensorFlow does not warn about functions retraced in a loop.
    """
    traced = _TRACED.get(model)
    if traced is None:
        weak = weakref.ref(model)  # the cache must not keep the model alive
        traced = _TRACED[model] = tf.function(lambda x: weak()(x, training=False),
                                              reduce_retracing=True)
    return traced


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> traced_call


def predictions(predict, dataset):
    """``(label ids, probabilities)`` of ``predict`` (:func:`traced_call`) over ``(x, y)``
    batches; for a multi-task model both are ``{head: array}``; multi-hot targets (a
    multi-label model's) stay ``[n, labels]``."""
    def targets(t):
        t = np.asarray(t)
        return t if t.ndim == 2 and t.shape[-1] > 1 else t.reshape(-1)

    labels, probabilities = [], []
    for x, y in dataset:
        labels.append(tf.nest.map_structure(targets, y))
        probabilities.append(tf.nest.map_structure(np.asarray, predict(x)))
    return (tf.nest.map_structure(lambda *parts: np.concatenate(parts), *labels),
            tf.nest.map_structure(lambda *parts: np.concatenate(parts), *probabilities))


PR_THRESHOLDS = 201  # points of each precision-recall curve (TensorBoard's default)


def hard_labels(y_true, num_classes: int):
    """The label ids in ``y_true``: column 0 of targets that carry a teacher's probabilities
    after the id (``[batch, 1 + classes]``, knowledge distillation), else ``y_true`` itself."""
    shape = tuple(y_true.shape)
    if len(shape) == 2 and shape[-1] == num_classes + 1:
        return y_true[:, :1]
    return y_true


@keras.saving.register_keras_serializable(package="tfkit")
class ClassCounts(keras.metrics.Metric):
    """Macro F1 (its result) from the counts it keeps over the batches it sees: the
    confusion matrix ``[true, predicted]`` and, per class against the others, the
    positives and negatives in each of :data:`PR_THRESHOLDS` probability buckets (the raw
    data of a precision-recall curve). Weighted by the sample weights (the filler rows of
    full batches weigh 0).

    Compiled with each classification head, it makes Keras's own validation pass compute
    ``val_macro_f1`` (under any strategy, summed over replicas and workers) and leaves the
    counts of that pass in its variables for :class:`ConfusionMatrix`: the validation
    confusion matrix and PR curves cost no second pass over the validation data.
    """

    def __init__(self, num_classes: int, head: str | None = None, name: str = "macro_f1",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.head = int(num_classes), head  # Keras prefixes the head's name
        shape = (self.num_classes, PR_THRESHOLDS)
        self.matrix = self.add_variable((self.num_classes, self.num_classes), "zeros",
                                        name="matrix")
        self.positives = self.add_variable(shape, "zeros", name="positives")
        self.negatives = self.add_variable(shape, "zeros", name="negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        classes = self.num_classes
        probabilities = ops.reshape(ops.cast(y_pred, "float32"), (-1, classes))
        y_true = hard_labels(y_true, classes)
        truth = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes)
        weight = (ops.ones_like(truth[:, 0]) if sample_weight is None
                  else ops.reshape(ops.cast(sample_weight, "float32"), (-1,)))
        truth = truth * weight[:, None]  # [batch, class]: weight where the label is the class
        predicted = ops.one_hot(ops.argmax(probabilities, axis=-1), classes)
        self.matrix.assign_add(ops.matmul(ops.transpose(truth), predicted))
        buckets = ops.one_hot(ops.cast(ops.floor(ops.clip(probabilities, 0.0, 1.0)
                                                 * (PR_THRESHOLDS - 1)), "int32"), PR_THRESHOLDS)
        self.positives.assign_add(ops.sum(buckets * truth[:, :, None], axis=0))
        self.negatives.assign_add(ops.sum(buckets * (weight[:, None] - truth)[:, :, None], axis=0))

    def result(self):
        ops = keras.ops
        hits = ops.diagonal(self.matrix)
        precision = ops.divide_no_nan(hits, ops.sum(self.matrix, axis=0))
        recall = ops.divide_no_nan(hits, ops.sum(self.matrix, axis=1))
        return ops.mean(ops.divide_no_nan(2 * precision * recall, precision + recall))

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(confusion matrix, positives, negatives)`` as NumPy (what :func:`write_counts` takes)."""
        return (np.rint(self.matrix.numpy()).astype(np.int64), self.positives.numpy(),
                self.negatives.numpy())

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "head": self.head}


def class_counts(labels: np.ndarray, probabilities: np.ndarray):
    """What :class:`ClassCounts` keeps, from label ids and probabilities (NumPy)."""
    probabilities = np.asarray(probabilities, np.float32)
    positives, negatives = bucket_counts(np.eye(probabilities.shape[-1])[labels], probabilities)
    return confusion_counts(labels, probabilities), positives, negatives


def bucket_counts(truth: np.ndarray, probabilities: np.ndarray):
    """``(positives, negatives)``: per label, how many examples that have it (``truth`` 1)
    and that lack it fall in each of :data:`PR_THRESHOLDS` probability buckets."""
    probabilities = np.asarray(probabilities, np.float32)
    classes = probabilities.shape[-1]
    finite = np.isfinite(probabilities)  # a diverged model's NaN falls in no bucket
    buckets = np.floor(np.clip(np.where(finite, probabilities, 0), 0, 1)
                       * (PR_THRESHOLDS - 1)).astype(int)
    positives, negatives = np.zeros((classes, PR_THRESHOLDS)), np.zeros((classes, PR_THRESHOLDS))
    for c in range(classes):
        ok = finite[:, c]
        np.add.at(positives[c], buckets[ok, c], truth[ok, c])
        np.add.at(negatives[c], buckets[ok, c], 1 - truth[ok, c])
    return positives, negatives


def write_classification(labels: np.ndarray, probabilities: np.ndarray,
                         label_names: list[str], step: int, head: str | None = None) -> dict:
    """:func:`write_counts` of label ids and probabilities (the test split's), with the
    macro F1 scalar (``epoch_macro_f1``)."""
    return write_counts(*class_counts(labels, probabilities), label_names, step, head,
                        scalar=True)


def write_counts(matrix: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                 label_names: list[str], step: int, head: str | None = None,
                 scalar: bool = False) -> dict:
    """Into the default summary writer: the confusion matrix as an image (tag
    ``confusion_matrix``) and as a table with the label names (``confusion_matrix_table``),
    per-class precision, recall and F1 (``classification_report``), with ``scalar`` the
    macro F1 scalar (``epoch_macro_f1``; during training Keras's TensorBoard callback logs
    it) and one precision-recall curve per class, that class against the others (PR Curves
    tab, tag ``<label>/pr_curves``, :data:`PR_THRESHOLDS` thresholds) from the per-bucket
    ``positives`` and ``negatives`` (:class:`ClassCounts`). For a multi-task model's
    ``head`` the tags are ``<head>/confusion_matrix``, ``epoch_<head>_macro_f1``,
    ``<head>/<label>/pr_curves``, .... Returns the :func:`classification_report`."""
    tag = f"{head}/" if head else ""
    report = classification_report(matrix, label_names)
    counts = ["| true \\ predicted | " + " | ".join(label_names) + " |",
              "|---" * (len(label_names) + 1) + "|"] + [
        f"| **{name}** | " + " | ".join(str(v) for v in matrix[i]) + " |"
        for i, name in enumerate(label_names)]
    scores = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"] + [
        f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        for name, c in report["per_class"].items()] + [
        f"| **macro average** | {report['macro_precision']:.3f} | {report['macro_recall']:.3f} "
        f"| {report['macro_f1']:.3f} | {int(np.sum(matrix))} |"]
    tf.summary.image(f"{tag}confusion_matrix", confusion_image(matrix, label_names), step=step)
    tf.summary.text(f"{tag}confusion_matrix_table", "\n".join(counts), step=step)
    tf.summary.text(f"{tag}classification_report", "\n".join(scores), step=step)
    if scalar:
        tf.summary.scalar(f"epoch_{head}_macro_f1" if head else "epoch_macro_f1",
                          report["macro_f1"], step=step)
    write_pr_curves(positives, negatives, label_names, step, tag, "against the other classes")
    return report


def write_label_sets(targets: np.ndarray, probabilities: np.ndarray, report: dict,
                     step: int) -> None:
    """A multi-label model's test scores (``report``: :func:`tfkit.metrics.multi_label_report`
    at the chosen thresholds) into the default summary writer: the per-label table
    (``classification_report``: precision, recall, F1, support, threshold, and the micro and
    macro averages) and one precision-recall curve per label (label present or not)."""
    names = list(report["per_label"])
    rows = ["| label | precision | recall | F1 | support | threshold |",
            "|---|---|---|---|---|---|"] + [
        f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} "
        f"| {c['threshold']:.2f} |" for name, c in report["per_label"].items()] + [
        f"| **micro average** | | | {report['micro_f1']:.3f} | | |",
        f"| **macro average** | | | {report['macro_f1']:.3f} | | |",
        f"| **subset accuracy** | | | {report['subset_accuracy']:.3f} | | |"]
    tf.summary.text("classification_report", "\n".join(rows), step=step)
    write_pr_curves(*bucket_counts(np.asarray(targets) > 0.5, probabilities), names, step, "",
                    "present or not")


def write_pr_curves(positives: np.ndarray, negatives: np.ndarray, label_names: list[str],
                    step: int, tag: str, against: str) -> None:
    """One precision-recall curve per label (PR Curves tab, tag ``<tag><label>/pr_curves``)
    from the per-bucket counts of :func:`bucket_counts`."""
    for i, name in enumerate(label_names):
        tp = np.cumsum(positives[i][::-1])[::-1]  # predicted positive at threshold j or above
        fp = np.cumsum(negatives[i][::-1])[::-1]
        curve = pr_curve.raw_data_pb(
            f"{tag}{name}", true_positive_counts=tp, false_positive_counts=fp,
            true_negative_counts=fp[0] - fp, false_negative_counts=tp[0] - tp,
            precision=tp / np.maximum(1e-7, tp + fp), recall=tp / np.maximum(1e-7, tp[0]),
            num_thresholds=PR_THRESHOLDS, display_name=f"{tag}{name} ({against})")
        tf.summary.experimental.write_raw_pb(curve.SerializeToString(), step=step)


def head_counts(model: keras.Model) -> dict:
    """The model's compiled :class:`ClassCounts` metrics, ``{head or None: metric}``."""
    found, stack = {}, list(model.metrics)
    while stack:
        metric = stack.pop()
        if isinstance(metric, ClassCounts):
            found[metric.head] = metric
        stack.extend(getattr(metric, "metrics", []) if metric is not None else [])
    return found


class ConfusionMatrix(keras.callbacks.Callback):
    """Logs the validation confusion matrix, classification report and PR curves after every
    epoch into ``log_dir/validation`` (per classification head of a multi-task model, under
    ``<head>/...``), from the counts the compiled :class:`ClassCounts` metrics kept over
    Keras's own validation pass: no second pass. ``val_macro_f1`` (``val_<head>_macro_f1``)
    is that metric's result, in the epoch's logs as every Keras metric is.

    The counts are read at the end of each epoch (under a multi-worker strategy every worker
    reads them, in step); drawing and writing them (the matplotlib image, PR curves) happen
    in a background thread while the next epoch trains, and ``on_train_end`` waits for them.

    Args:
        log_dir: the run's ``logs`` folder; writes into ``log_dir/validation``.
        label_names: the class names, in id order; ``{head: names}`` for multi-task models
            (``[]`` for regression heads, which are skipped).
    """

    def __init__(self, log_dir, label_names):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.label_names = dict(label_names) if isinstance(label_names, dict) else list(label_names)
        self.writer = None
        self.background = None  # one thread: the epochs are written in order
        self.pending = []

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(str(self.log_dir / "validation"))
            self.background = ThreadPoolExecutor(1, thread_name_prefix="tfkit-confusion")
        heads = self.label_names if isinstance(self.label_names, dict) else {None: self.label_names}
        metrics = head_counts(self.model)
        counts = {head: metrics[head].counts() for head, names in heads.items()
                  if names and head in metrics}  # not the regression heads
        self.pending.append(self.background.submit(self._write, counts, heads, epoch))

    def _write(self, counts: dict, heads: dict, epoch: int) -> None:
        with self.writer.as_default():
            for head, values in counts.items():
                write_counts(*values, heads[head], epoch, head)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is None:
            return
        pending, self.pending = self.pending, []
        self.background.shutdown(wait=True)
        self.writer.close()
        self.writer = self.background = None
        for future in pending:
            future.result()  # an error while writing is raised here


class Throughput(keras.callbacks.Callback):
    """Adds ``examples_per_second`` to each epoch's logs: training steps x ``batch_size``
    (the global batch) over the time from the epoch's start to its last training step, so
    the validation pass is not counted. Placed before Keras's TensorBoard callback, it becomes
    the scalar ``epoch_examples_per_second`` in ``logs/train`` (compare devices, strategies
    and settings run by run); the progress line and the history show it too.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.started = self.last = 0.0
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        # with steps_per_execution > 1 this runs once per execution; ``batch`` is its last step
        self.steps, self.last = batch + 1, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.steps and self.last > self.started:
            logs["examples_per_second"] = self.steps * self.batch_size / (self.last - self.started)


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """``{"model.params.units": 64, ...}`` with values the HParams plugin accepts."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def log_hparams(log_dir, config: dict, run_name: str) -> None:
    """Writes the resolved config as this run's hyperparameters into ``log_dir``."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(flat_hparams(config), trial_id=run_name)
    writer.close()


def log_graph(log_dir, function) -> None:
    """The op graph of a traced ``function`` (:func:`tfkit.export.serving_function`: what TF
    Serving runs, preprocessing included) for TensorBoard's Graphs tab, run ``train``. Keras 3's
    TensorBoard callback writes only the conceptual graph (tag ``keras``): its op-graph hook
    looks for a ``tf.function`` ``train_function``, and Keras 3's is a plain Python function."""
    with tf.summary.create_file_writer(str(Path(log_dir) / "train")).as_default():
        tf.summary.graph(function.graph)


def log_embeddings(log_dir, model: keras.Model, vocabulary: list[str]) -> Path | None:
    """Writes the model's word vectors for TensorBoard's Projector tab, labelled by word.

    The vectors are the rows of the model's word embedding
    (:func:`tfkit.data.vectors.word_embedding`), one per word in id order; rows past the
    vocabulary (fastText's hashed n-grams) are left out. Written into ``log_dir/train``, a
    folder TensorBoard lists as a run: a TensorFlow checkpoint of the ``[words, dim]``
    matrix, ``metadata.tsv`` (one word per line; id 0, the padding, as ``<pad>``) and
    ``projector_config.pbtxt``. (Keras's own ``TensorBoard(embeddings_freq=...)`` saves a
    ``.weights.h5`` file that the projector cannot read.)

    Args:
        log_dir: the run's ``logs`` folder.
        model: a trained text model.
        vocabulary: the preprocessor's vocabulary (``TextPreprocessor.vocabulary()``).

    Returns:
        The checkpoint's path, or None when the model has no embedding of the vocabulary.
    """
    layer = word_embedding(model, len(vocabulary))
    if layer is None:
        return None
    out = Path(log_dir) / "train"
    out.mkdir(parents=True, exist_ok=True)
    vectors = keras.ops.convert_to_numpy(layer.embeddings)[: len(vocabulary)]
    # TextVectorization's tokens hold no whitespace, so each word is one metadata line
    (out / "metadata.tsv").write_text("".join(f"{word or '<pad>'}\n" for word in vocabulary),
                                      encoding="utf-8")
    # save() (not write()) records the checkpoint, by relative path, in the folder's
    # `checkpoint` file, where the projector looks for it: the run folder can be moved
    path = tf.train.Checkpoint(word_embedding=tf.Variable(vectors, trainable=False)).save(
        str(out / "word_embedding.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name, embedding.metadata_path = EMBEDDING_TENSOR, "metadata.tsv"
    projector.visualize_embeddings(str(out), config)
    return Path(path)


def log_misclassified(log_dir, model: keras.Model, preprocessor, inputs, labels,
                      label_names: list[str], step: int, count: int = 20) -> list[dict]:
    """Writes the validation examples the model gets most confidently wrong, for TensorBoard.

    The model runs on ``preprocessor(inputs)`` in batches of 256 (:func:`traced_call`).
    Among the examples whose
    predicted class is not their label, the ``count`` with the highest predicted probability
    go into a Markdown table (Text tab, ``log_dir/validation``, tag ``misclassified``, at
    ``step``): the text (cut at 300 characters) or, for images, the validation row, then the
    true label, the predicted one and its probability. Images also go, in the table's order,
    to the Images tab (tag ``misclassified_images``).

    Args:
        log_dir: the run's ``logs`` folder.
        model: a trained single-task classifier.
        preprocessor: what turns the raw inputs into the model's input.
        inputs: raw validation texts, or images ``[n, h, w(, c)]`` with values 0..255.
        labels: their label ids.
        label_names: the class names, in id order.
        step: the TensorBoard step (the last epoch).
        count: how many examples to list.

    Returns:
        The rows written: ``{"row", "label", "predicted", "probability"}`` dicts, plus
        for texts ``"text"`` and ``"words"``: the 3 words whose leaving out lowers the wrong
        answer's probability most, with that drop (:func:`tfkit.explain.word_importance`).
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels).reshape(-1)
    texts = inputs.dtype.kind in "OSU"
    if texts:
        inputs = inputs.astype(str)
    predict = traced_call(model)
    probabilities = np.concatenate([
        predict(preprocessor(tf.constant(inputs[start:start + 256]))).numpy()
        for start in range(0, len(inputs), 256)])
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    rows = [{"row": int(i), **({"text": str(inputs[i])} if texts else {}),
             "label": label_names[labels[i]], "predicted": label_names[predicted[i]],
             "probability": float(confidence[i])} for i in worst]
    if texts and rows:  # what misled the model: the words that most pushed its wrong answer
        explained = word_importance(
            lambda batch: predict(preprocessor(tf.constant(batch))).numpy(),
            [row["text"] for row in rows], getattr(preprocessor, "split", "whitespace"))
        for row, found in zip(rows, explained):
            row["words"] = sorted(found["words"], key=lambda pair: -pair[1])[:3]

    def cell(row: dict) -> str:  # the first Markdown table cell
        if not texts:
            return str(row["row"])
        text = " ".join(row["text"].split())
        return (text[:300].rstrip() + " …" if len(text) > 300 else text).replace("|", "\\|")

    def words(row: dict) -> str:  # texts: the words that most pushed the wrong answer
        return "".join(f" {w} ({v:+.2f})".replace("|", "\\|") for w, v in row["words"]) + " |"

    table = [f"{len(wrong)} of {len(inputs)} validation examples misclassified; the "
             f"{len(rows)} predicted wrong with the highest probability"
             + (" (words: leaving each out lowers the wrong answer's probability by that much)"
                if texts else " (images: Images tab, tag misclassified_images)") + ":", "",
             f"| {'text' if texts else 'validation row'} | true | predicted | probability |"
             + (" words that misled it |" if texts else ""),
             "|---|---|---|---|" + ("---|" if texts else "")] + [
        f"| {cell(r)} | {r['label']} | {r['predicted']} | {r['probability']:.3f} |"
        + (words(r) if texts else "") for r in rows]
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation"))
    with writer.as_default():
        tf.summary.text("misclassified", "\n".join(table), step=step)
        if not texts and len(worst):
            images = inputs[worst] if inputs.ndim == 4 else inputs[worst][..., None]
            tf.summary.image("misclassified_images", np.clip(images, 0, 255).astype(np.uint8),
                             max_outputs=count, step=step)
    writer.close()
    return rows


def log_attention(log_dir, model: keras.Model, preprocessor, texts, labels,
                  label_names: list[str], step: int, count: int = 6, pool: int = 256) -> list[dict]:
    """Writes what a ``han`` model attended to, for TensorBoard's Text tab.

    Among the first ``pool`` validation documents, the ``count`` predicted wrong with the
    highest probability and the ``count`` predicted right with the highest probability, each
    as a Markdown table (``log_dir/validation``, tag ``attention``, at ``step``): one row per
    sentence the model read, with its attention weight and its text as the model tokenised it,
    the three tokens it weighed most in bold with their weights (:func:`tfkit.attention_weights`).

    Returns:
        The documents written: ``{"row", "label", "predicted", "probability", "sentences"}``.
    """

    texts = [str(t) for t in np.asarray(texts)[:pool]]
    labels = np.asarray(labels).reshape(-1)[: len(texts)]
    documents = attention_weights(model, preprocessor, texts)
    probabilities = np.array([d["probabilities"] for d in documents])
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    chosen = ([i for i in order if predicted[i] != labels[i]][:count]
              + [i for i in order if predicted[i] == labels[i]][:count])
    joiner = "" if getattr(preprocessor, "split", "whitespace") == "character" else " "
    written, lines = [], [f"Attention of {len(chosen)} of the first {len(texts)} validation "
                          "documents: the most confidently wrong, then the most confidently "
                          "right. Per sentence its weight; in bold the 3 tokens weighed most.", ""]
    for i in chosen:
        row = {"row": int(i), "label": label_names[labels[i]],
               "predicted": label_names[predicted[i]], "probability": float(confidence[i]),
               "sentences": documents[i]["sentences"]}
        written.append(row)
        lines += [f"**validation row {i}**: true {row['label']}, predicted {row['predicted']} "
                  f"({row['probability']:.3f})", "", "| sentence weight | tokens |", "|---|---|"]
        for sentence in row["sentences"]:
            top = sorted(range(len(sentence["words"])), key=lambda k: -sentence["words"][k][1])[:3]
            tokens = [f"**{w}** ({weight:.2f})" if k in top else w
                      for k, (w, weight) in enumerate(sentence["words"])]
            lines.append(f"| {sentence['weight']:.2f} | {joiner.join(tokens)} |")  # no | in tokens
        lines.append("")
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation"))
    with writer.as_default():
        tf.summary.text("attention", "\n".join(lines), step=step)
    writer.close()
    return written
