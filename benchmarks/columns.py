"""Beyond one text column, on the Tate collection titles that ship offline, each next to
simple baselines on the same split (the preset's ``data.seed``):

- **several labels per example** (``tate_tags``: a work's materials and techniques):
  tfkit's test scores at the thresholds it chose on the validation split; TF-IDF word
  1-2-grams with one logistic regression per label (scikit-learn, thresholds chosen the same
  way, :func:`tfkit.metrics.choose_thresholds`); always the most frequent label set.
- **text plus table columns** (``tate_table``: the medium family from the title, the artist
  and the year): tfkit's test accuracy; the same model reading the title alone
  (``text_fasttext`` with the same settings); TF-IDF of the title, one-hot artist and the
  standardised year with logistic regression (scikit-learn); always the most frequent label.

    python -m benchmarks.columns            # 3 seeds (train.seed) each
    python -m benchmarks.columns --quick    # 1 seed, 2 epochs, 400 works (smoke test)

Results go to ``benchmarks/results/columns-<date>-<time>.json``; nothing is asserted.
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
TEXT_ONLY = ["model.name=text_fasttext", "data.features=null",  # tate_table's text encoder
             "model.params={embedding_dim: 64, embedding_dropout: 0.2, buckets: 16384}"]


def seed_runs(preset: str, overrides: list[str], seeds: list[int], keys: tuple) -> dict:
    """``tfkit.train(preset)`` once per seed: each run's test scores, and their mean and
    standard deviation."""
    import tfkit

    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            result = tfkit.train(preset, [*overrides, f"train.seed={seed}",
                                          f"train.runs_dir={folder}/runs"])
            runs.append({key: result.metrics[f"test_{key}"] for key in keys}
                        | {"seed": seed, "train_seconds": result.metrics["train_seconds"]})
    return {"runs": runs, **{key: {"mean": statistics.mean(r[key] for r in runs),
                                   "stdev": statistics.pstdev(r[key] for r in runs)}
                             for key in keys}}


def multilabel(overrides: list[str], seeds: list[int]) -> dict:
    """``tate_tags`` against TF-IDF + logistic regression and the most frequent label set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    import tfkit
    from tfkit.data import load_data
    from tfkit.metrics import choose_thresholds, label_set_baseline, multi_label_report

    keys = ("micro_f1", "macro_f1", "subset_accuracy")
    data = load_data(tfkit.load_config("tate_tags", overrides).data)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vectorizer.fit_transform(data.train.x)
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000, C=4.0)).fit(x, data.train.y)
    thresholds = choose_thresholds(data.validation.y,
                                   model.predict_proba(vectorizer.transform(data.validation.x)))
    tfidf = multi_label_report(data.test.y, model.predict_proba(vectorizer.transform(data.test.x)),
                               thresholds, data.label_names)
    baseline_f1, common = label_set_baseline(data.train.y, data.test.y)
    return {"labels": len(data.label_names),
            "labels_per_example": float(np.mean(data.test.y.sum(axis=1))),
            "examples": {"train": len(data.train), "validation": len(data.validation),
                         "test": len(data.test)},
            "tfkit": seed_runs("tate_tags", overrides, seeds, keys),
            "tfidf_logistic_regression": {key: tfidf[key] for key in keys},
            "most_frequent_label_set": {"micro_f1": baseline_f1,
                                        "labels": [data.label_names[i] for i in common]}}


def table(overrides: list[str], seeds: list[int]) -> dict:
    """``tate_table`` against the same model on the title alone, a linear model on all
    three columns and the majority label."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import tfkit
    from tfkit.data import load_data

    keys = ("accuracy", "macro_f1")
    data = load_data(tfkit.load_config("tate_table", overrides).data)
    columns = ColumnTransformer([
        ("title", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), "text"),
        ("artist", OneHotEncoder(handle_unknown="ignore"), ["artist"]),
        ("year", StandardScaler(), ["year"])])
    linear = make_pipeline(columns, LogisticRegression(max_iter=2000, C=4.0))
    linear.fit(pd.DataFrame(data.train.x.tolist(), columns=data.train.x.dtype.names), data.train.y)
    test = pd.DataFrame(data.test.x.tolist(), columns=data.test.x.dtype.names)
    counts = np.bincount(data.test.y, minlength=len(data.label_names))
    return {"classes": len(data.label_names), "test_examples": len(data.test),
            "tfkit": seed_runs("tate_table", overrides, seeds, keys),
            "tfkit_title_only": seed_runs("tate_table", overrides + TEXT_ONLY, seeds, keys),
            "logistic_regression_all_columns": {
                "accuracy": float(np.mean(linear.predict(test) == data.test.y))},
            "majority_label": {"accuracy": float(counts.max() / counts.sum()),
                               "label": data.label_names[int(counts.argmax())]}}


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data and epochs")
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 1, 7])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    overrides = ["train.verbose=0", "export.enabled=false"]
    if args.quick:
        overrides += ["data.limit=400", "train.epochs=2"]
        args.seeds = args.seeds[:1]
    report = {"quick": args.quick, "seeds": args.seeds,
              "multi_label": multilabel(overrides, args.seeds),
              "text_and_table": table(overrides, args.seeds)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out / f"columns-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return path


if __name__ == "__main__":
    main()
