"""The linear baseline beside every classification run: scikit-learn's logistic regression on
TF-IDF words and word pairs (texts) or on standardised values (arrays: images as pixels,
sequences), fitted on the run's own training split, its ``C`` chosen on the run's validation
split, scored on the run's test split.

It takes seconds, and it tells a user when the deep model they trained is worse than a
ten-line linear model on the same split (then ``tfkit tune`` searches the models for one that
is not). The checks before serving do not use it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger("tfkit")

LIMIT = 100_000  # examples per split the baseline reads (the first ones of a larger stream)
C_GRID = (1.0, 4.0, 16.0, 64.0)  # inverse L2 strength, chosen on the validation split
CLOSE = 0.005  # how much worse than the baseline a model may score and still be "on par"


def baseline_unavailable(data) -> str | None:
    """Why the data gets no baseline (multi-task targets, encoded images, no validation
    split), or None when it gets one."""
    if isinstance(data.label_names, dict):
        return "multi-task targets"
    x = data.train.sample(1).x
    if x.dtype.names is None and x.dtype == object and not isinstance(x[0], str):
        return "encoded images"
    if not len(data.validation):
        return "no validation split to choose its regularisation on"
    return None


def features(data, split_text: str = "whitespace"):
    """The baseline's feature maker for this data: a fitted TfidfVectorizer (texts; the text
    column of text-and-table data) or StandardScaler (arrays, flattened), and how to turn a
    split's inputs into what it takes."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    x = data.train.sample(LIMIT).x
    if x.dtype.names is not None:  # text with table columns: the text only
        def inputs(values):
            return [str(t) for t in values["text"]]
    elif x.dtype == object:
        def inputs(values):
            return [str(t) for t in values]
    else:
        def inputs(values):
            return np.asarray(values, np.float32).reshape(len(values), -1)
    if x.dtype == object or x.dtype.names is not None:
        maker = (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32)
                 if split_text == "whitespace" else
                 TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True,
                                 min_df=2, dtype=np.float32))
    else:
        maker = StandardScaler()
    try:
        maker.fit(inputs(x))
    except ValueError:  # min_df=2 keeps nothing: a tiny training split
        maker.set_params(min_df=1)
        maker.fit(inputs(x))
    return maker, lambda split: maker.transform(inputs(split.sample(LIMIT).x))


def linear_baseline(data, split_text: str = "whitespace", seed: int = 0) -> dict | None:
    """Fits the baseline on ``data``'s training split and scores it on its test split.

    Returns:
        ``{"model", "C", "validation_accuracy", "test_accuracy"`` (single-label) or
        ``"validation_micro_f1", "test_micro_f1"`` (multi-label, each label at its threshold
        chosen on the validation split as tfkit chooses its own),
        ``"test_macro_f1", "seconds", "train_examples"}``;
        None, with the reason logged, where the data has no baseline
        (:func:`baseline_unavailable`).

    Examples:
        >>> from tfkit.data import LabeledData, Split
        >>> texts = np.array(["good tea", "good food", "bad tea", "bad food"] * 10, dtype=object)
        >>> split = Split(texts, np.array([0, 0, 1, 1] * 10))
        >>> report = linear_baseline(LabeledData(split, split, split, ["good", "bad"], "t"))
        >>> report["model"], report["test_accuracy"]
        ('tfidf_logistic_regression', 1.0)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from tfkit.metrics import choose_thresholds, multi_label_report

    reason = baseline_unavailable(data)
    if reason:
        log.info("linear baseline: none for %s", reason)
        return None
    start = time.monotonic()
    maker, transform = features(data, split_text)
    x_train, x_val, x_test = (transform(s) for s in (data.train, data.validation, data.test))
    y_train, y_val, y_test = (np.asarray(s.sample(LIMIT).y) for s in
                              (data.train, data.validation, data.test))
    multi_label = bool(getattr(data, "multi_label", False))
    best = None
    for c in C_GRID:
        if multi_label:  # one model per label, thresholds chosen as tfkit chooses its own
            model = OneVsRestLabels(c).fit(x_train, y_train)
            val = model.predict_proba(x_val)
            thresholds = choose_thresholds(y_val, val)
            value = multi_label_report(y_val, val, thresholds, data.label_names)["micro_f1"]
        else:
            model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
            model.fit(x_train, y_train.reshape(-1))
            value, thresholds = float((model.predict(x_val) == y_val.reshape(-1)).mean()), None
        if best is None or value > best[0]:
            best = (value, c, model, thresholds)
    value, c, model, thresholds = best
    report = {"model": "tfidf_logistic_regression" if hasattr(maker, "vocabulary_")
              else "logistic_regression", "C": c,
              "validation_micro_f1" if multi_label else "validation_accuracy": round(value, 4)}
    if multi_label:
        scores = multi_label_report(y_test, model.predict_proba(x_test), thresholds,
                                    data.label_names)
        report.update(test_micro_f1=scores["micro_f1"], test_macro_f1=scores["macro_f1"])
    else:
        predicted = model.predict(x_test)
        report.update(test_accuracy=float((predicted == y_test.reshape(-1)).mean()),
                      test_macro_f1=float(f1_score(y_test.reshape(-1), predicted,
                                                   average="macro", zero_division=0)))
    report.update(seconds=round(time.monotonic() - start, 2), train_examples=int(x_train.shape[0]))
    return report


class OneVsRestLabels:
    """One logistic regression per label of multi-hot targets; a label the training split
    never has gets probability 0."""

    def __init__(self, c: float):
        self.c = c

    def fit(self, x, y) -> OneVsRestLabels:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        self.present = np.asarray(y).sum(axis=0) > 0
        self.model = OneVsRestClassifier(LogisticRegression(C=self.c, max_iter=1000))
        self.model.fit(x, np.asarray(y)[:, self.present])
        return self

    def predict_proba(self, x) -> np.ndarray:
        out = np.zeros((x.shape[0], len(self.present)), np.float32)
        out[:, self.present] = self.model.predict_proba(x)
        return out


def baseline_key(report: dict) -> str:
    """The score the baseline and the model are compared on: test accuracy, or micro F1."""
    return "test_accuracy" if "test_accuracy" in report else "test_micro_f1"


def compare(metrics: dict, report: dict | None) -> str | None:
    """One sentence comparing the run's test score with the baseline's, or None.

    Examples:
        >>> compare({"test_accuracy": 0.867}, {"test_accuracy": 0.973})
        'linear baseline 0.973 on the same split (10.6 points better): try tfkit tune'
        >>> compare({"test_accuracy": 0.98}, {"test_accuracy": 0.973})
        'linear baseline 0.973 on the same split (this model 0.7 points better)'
    """
    if not report:
        return None
    key = baseline_key(report)
    ours, theirs = metrics.get(key), report[key]
    if ours is None:
        return None
    points = 100 * (theirs - ours)
    if theirs - ours > CLOSE:
        return (f"linear baseline {theirs:.3f} on the same split ({points:.1f} points better): "
                "try tfkit tune")
    if abs(points) < 0.05:
        return f"linear baseline {theirs:.3f} on the same split (the same score)"
    if points > 0:
        return f"linear baseline {theirs:.3f} on the same split (within {points:.1f} points)"
    return (f"linear baseline {theirs:.3f} on the same split (this model "
            f"{-points:.1f} points better)")
