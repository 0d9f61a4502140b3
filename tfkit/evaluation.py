"""Scoring: a finished run's model on its test split, and a served SavedModel through its
``serving_default`` signature, raw inputs in, as TF Serving answers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfkit.compiling import compile_model, head_specs
from tfkit.config import ConfigError, load_config
from tfkit.data import LabeledData, load_data, preprocessor_from_config
from tfkit.datasets import make_dataset
from tfkit.export import export_facts
from tfkit.metrics import (
    DEFAULT_THRESHOLD,
    choose_thresholds,
    classification_report,
    confusion_counts,
    multi_label_report,
)
from tfkit.monitor import predictions, traced_call, write_classification, write_label_sets
from tfkit.runs import load_run, run_multi_label
from tfkit.served import ServedModel, is_saved_model, version_folder

BATCH = 256  # inputs per call of the signature


def score_saved_model(path: str | Path, data: LabeledData) -> dict:
    """Scores an exported classifier on ``data``'s test split through its ``serving_default``
    signature (raw strings, or the images as PNG bytes), labels matched to the export's by name.

    Returns:
        ``test_accuracy``, ``test_loss`` (cross-entropy of the served probabilities),
        ``test_macro_f1``, ``test_per_class``, ``test_confusion_matrix``, ``test_examples``
        and ``saved_model`` (the version scored). A multi-task export: ``test_<head>_...``
        per classification head (``{head: ...}`` in the per-class scores and matrices) and
        ``test_<head>_mae`` per regression head.

    Raises:
        ValueError: for a label the export does not know, heads other than the export's, or
            an export that takes neither text nor images.
    """
    served = ServedModel(path)
    version, heads, multitask = served.version, served.heads, served.multitask
    if served.input_key not in ("text", "image_bytes", "text_table"):
        raise ValueError(f"'{version}': evaluating a SavedModel takes text and image models "
                         f"(this one takes {served.input_key}); evaluate the run folder that "
                         "exported it.")
    if bool(served.multi_label) != data.multi_label:
        raise ValueError(f"the data has {'several labels' if data.multi_label else 'one label'} "
                         f"per example, the SavedModel '{version}' answers "
                         f"{'several' if served.multi_label else 'one'}.")
    data_names = data.label_names if multitask else {None: data.label_names}
    if not isinstance(data.label_names, dict) == multitask or set(heads) != set(data_names):
        raise ValueError(f"the data's heads {sorted(map(str, data_names))} are not the "
                         f"SavedModel's {sorted(map(str, heads))} ('{version}').")
    # what clients send: raw strings, images as PNG bytes; a streamed split part by part
    client = preprocessor_from_config(served.facts["preprocessor"])
    parts, answers = [], []
    for x, y in data.test.batches(BATCH * 16):
        parts.append(y if multitask else {None: y})
        answers.append(served(client.client_inputs(x), BATCH))
    targets = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    outputs = {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}
    if served.multi_label:
        return {**served_label_sets(served, data.label_names, targets[None], outputs),
                "test_examples": len(data.test), "saved_model": str(version)}
    out = {}
    for head, head_names in heads.items():
        prefix = f"{head}_" if head else ""
        if not head_names:  # a regression head: its value in the target's units
            out[f"test_{prefix}mae"] = float(np.mean(np.abs(outputs[head] - targets[head])))
            continue
        unknown = [name for name in data_names[head] if name not in head_names]
        if unknown:
            raise ValueError(f"the data's label {unknown[0]!r} is not one the SavedModel "
                             f"'{version}' answers ({', '.join(head_names)}).")
        labels = np.array([head_names.index(data_names[head][y])
                           for y in np.asarray(targets[head]).astype(np.int64)])
        probabilities = outputs[f"{prefix}probabilities"]
        chosen = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
        report = classification_report(confusion_counts(labels, probabilities), head_names)
        out[f"test_{prefix}accuracy"] = float(np.mean(probabilities.argmax(axis=1) == labels))
        out[f"test_{prefix}loss"] = float(-np.log(chosen).mean())
        out[f"test_{prefix}macro_f1"] = report["macro_f1"]
        for name in ("per_class", "confusion_matrix"):
            if multitask:
                out.setdefault(f"test_{name}", {})[head] = report[name]
            else:
                out[f"test_{name}"] = report[name]
    return {**out, "test_examples": len(data.test), "saved_model": str(version)}


def label_thresholds(model: keras.Model, val_ds: tf.data.Dataset | None, num_labels: int
                     ) -> np.ndarray:
    """A multi-label model's threshold per label, chosen on the validation split
    (:func:`tfkit.metrics.choose_thresholds`); 0.5 each without a validation split."""
    if val_ds is None:
        return np.full(num_labels, DEFAULT_THRESHOLD)
    return choose_thresholds(*predictions(traced_call(model), val_ds))


def served_label_sets(served: ServedModel, data_names: list[str], targets: np.ndarray,
                      outputs: dict) -> dict:
    """A multi-label export's test scores at its own thresholds (``test_micro_f1``, ...),
    the data's multi-hot ``targets`` matched to its labels by name."""
    names = served.label_names
    unknown = [name for name in data_names if name not in names]
    if unknown:
        raise ValueError(f"the data's label {unknown[0]!r} is not one the SavedModel "
                         f"'{served.version}' answers ({', '.join(names)}).")
    aligned = np.zeros((len(targets), len(names)), np.float32)
    aligned[:, [names.index(name) for name in data_names]] = targets
    report = multi_label_report(aligned, outputs["probabilities"],
                                served.multi_label["thresholds"], names)
    return {f"test_{key}": value for key, value in report.items()}


def score_test_split(model: keras.Model, test_ds: tf.data.Dataset, label_names: list | dict,
                     thresholds=None):
    """The test split's ``(label ids, probabilities)`` and, from their confusion matrix,
    ``test_macro_f1``, ``test_per_class`` (precision, recall, F1, support per label) and
    ``test_confusion_matrix`` for metrics.json. For a multi-task model (``label_names``
    ``{head: names}``): per classification head, ``{head: (label ids, probabilities)}``,
    ``test_<head>_macro_f1`` and ``{head: ...}`` in the other two.

    Accuracy alone hides a weak class: on the fine-food reviews (65% ``great``) a model
    answering ``great`` every time scores 0.66 accuracy and 0.40 macro F1 on the test split.

    A multi-label model (``thresholds``, one per label): ``(multi-hot targets,
    probabilities)`` and :func:`multi_label_report`'s scores at those thresholds as
    ``test_micro_f1``, ``test_macro_f1``, ``test_subset_accuracy``, ``test_hamming_loss``,
    ``test_per_label``.
    """
    labels, probabilities = predictions(traced_call(model), test_ds)
    if thresholds is not None:
        report = multi_label_report(labels, probabilities, thresholds, label_names)
        return (labels, probabilities), {f"test_{k}": v for k, v in report.items()}
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
                     label_names=(), label_report: dict | None = None) -> None:
    """Writes the test metrics as TensorBoard scalars under ``logs/test``, and for
    classifiers (``predicted``: :func:`score_test_split`'s labels and probabilities, per
    classification head for multi-task models) the test confusion matrix, per-class scores
    and PR curves (:func:`write_classification`); for a multi-label model (``label_report``:
    :func:`score_test_split`'s scores) the per-label table and PR curves
    (:func:`write_label_sets`)."""
    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "test"))
    with writer.as_default():
        for key, value in metrics.items():
            tf.summary.scalar(f"epoch_{key}", value, step=step)
        if label_report is not None:
            write_label_sets(*predicted, {k[5:]: v for k, v in label_report.items()}, step)
        elif isinstance(predicted, dict):
            for head, (labels, probabilities) in predicted.items():
                write_classification(labels, probabilities, list(label_names[head]), step, head)
        elif predicted is not None:
            write_classification(*predicted, list(label_names), step)
    writer.close()


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
    multi_label = run_multi_label(run_dir)
    metrics.update(score_test_split(model, test_ds, label_names,
                                    multi_label and multi_label["thresholds"])[1])
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
