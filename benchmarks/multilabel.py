"""Multi-label accuracy on the ``tate_tags`` preset's data, next to simple baselines on the
same split (the preset's ``data.seed``):

- **tfkit**: ``tfkit.train("tate_tags")`` for each seed (``train.seed``), its test scores at
  the thresholds it chose on the validation split;
- **TF-IDF + logistic regression**: scikit-learn, word 1-2-grams, one logistic regression
  per label, the thresholds chosen the same way (:func:`tfkit.metrics.choose_thresholds`);
- **most frequent label set**: always answering the training split's most frequent set.

    python -m benchmarks.multilabel            # 3 seeds
    python -m benchmarks.multilabel --quick    # 1 seed, 2 epochs, 400 works (smoke test)

Results go to ``benchmarks/results/multilabel-<date>-<time>.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PRESET = "tate_tags"
SCORES = ("micro_f1", "macro_f1", "subset_accuracy")


def tfidf_scores(data) -> dict:
    """TF-IDF word 1-2-grams and one logistic regression per label (scikit-learn),
    thresholds chosen on the validation split as tfkit chooses them."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from tfkit.metrics import choose_thresholds, multi_label_report

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x = vectorizer.fit_transform(data.train.x)
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000, C=4.0)).fit(x, data.train.y)
    thresholds = choose_thresholds(data.validation.y,
                                   model.predict_proba(vectorizer.transform(data.validation.x)))
    probabilities = model.predict_proba(vectorizer.transform(data.test.x))
    return multi_label_report(data.test.y, probabilities, thresholds, data.label_names)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data and epochs")
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 1, 7])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import tfkit
    from tfkit.data import load_data
    from tfkit.metrics import label_set_baseline

    overrides = ["train.verbose=0", "export.enabled=false"]
    if args.quick:
        overrides += ["data.limit=400", "train.epochs=2"]
        args.seeds = args.seeds[:1]
    config = tfkit.load_config(PRESET, overrides)
    data = load_data(config.data)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            result = tfkit.train(PRESET, [*overrides, f"train.seed={seed}",
                                          f"train.runs_dir={folder}/runs"])
            runs.append({key: result.metrics[f"test_{key}"] for key in SCORES}
                        | {"seed": seed, "train_seconds": result.metrics["train_seconds"]})
    baseline_f1, common = label_set_baseline(data.train.y, data.test.y)
    tfidf = tfidf_scores(data)
    report = {
        "preset": PRESET, "quick": args.quick, "labels": len(data.label_names),
        "labels_per_example": float(np.mean(data.test.y.sum(axis=1))),
        "examples": {"train": len(data.train), "validation": len(data.validation),
                     "test": len(data.test)},
        "tfkit": {"runs": runs, **{key: {"mean": statistics.mean(r[key] for r in runs),
                                         "stdev": statistics.pstdev(r[key] for r in runs)}
                                   for key in SCORES}},
        "tfidf_logistic_regression": {key: tfidf[key] for key in SCORES},
        "most_frequent_label_set": {"micro_f1": baseline_f1,
                                    "labels": [data.label_names[i] for i in common]},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out / f"multilabel-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("tfkit", "tfidf_logistic_regression",
                                             "most_frequent_label_set")}, indent=2))
    return path


if __name__ == "__main__":
    main()
