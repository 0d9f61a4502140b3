"""Classification scores from label ids and probabilities: plain NumPy, no TensorFlow."""

from __future__ import annotations

import numpy as np


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``[true, predicted]`` counts, the prediction being the most probable class."""
    num_classes = probabilities.shape[-1]
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, probabilities.argmax(axis=-1)), 1)
    return matrix


def classification_report(matrix: np.ndarray, label_names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support from ``[true, predicted]`` counts.

    Returns ``{"macro_f1", "macro_precision", "macro_recall", "per_class": {name: {...}},
    "confusion_matrix": [[...]]}``. A class never predicted has precision 0, and a class with
    no example recall 0 (scikit-learn's ``zero_division=0``).
    """
    matrix = np.asarray(matrix)
    hits = np.diag(matrix).astype(float)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    precision = hits / np.maximum(predicted, 1)
    recall = hits / np.maximum(support, 1)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {
        "macro_f1": float(f1.mean()), "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": matrix.tolist(),
    }
