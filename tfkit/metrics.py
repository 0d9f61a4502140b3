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


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # thresholds tried per label
DEFAULT_THRESHOLD = 0.5


def choose_thresholds(targets: np.ndarray, probabilities: np.ndarray, rounds: int = 2
                      ) -> np.ndarray:
    """One threshold per label of a multi-label model, chosen on ``targets`` (multi-hot
    ``[n, labels]``, the validation split) for the best micro F1 over all labels: starting
    from 0.5 each, every label in turn takes the threshold of :data:`THRESHOLD_GRID` that
    gives the best micro F1 with the others as they are (the one nearest 0.5 among equals),
    ``rounds`` times over. A label with no positive example there keeps 0.5 (no evidence to
    move it). Thresholds for each label's own best F1 would raise the macro F1 but, for rare
    labels a weak model scores low, answer them so often that most answers are wrong.

    Examples:
        >>> y = np.array([[1, 0], [1, 0], [0, 0]])
        >>> p = np.array([[0.3, 0.1], [0.4, 0.2], [0.1, 0.3]])
        >>> choose_thresholds(y, p).tolist()  # label 0 caught from 0.3; label 1 never seen
        [0.3, 0.5]
    """
    truth = np.asarray(targets) > 0.5
    probabilities = np.asarray(probabilities)
    chosen = np.full(truth.shape[1], DEFAULT_THRESHOLD)
    grid = THRESHOLD_GRID[np.argsort(np.abs(THRESHOLD_GRID - DEFAULT_THRESHOLD), kind="stable")]
    # per label and grid threshold: true positives and answers
    answered = probabilities[:, :, None] >= grid[None, None, :]  # [n, labels, grid]
    hits = np.sum(answered & truth[:, :, None], axis=0)
    answers = np.sum(answered, axis=0)
    positives = truth.sum()
    current = np.argmax(grid == DEFAULT_THRESHOLD) * np.ones(truth.shape[1], int)
    for _ in range(rounds):
        for label in np.flatnonzero(truth.any(axis=0)):
            others = np.arange(truth.shape[1]) != label
            tp = hits[others, current[others]].sum() + hits[label]
            total = answers[others, current[others]].sum() + answers[label]
            current[label] = int(np.argmax(2 * tp / np.maximum(total + positives, 1)))
    chosen[:] = grid[current]
    chosen[~truth.any(axis=0)] = DEFAULT_THRESHOLD
    return chosen


def label_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of one label's decisions (0 when there is neither a positive nor a prediction)."""
    hits = float(np.sum(truth & predicted))
    return 2 * hits / max(float(np.sum(truth) + np.sum(predicted)), 1.0)


def multi_label_report(targets: np.ndarray, probabilities: np.ndarray,
                       thresholds: np.ndarray, label_names: list[str]) -> dict:
    """Scores of multi-label answers (label ``j`` answered when its probability is at least
    ``thresholds[j]``) against multi-hot ``targets``.

    Returns ``{"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "per_label":
    {name: {"precision", "recall", "f1", "support", "threshold"}}}``: micro F1 pools every
    label decision, macro F1 averages the labels' F1, subset accuracy is the share of
    examples with every label right, the Hamming loss the share of wrong label decisions.
    A label never answered has precision 0 (scikit-learn's ``zero_division=0``).

    Examples:
        >>> y = np.array([[1, 0], [1, 1]])
        >>> report = multi_label_report(y, np.array([[0.9, 0.2], [0.8, 0.4]]), [0.5, 0.5], ["a", "b"])
        >>> report["micro_f1"], report["subset_accuracy"], report["per_label"]["b"]["recall"]
        (0.8, 0.5, 0.0)
    """
    truth = np.asarray(targets) > 0.5
    answered = np.asarray(probabilities) >= np.asarray(thresholds)[None, :]
    hits = (truth & answered).sum(axis=0).astype(float)
    support, predicted = truth.sum(axis=0), answered.sum(axis=0)
    precision = hits / np.maximum(predicted, 1)
    recall = hits / np.maximum(support, 1)
    f1 = 2 * hits / np.maximum(support + predicted, 1)
    return {
        "micro_f1": float(2 * hits.sum() / max(support.sum() + predicted.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float(np.mean(np.all(truth == answered, axis=1))) if len(truth) else 0.0,
        "hamming_loss": float(np.mean(truth != answered)) if len(truth) else 0.0,
        "per_label": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i]),
                             "threshold": float(thresholds[i])}
                      for i, name in enumerate(label_names)},
    }


def label_set_baseline(train_targets: np.ndarray, targets: np.ndarray) -> tuple[float, tuple]:
    """``(micro F1, label indices)`` on ``targets`` of always answering the training split's
    most frequent label set: the multi-label model's "majority class" baseline."""
    sets, counts = np.unique(np.asarray(train_targets) > 0.5, axis=0, return_counts=True)
    common = sets[int(np.argmax(counts))]
    answered = np.broadcast_to(common, np.shape(targets))
    truth = np.asarray(targets) > 0.5
    hits = float(np.sum(truth & answered))
    return (2 * hits / max(float(truth.sum() + answered.sum()), 1.0),
            tuple(int(i) for i in np.flatnonzero(common)))
