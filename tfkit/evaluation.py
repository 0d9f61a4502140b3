"""Scoring a served model on labelled data, and the checks a model passes before it is served.

:func:`score_saved_model` scores a SavedModel version through its ``serving_default``
signature, raw inputs in, as TF Serving answers. :func:`bless` decides whether a newly trained
model may become the served version: TF Serving (and ``tfkit predict saved_models/<name>``)
switch every client to the highest version, so a diverged or useless model published there
replaces a good one without a word. TFX calls this check "blessing"; this is the same idea
without a pipeline.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfkit.data import ImagePreprocessor, LabeledData
from tfkit.export import export_facts, export_label_names, load_serving, published_versions
from tfkit.monitor import classification_report, confusion_counts

log = logging.getLogger("tfkit")
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
    loaded, signature, version = load_serving(path)
    names = export_label_names(loaded, version)
    key = list(signature.structured_input_signature[1])[0]
    if key not in ("text", "image_bytes"):
        raise ValueError(f"'{version}': evaluating a SavedModel takes text and image models "
                         f"(this one takes {key}); evaluate the run folder that exported it.")
    facts = export_facts(version) or {}
    multitask = isinstance(names, dict)
    heads = names if multitask else {None: names}
    data_names = data.label_names if multitask else {None: data.label_names}
    targets = data.test.y if multitask else {None: data.test.y}
    if not isinstance(data.label_names, dict) == multitask or set(heads) != set(data_names):
        raise ValueError(f"the data's heads {sorted(map(str, data_names))} are not the "
                         f"SavedModel's {sorted(map(str, heads))} ('{version}').")
    # what clients send: raw strings, or the images as PNG bytes
    served = (ImagePreprocessor.from_config(facts["preprocessor"]).export_samples
              if key == "image_bytes" else (lambda texts: [str(t) for t in texts]))
    x = data.test.x
    batches = [signature(**{key: tf.constant(served(x[i:i + BATCH]), tf.string)})
               for i in range(0, len(x), BATCH)]
    outputs = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
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
    return {**out, "test_examples": len(x), "saved_model": str(version)}


def majority_rates(data: LabeledData) -> dict:
    """``{head: (share, label)}``: the test accuracy of always answering the most frequent
    test label, per classification head (head ``None`` for a single-task classifier)."""
    multitask = isinstance(data.label_names, dict)
    heads = data.label_names if multitask else {None: data.label_names}
    targets = data.test.y if multitask else {None: data.test.y}
    rates = {}
    for head, names in heads.items():
        if names:
            counts = np.bincount(np.asarray(targets[head]).astype(np.int64).reshape(-1),
                                 minlength=len(names))
            rates[head] = (float(counts.max() / max(counts.sum(), 1)), names[int(counts.argmax())])
    return rates


def bless(metrics: dict, data: LabeledData, model_dir: str | Path,
          max_regression: float) -> dict:
    """Whether a trained model may be published as the next version under ``model_dir``.

    It must have (1) finite test losses; (2) on every classification head, a test accuracy
    above what always answering the most frequent test label scores; (3) when ``model_dir``
    already serves a version (with the same labels: other labels are refused before
    training), a test accuracy at most ``max_regression`` below that version's, scored
    through its serving signature on this run's test split.

    Args:
        metrics: the run's test metrics (``test_loss``, ``test_accuracy``, per head
            ``test_<head>_accuracy``...).
        data: the run's data (its test split is scored).
        model_dir: ``saved_models/<name>``.
        max_regression: ``export.max_regression``.

    Returns:
        ``{"blessed": bool, "reasons": [why not, ...], "majority_accuracy": {...},
        "served_version": path or None, "served_accuracy": {...}, "seconds": float}``.
    """
    started = time.perf_counter()
    reasons = []
    for key, value in metrics.items():
        if key.startswith("test_") and key.endswith("loss") and isinstance(value, float) \
                and not math.isfinite(value):
            reasons.append(f"{key} is {value} (training diverged: lower train.learning_rate?)")
    rates = majority_rates(data)
    for head, (rate, label) in rates.items():
        key = f"test_{head}_accuracy" if head else "test_accuracy"
        accuracy = metrics.get(key)
        if accuracy is not None and not accuracy > rate:
            reasons.append(f"{key} {accuracy:.4f} is not above {rate:.4f}, what always "
                           f"answering {label!r} scores")
    served, served_accuracy = None, {}
    versions = published_versions(model_dir)
    if versions and not reasons:
        served = versions[-1]
        try:
            theirs = score_saved_model(served, data)
        except ValueError as exc:  # e.g. an export tfkit did not write: nothing to compare
            log.warning("could not score the served version '%s' to compare: %s", served, exc)
            theirs = {}
        for head in rates:
            key = f"test_{head}_accuracy" if head else "test_accuracy"
            if key not in theirs or key not in metrics:
                continue
            served_accuracy[key] = theirs[key]
            if metrics[key] < theirs[key] - max_regression:
                reasons.append(
                    f"{key} {metrics[key]:.4f} is {theirs[key] - metrics[key]:.4f} below the "
                    f"served version {served.name}'s {theirs[key]:.4f} on this run's test split "
                    f"(export.max_regression: {max_regression})")
    return {"blessed": not reasons, "reasons": reasons,
            "majority_accuracy": {str(head) if head else "label": rate
                                  for head, (rate, _) in rates.items()},
            "served_version": None if served is None else str(served),
            "served_accuracy": served_accuracy,
            "seconds": round(time.perf_counter() - started, 2)}
