"""TensorFlow's thread-pool sizes on a small machine: does setting them beat the defaults?

    python -m benchmarks.threads [--rounds 2]
    python -m benchmarks.threads --quick   # smoke test: 256 reviews, two settings, one round

Thread pools are fixed when TensorFlow starts, so each setting runs in its own process:
``text_lstm`` (Embedding(10000, 128) -> LSTM(64), batch 32, ``lazy_adam``, tfkit's length
buckets) on the 3,600 fine-food training reviews, one warm-up epoch then 3 timed epochs
(median examples/s). The settings run in alternating order, ``--rounds`` times each, and
the medians over rounds are compared. ``0`` means TensorFlow's default (one thread per core).
Writes ``benchmarks/results/threads-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.child import run_child

SETTINGS = {"default": (0, 0), "intra1_inter1": (1, 1), "intra1_inter2": (1, 2),
            "intra2_inter1": (2, 1)}


def child(intra: int, inter: int, limit: int | None) -> dict:
    """Examples/s of one process with the given thread-pool sizes (0 = TensorFlow's
    default), and the sizes TensorFlow reports it used."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from benchmarks.run import bucketed_reviews, tfkit_model

    pre, ds, n = bucketed_reviews(limit)
    model = tfkit_model(pre)
    model.fit(ds, epochs=1, verbose=0)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        rates.append(n / (time.perf_counter() - start))
    return {"examples_per_second": statistics.median(rates),
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit = 256 if args.quick else None
    if args.child:
        print(json.dumps(child(*args.child, limit)))
        return {}
    settings = dict(list(SETTINGS.items())[:2]) if args.quick else SETTINGS
    rates, used = {name: [] for name in settings}, {}
    for r in range(1 if args.quick else args.rounds):
        for name in (list(settings) if r % 2 == 0 else list(reversed(settings))):
            measured = run_child("benchmarks.threads", ["--child", *map(str, settings[name])]
                                 + (["--quick"] if args.quick else []))
            rates[name].append(round(measured.pop("examples_per_second"), 1))
            used[name] = measured
    # not at module level: a child sets its thread pools before tfkit is imported
    from benchmarks.run import machine, write_result

    result = {"machine": machine(), "quick": args.quick, "rounds": len(rates["default"]),
              "threads_used": used,  # as TensorFlow reports them; 0 = its default
              "train_examples_per_second": {k: statistics.median(v) for k, v in rates.items()},
              "each_round": rates}
    return write_result(result, args.out, "threads", args.quick)


if __name__ == "__main__":
    main()
