"""tfkit's default model next to fastText (the C++ tool) on the same reviews, cores and files.

    pip install fasttext-wheel                   # this benchmark's own tool, not tfkit's
    python -m benchmarks.fasttext                # 200,000 reviews
    python -m benchmarks.fasttext --sizes 200000 1000000
    python -m benchmarks.fasttext --batch-sizes 256 1024 4096   # tfkit at other batch sizes too
    python -m benchmarks.fasttext --quick        # 3,000 reviews: a smoke run

The default preset (``fine_foods_fasttext``: the mean of word and hashed word-pair
embeddings, then softmax) is fastText's own model, so the two compare directly. Reviews are
synthetic (:func:`benchmarks.streaming.write_reviews`: sentences of the embedded fine-food
reviews resampled with their review's label); the last tenth is the test file. Both tools
read the same training file (fastText in its ``__label__`` format, written once before it
is timed), with dimension 64, word pairs, 3 epochs and the machine's cores (fastText
``thread``; TensorFlow's own pools). fastText trains on the whole training file; tfkit carves
its validation split from it (``data.validation_fraction``) and trains on the rest, so the
two are compared per training example.

Each tool runs in a fresh process, measured from outside: the whole command's wall seconds
(reading, vocabulary, 3 epochs, test), its training examples per second (fastText: training
examples x epochs / its ``train_supervised`` seconds; tfkit: ``metrics.json``'s
``train_examples_per_second``), its test accuracy and its peak resident memory
(``ru_maxrss``). The results end with tfkit's ratios to fastText. Where fastText is not
installed the benchmark says so and measures tfkit alone. Results go to
``benchmarks/results/fasttext-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from benchmarks.streaming import ROOT, train, write_reviews

EPOCHS, DIM = 3, 64
BATCH, RATE = 64, 0.01  # the default preset's batch size and learning rate
FASTTEXT_CHILD = """
import json, resource, sys, time
import fasttext
train_file, test_file, threads, dim, epochs = sys.argv[1:3] + [int(a) for a in sys.argv[3:6]]
start = time.perf_counter()
model = fasttext.train_supervised(input=train_file, dim=dim, wordNgrams=2, epoch=epochs,
                                  thread=threads, minCount=1, verbose=0)
seconds = time.perf_counter() - start
examples, precision, _ = model.test(test_file)
print(json.dumps({"train_seconds": seconds, "test_examples": examples, "test_accuracy": precision,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


class BenchmarkError(ValueError):
    """A size it cannot generate: the message says which and what is allowed."""


def fasttext_installed() -> bool:
    done = subprocess.run([sys.executable, "-c", "import fasttext"], capture_output=True)
    return done.returncode == 0


def fasttext_file(frame: pd.DataFrame, path: Path) -> Path:
    """``__label__<score> <review>`` per line, as fastText reads its training and test files."""
    texts = frame["review"].astype(str).str.replace("\n", " ", regex=False)
    path.write_text("".join(f"__label__{label} {text}\n"
                            for label, text in zip(frame["score"], texts)), encoding="utf-8")
    return path


def run_fasttext(train_txt: Path, test_txt: Path, train_examples: int) -> dict:
    """fastText's supervised training in a fresh process, timed from outside."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", FASTTEXT_CHILD, str(train_txt), str(test_txt),
                           str(os.cpu_count() or 1), str(DIM), str(EPOCHS)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"fastText exited {done.returncode}:\n{done.stderr[-2000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": round(child["max_rss_mb"]),
            "train_examples_per_second": round(train_examples * EPOCHS / child["train_seconds"]),
            "command_seconds": round(seconds, 1), "train_examples": train_examples,
            "test_accuracy": round(child["test_accuracy"], 4)}


def run_tfkit(work: Path, train_csv: Path, test_csv: Path, batch_size: int = BATCH) -> dict:
    """``tfkit train`` of the default preset on the same files, 3 epochs, nothing exported;
    another batch size with the preset's learning rate scaled by its square root (Adam)."""
    rate = round(RATE * (batch_size / BATCH) ** 0.5, 5)
    return train(work, f"fasttext_benchmark_{batch_size}", "fine_foods_fasttext", [
        "data.source=csv", f"data.path={train_csv}", f"data.test_path={test_csv}",
        "data.text_column=review", "data.label_column=score", f"train.epochs={EPOCHS}",
        "train.early_stopping_patience=null", "train.baseline=false",
        f"train.batch_size={batch_size}", f"train.learning_rate={rate}"])


def one_size(n: int, work: Path, with_fasttext: bool, batch_sizes=()) -> dict:
    reviews = write_reviews(n, work / "reviews.csv")
    frame = pd.read_csv(reviews)
    cut = int(len(frame) * 0.9)
    train_csv, test_csv = work / "train.csv", work / "test.csv"
    frame.iloc[:cut].to_csv(train_csv, index=False)
    frame.iloc[cut:].to_csv(test_csv, index=False)
    row = {"reviews": n, "train_csv_mb": round(train_csv.stat().st_size / 2**20, 1)}
    row["tfkit"] = run_tfkit(work, train_csv, test_csv)
    if batch_sizes:  # the same command at other batch sizes
        row["tfkit_batch_sizes"] = {str(b): run_tfkit(work, train_csv, test_csv, b)
                                    for b in batch_sizes}
    if with_fasttext:
        train_txt = fasttext_file(frame.iloc[:cut], work / "train.txt")
        test_txt = fasttext_file(frame.iloc[cut:], work / "test.txt")
        row["fasttext"] = run_fasttext(train_txt, test_txt, cut)
        ours, theirs = row["tfkit"], row["fasttext"]
        row["ratios"] = {
            "train_examples_per_second": round(ours["train_examples_per_second"]
                                               / theirs["train_examples_per_second"], 3),
            "command_seconds": round(ours["command_seconds"] / theirs["command_seconds"], 2),
            "peak_rss": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 2),
            "test_accuracy_points": round(100 * (ours["test_accuracy"]
                                                 - theirs["test_accuracy"]), 2)}
    return row


def check_sizes(sizes: list[int], batch_sizes: list[int]) -> None:
    for b in batch_sizes:
        if not 1 <= b <= 65_536:
            raise BenchmarkError(f"--batch-sizes {b}: give batch sizes from 1 to 65,536.")
    for n in sizes:
        if not 1_000 <= n <= 5_000_000:
            raise BenchmarkError(f"--sizes {n}: this benchmark generates 1,000 to 5,000,000 "
                                 "reviews (a test tenth of at least 100).")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000])
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="tfkit again at these batch sizes (learning rate x sqrt(b/64))")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3,000 reviews")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    sizes = [3_000] if args.quick else args.sizes
    try:
        check_sizes(sizes, args.batch_sizes)
    except BenchmarkError as exc:
        print(f"benchmarks.fasttext: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with_fasttext = fasttext_installed()
    if not with_fasttext:
        print("benchmarks.fasttext: fastText is not installed (pip install fasttext-wheel): "
              "measuring tfkit alone", file=sys.stderr)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as work:
            rows.append(one_size(n, Path(work), with_fasttext, args.batch_sizes))
            print(json.dumps(rows[-1]), flush=True)
    result = {"date": datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
              "cores": os.cpu_count(), "epochs": EPOCHS, "dim": DIM,
              "fasttext_installed": with_fasttext, "sizes": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    (out / f"fasttext-{stamp}{'-quick' if args.quick else ''}.json").write_text(
        json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
