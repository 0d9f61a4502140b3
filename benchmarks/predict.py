"""Memory and speed of ``tfkit predict --input FILE`` as the file grows.

    python -m benchmarks.predict            # 10k and 1M lines
    python -m benchmarks.predict --quick    # 1k and 20k lines (smoke test)

Trains the default preset for one epoch (nothing else: the export is the model answered
with), writes text files of N reviews (sentences resampled from the embedded fine-food
reviews, one per line), and runs ``tfkit predict SAVED_MODEL --input FILE`` in a fresh
process for each, its answers written to a file: peak resident memory (``ru_maxrss``;
TensorFlow itself takes ~800 MB), inputs answered per second, and the whole command's
seconds (loading the model included). ``tfkit predict`` reads, answers and prints 1,024
inputs at a time, so its memory should not grow with the file. Results go to
``benchmarks/results/predict-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.streaming import write_reviews

ROOT = Path(__file__).resolve().parent.parent
RSS = ("import json, resource, sys\nfrom tfkit.cli import main\nstatus = main(sys.argv[1:])\n"
       "print(json.dumps({'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss "
       "/ 1024}), file=sys.stderr)\nsys.exit(status)")


def tfkit(args: list[str], stdout) -> tuple[float, float]:
    """``tfkit *args`` in a fresh process, stdout to ``stdout``: (seconds, peak MB)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS, *args], stdout=stdout, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"tfkit {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return seconds, json.loads(out.stderr.strip().splitlines()[-1])["max_rss_mb"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--work", default="/tmp/tfkit-predict-benchmark")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [1_000, 20_000] if args.quick else [10_000, 1_000_000]
    with open(work / "train.out", "w") as out:
        tfkit(["train", "--set", "train.epochs=1", "--set", "train.verbose=0",
               "--set", f"train.runs_dir={work / 'runs'}", "--set",
               f"export.base_dir={work / 'saved_models'}", "--set", "export.blessing=false"], out)
    model = json.loads((work / "train.out").read_text().strip().splitlines()[-1])["export_path"]
    rows = []
    for n in sizes:
        texts = work / f"reviews-{n}.txt"
        if not texts.is_file():
            import pandas as pd

            write_reviews(n, work / "reviews.csv")
            reviews = pd.read_csv(work / "reviews.csv")["review"].str.replace("\n", " ")
            texts.write_text("\n".join(reviews) + "\n", encoding="utf-8")
        with open(work / "answers.jsonl", "w") as out:
            seconds, rss = tfkit(["predict", model, "--input", str(texts)], out)
        answered = sum(1 for _ in open(work / "answers.jsonl"))
        assert answered == n, (answered, n)
        row = {"lines": n, "peak_rss_mb": round(rss), "command_seconds": round(seconds, 1),
               "inputs_per_second": round(n / seconds)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"rows": rows, "rss_largest_vs_smallest": round(
        rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3), "quick": args.quick}
    print(json.dumps({"rss_largest_vs_smallest": result["rss_largest_vs_smallest"]}))
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / f"predict-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
