"""Batch size against latency of an export's ``serving_default``: what TF Serving's batching
should aim for on this machine.

    python -m benchmarks.batching [SAVED_MODEL] [--rounds 7]
    python -m benchmarks.batching --quick      # smoke test: a tiny untrained export

TF Serving's batching (``--enable_batching --batching_parameters_file``) merges concurrent
requests into one call of the signature, up to ``max_batch_size`` examples, waiting at most
``batch_timeout_micros`` for a batch to fill. Larger batches raise throughput until the
machine is busy, and raise each request's latency. This loads the export as TF Serving does
(``tf.saved_model.load``, ``serving_default``), calls it on fine-food reviews at each batch
size (median of ``--rounds`` calls after a warm-up call) and reports milliseconds per call and
examples per second, and the smallest batch size reaching 90% of the best throughput: the
``max_batch_size`` that ``tfkit.serving_config.BATCHING`` writes. Results go to
``benchmarks/results/batching-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

BATCH_SIZES = (1, 4, 16, 32, 64, 128, 256)


def measure(saved_model: str, rounds: int, texts: list[str]) -> dict:
    import tensorflow as tf

    signature = tf.saved_model.load(saved_model).signatures["serving_default"]
    rows = []
    for size in BATCH_SIZES:
        batch = tf.constant((texts * (size // len(texts) + 1))[:size])
        signature(text=batch)  # warm-up: traces nothing, but the first call pays lazy set-up
        seconds = []
        for _ in range(rounds):
            started = time.perf_counter()
            signature(text=batch)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows.append({"batch_size": size, "ms_per_call": round(1000 * median, 3),
                     "examples_per_second": round(size / median, 1)})
    best = max(row["examples_per_second"] for row in rows)
    chosen = next(row["batch_size"] for row in rows if row["examples_per_second"] >= 0.9 * best)
    return {"saved_model": saved_model, "rounds": rounds, "rows": rows,
            "max_batch_size_for_90_percent": chosen}


def tiny_export(folder: str) -> str:
    import tfkit

    pre = tfkit.TextPreprocessor(max_tokens=100, max_len=16)
    pre.adapt(["tasty and fresh", "stale, do not buy"])
    model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
                              buckets=64)
    return str(tfkit.export_for_serving(model, pre, ["great", "other"], Path(folder, "m"),
                                        samples=["tasty"]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saved_model", nargs="?", default="saved_models/fine_foods_fasttext")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    import tfkit

    texts = [str(t) for t in tfkit.load_data(tfkit.DataConfig(source="fine_foods")).test.x[:256]]
    with tempfile.TemporaryDirectory() as folder:
        path = tiny_export(folder) if args.quick else args.saved_model
        result = measure(path, 1 if args.quick else args.rounds, texts)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out, f"batching-{stamp}{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    for row in result["rows"]:
        print(f"batch {row['batch_size']:4d}: {row['ms_per_call']:8.2f} ms, "
              f"{row['examples_per_second']:9.1f} examples/s")
    print(f"90% of the best throughput from batch {result['max_batch_size_for_90_percent']}; "
          f"written {out}")
    return result


if __name__ == "__main__":
    main()
