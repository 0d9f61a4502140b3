"""Process-wide settings on a small machine: TensorFlow's thread-pool sizes and the memory
allocator. Do any beat the defaults?

    python -m benchmarks.threads [--rounds 2]
    python -m benchmarks.threads --quick   # smoke test: 256 reviews, two settings, one round

Thread pools are fixed when TensorFlow starts, and the allocator when the process starts
(``LD_PRELOAD``), so each setting runs in its own process: ``text_lstm`` (Embedding(10000,
128) -> LSTM(64), batch 32, ``lazy_adam``, tfkit's length buckets) on the 3,600 fine-food
training reviews, one warm-up epoch then 3 timed epochs (median examples/s). The settings run
in alternating order, ``--rounds`` times each, and the medians over rounds are compared.
``0`` threads means TensorFlow's default (one thread per core). The allocators are gperftools'
tcmalloc and jemalloc (Debian: ``apt-get install libtcmalloc-minimal4 libjemalloc2``), the
ones TensorFlow's CPU performance guides suggest for many small ops; one that is not
installed is left out and listed under ``allocators_missing``. Each child reports the
allocator really mapped into it. Writes ``benchmarks/results/threads-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.child import run_child

# name: (intra-op threads, inter-op threads, allocator library or None for glibc's malloc)
SETTINGS = {"default": (0, 0, None), "intra1_inter1": (1, 1, None),
            "intra1_inter2": (1, 2, None), "intra2_inter1": (2, 1, None),
            "tcmalloc": (0, 0, "tcmalloc_minimal"), "jemalloc": (0, 0, "jemalloc")}


def allocator_in_use() -> str:
    """``tcmalloc``, ``jemalloc`` or ``glibc``: the allocator library mapped into this process."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "glibc")


def child(intra: int, inter: int, limit: int | None) -> dict:
    """Examples/s of one process with the given thread-pool sizes (0 = TensorFlow's
    default), the sizes TensorFlow reports it used, and its allocator."""
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
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "allocator": allocator_in_use()}


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
    libraries = {name: ctypes.util.find_library(lib) for name, (_, _, lib) in SETTINGS.items()
                 if lib}
    settings = {name: setting for name, setting in SETTINGS.items()
                if name not in libraries or libraries[name]}
    if args.quick:  # the defaults, and an allocator when one is installed, else other threads
        settings = dict([("default", SETTINGS["default"]),
                         next(((n, s) for n, s in settings.items() if n in libraries),
                              ("intra1_inter1", SETTINGS["intra1_inter1"]))])
    rates, used = {name: [] for name in settings}, {}
    for r in range(1 if args.quick else args.rounds):
        for name in (list(settings) if r % 2 == 0 else list(reversed(settings))):
            env = dict(os.environ, **({"LD_PRELOAD": libraries[name]} if name in libraries else {}))
            measured = run_child("benchmarks.threads", ["--child", *map(str, settings[name][:2])]
                                 + (["--quick"] if args.quick else []), env=env)
            rates[name].append(round(measured.pop("examples_per_second"), 1))
            used[name] = measured
    # not at module level: a child sets its thread pools before tfkit is imported
    from benchmarks.run import machine, write_result

    result = {"machine": machine(), "quick": args.quick, "rounds": len(rates["default"]),
              "threads_used": used,  # as TensorFlow reports them (0 = its default), allocator
              "allocators_missing": sorted(name for name, path in libraries.items() if not path),
              "train_examples_per_second": {k: statistics.median(v) for k, v in rates.items()},
              "each_round": rates}
    return write_result(result, args.out, "threads", args.quick)


if __name__ == "__main__":
    main()
