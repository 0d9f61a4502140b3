"""XLA on the CPU, and TensorFlow's persistent XLA cache: does ``jit_compile`` pay off?

    python -m benchmarks.xla_cache [--rounds 2]
    python -m benchmarks.xla_cache --quick   # smoke test: 64 reviews, one round

XLA compiles one program per batch shape, and a process's compiled programs die with it,
so the compile cost is paid again by every run. TensorFlow can keep them on disk:
``TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR``; a later process whose programs
have the same fingerprint loads them instead of compiling. Each mode runs in its own
process (the flag is read once, when TensorFlow starts):

- ``no_xla``: tfkit's default (``jit_compile`` off on a CPU);
- ``xla_cold``: ``jit_compile=True`` with an empty cache directory (every program compiled
  and written there);
- ``xla_warm``: the same again, reading the directory ``xla_cold`` just filled.

Model: ``text_lstm`` at the reference pipeline's size (Embedding(10000, 128) -> LSTM(64), batch 32,
``lazy_adam``, tfkit's length buckets) on the 3,600 fine-food training reviews. Each process
trains 4 epochs (as the ``fine_foods_text_lstm`` preset does) and reports the first epoch's
seconds (tracing, compiling or loading), the later epochs' examples/s (median) and the
4-epoch total. Modes alternate over ``--rounds``; medians over rounds are compared.
Writes ``benchmarks/results/xla-cache-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.child import run_child

MODES = ("no_xla", "xla_cold", "xla_warm")


def child(jit_compile: bool, epochs: int, limit: int | None) -> dict:
    """Seconds per epoch of one process training ``text_lstm`` (first epoch included)."""
    from benchmarks.run import bucketed_reviews, tfkit_model

    pre, ds, n = bucketed_reviews(limit)
    model = tfkit_model(pre, jit_compile=jit_compile)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": seconds, "examples": n}


def run_mode(mode: str, cache: Path, epochs: int, quick: bool) -> dict:
    """Runs one mode in a fresh Python process; for the XLA modes also records the cache
    files' names and modification times before and after."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")  # the cache reader logs a text-format
    # parse error for each entry before it reads the binary one; harmless, but noisy
    if mode != "no_xla":
        env["TF_XLA_FLAGS"] = f"{env.get('TF_XLA_FLAGS', '')} " \
                              f"--tf_xla_persistent_cache_directory={cache}".strip()
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    measured = run_child("benchmarks.xla_cache", ["--child", mode, "--epochs", str(epochs)]
                         + (["--quick"] if quick else []), env)
    after = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    seconds = measured["epoch_seconds"]
    later = [measured["examples"] / s for s in seconds[1:]]
    return {"first_epoch_seconds": round(seconds[0], 2),
            "later_examples_per_second": round(statistics.median(later), 1) if later else None,
            "total_seconds": round(sum(seconds), 2),
            "cache_files_written": sorted(n for n in after if before.get(n) != after[n])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit = 64 if args.quick else None  # a few batch shapes: a few programs to compile
    epochs = 2 if args.quick else args.epochs
    if args.child:
        print(json.dumps(child(args.child != "no_xla", epochs, limit)))
        return {}
    runs = {mode: [] for mode in MODES}
    for r in range(1 if args.quick else args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            # no_xla first or last, alternating; xla_warm always reads what xla_cold wrote
            order = list(MODES) if r % 2 == 0 else ["xla_cold", "xla_warm", "no_xla"]
            for mode in order:
                runs[mode].append(run_mode(mode, Path(tmp), epochs, args.quick))
    from benchmarks.run import machine, write_result

    def median(key):
        return {mode: statistics.median(run[key] for run in runs[mode]) for mode in MODES
                if all(run[key] is not None for run in runs[mode])}

    result = {"machine": machine(), "quick": args.quick, "rounds": len(runs["no_xla"]),
              "epochs": epochs, "first_epoch_seconds": median("first_epoch_seconds"),
              "later_examples_per_second": median("later_examples_per_second"),
              "total_seconds": median("total_seconds"), "runs": runs}
    return write_result(result, args.out, "xla-cache", args.quick)


if __name__ == "__main__":
    main()
