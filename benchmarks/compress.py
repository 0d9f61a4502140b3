"""Smaller served models, side by side in one process: a distilled student against the same
student trained alone and against its teacher; int8 exports against float ones.

    python -m benchmarks.compress            # fine-food reviews, 3 seeds
    python -m benchmarks.compress --quick    # 64 reviews per split, 1 seed, 1 epoch (smoke test)

- **Distillation**: each teacher (``fine_foods_transformer`` and ``fine_foods_han``, trained
  once, exported) teaches the default preset (``fine_foods_fasttext``), which is also trained
  alone (``train.teacher``: the teacher's SavedModel; ``train.distill_alpha`` /
  ``_temperature`` at their defaults), alternating, for each seed (``data.seed`` and
  ``train.seed``): test accuracy mean and standard error over the seeds, the teacher's test
  accuracy on the same split.
- **int8**: the default preset and ``fine_foods_text_lstm``, each trained once and exported
  as float and as int8 (``tfkit export --quantize int8`` of the same run): SavedModel size,
  test accuracy of each (the int8 figures from the export's quantization facts).
- **Serving** (every export above, loaded as TF Serving loads it, raw strings in, the test
  reviews): batch-1 latency p50 / p99 and batch-64 examples/s, measured in alternating
  rounds; ratios to the teacher (distillation) and to the float export (int8).

Results go to ``benchmarks/results/compress-<date>-<time>.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEACHERS = ("fine_foods_transformer", "fine_foods_han")
STUDENT, LSTM = "fine_foods_fasttext", "fine_foods_text_lstm"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def serve_timing(version: Path, texts: list[str], calls: int) -> dict:
    """Batch-1 latencies (ms) and batch-64 seconds of the export's ``serving_default``, one
    list per round (the caller alternates exports between rounds)."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    batches = [texts[i:i + 64] for i in range(0, len(texts) - 63, 64)][:8]

    def one_round():
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            signature(text=tf.constant([texts[i % len(texts)]]))["probabilities"].numpy()
            latencies.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        for batch in batches:
            signature(text=tf.constant(batch))["probabilities"].numpy()
        return latencies, 64 * len(batches) / (time.perf_counter() - started)

    one_round()  # warm-up: traces, first allocations
    return {"round": one_round, "latencies": [], "throughput": []}


def measure_serving(exports: dict, texts: list[str], calls: int, rounds: int) -> dict:
    """``{name: {batch1_ms_p50, batch1_ms_p99, batch64_examples_per_second}}``, the exports
    alternating round by round, each round starting with the next export."""
    timers = {name: serve_timing(path, texts, calls) for name, path in exports.items()}
    names = list(timers)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            latencies, throughput = timers[name]["round"]()
            timers[name]["latencies"] += latencies
            timers[name]["throughput"].append(throughput)
    return {name: {"batch1_ms_p50": round(float(np.percentile(t["latencies"], 50)), 3),
                   "batch1_ms_p99": round(float(np.percentile(t["latencies"], 99)), 3),
                   "batch64_examples_per_second": round(statistics.median(t["throughput"]), 1)}
            for name, t in timers.items()}


def train(preset: str, work: Path, extra: list[str]):
    import tfkit

    return tfkit.train(preset, [f"train.runs_dir={work / 'runs'}",
                                f"export.base_dir={work / 'saved_models'}",
                                "train.verbose=0", *extra])


def mean_se(values: list[float]) -> dict:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return {"mean": round(statistics.fmean(values), 4),
            "se": None if se is None else round(se, 4), "values": [round(v, 4) for v in values]}


def distillation(work: Path, teacher_preset: str, seeds: list[int], quick: list[str]
                 ) -> tuple[dict, dict]:
    teacher = train(teacher_preset, work, quick + [f"name={teacher_preset}"])
    teacher_dir = teacher.export_path.parent
    alone, taught, facts = [], [], []
    student_export = None
    for seed in seeds:
        seeded = quick + [f"data.seed={seed}", f"train.seed={seed}"]
        runs = [("alone", seeded + ["name=alone", "export.enabled=false"]),
                ("taught", seeded + [f"name=student_{teacher_preset}_{seed}",
                                     f"train.teacher={teacher_dir}"])]
        for kind, overrides in runs if seed % 2 else runs[::-1]:  # alternate who goes first
            result = train(STUDENT, work, overrides)
            if kind == "alone":
                alone.append(result.metrics["test_accuracy"])
            else:
                taught.append(result.metrics["test_accuracy"])
                facts.append(result.metrics["distillation"])
                student_export = student_export or result.export_path
    teacher_accuracy = [f["teacher_test_accuracy"] for f in facts]
    report = {"teacher": teacher_preset, "student": STUDENT, "seeds": seeds,
              "alpha": facts[0]["alpha"], "temperature": facts[0]["temperature"],
              "teacher_test_accuracy": mean_se(teacher_accuracy),
              "student_alone_test_accuracy": mean_se(alone),
              "student_distilled_test_accuracy": mean_se(taught),
              "distilled_minus_teacher_points": round(100 * (statistics.fmean(taught)
                                                             - statistics.fmean(teacher_accuracy)), 2),
              "distilled_minus_alone_points": round(100 * (statistics.fmean(taught)
                                                           - statistics.fmean(alone)), 2),
              "teacher_pass_seconds": statistics.median(f["teacher_seconds"] for f in facts),
              "saved_model_bytes": {"teacher": folder_bytes(teacher.export_path),
                                    "student": folder_bytes(student_export)}}
    return report, {teacher_preset: teacher.export_path, f"student_{teacher_preset}": student_export}


def int8(work: Path, preset: str, quick: list[str]) -> tuple[dict, dict]:
    from tfkit.publishing import export_run

    result = train(preset, work, quick + [f"name={preset}_float"])
    version = export_run(result.run_dir, base_dir=str(work / "int8"), name=preset,
                         quantize="int8")
    facts = json.loads((version / "assets.extra" / "tfkit.json").read_text())["metrics"][
        "quantization"]
    size_float, size_int8 = folder_bytes(result.export_path), folder_bytes(version)
    return ({"float_bytes": size_float, "int8_bytes": size_int8,
             "size_ratio": round(size_int8 / size_float, 3),
             "float_test_accuracy": round(facts["float_accuracy"], 4),
             "int8_test_accuracy": round(facts["accuracy"], 4),
             "accuracy_change_points": round(100 * facts["accuracy_change"], 2),
             "label_agreement": facts["label_agreement"], "quantized_layers": facts["layers"],
             "float_layers": facts["float_layers"]},
            {f"{preset}_float": result.export_path, f"{preset}_int8": version})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 7])
    parser.add_argument("--rounds", type=int, default=5, help="serving rounds")
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import tfkit

    quick = ["data.limit=64", "train.epochs=1", "export.blessing=false"] if args.quick else []
    seeds = args.seeds[:1] if args.quick else args.seeds
    rounds, calls = (1, 20) if args.quick else (args.rounds, 200)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        distilled, exports = {}, {}
        for teacher in args.teachers[:1] if args.quick else args.teachers:
            distilled[teacher], more = distillation(work, teacher, seeds, quick)
            exports.update(more)
        quantized = {}
        for preset in (STUDENT, LSTM):
            quantized[preset], more = int8(work, preset, quick)
            exports.update(more)
        data = tfkit.load_data(tfkit.load_config(STUDENT, quick).data)
        texts = [str(t) for t in data.test.x]
        serving = measure_serving(exports, texts, calls, rounds)
    for name, report in distilled.items():
        teacher, student = serving[name], serving[f"student_{name}"]
        report["serving"] = {"teacher": teacher, "student": student,
                             "student_over_teacher_p50": round(
                                 student["batch1_ms_p50"] / teacher["batch1_ms_p50"], 3),
                             "student_over_teacher_p99": round(
                                 student["batch1_ms_p99"] / teacher["batch1_ms_p99"], 3),
                             "student_over_teacher_batch64": round(
                                 student["batch64_examples_per_second"]
                                 / teacher["batch64_examples_per_second"], 3)}
    for preset, report in quantized.items():
        f, q = serving[f"{preset}_float"], serving[f"{preset}_int8"]
        report["serving"] = {"float": f, "int8": q,
                             "int8_over_float_p50": round(q["batch1_ms_p50"] / f["batch1_ms_p50"], 3),
                             "int8_over_float_batch64": round(
                                 q["batch64_examples_per_second"]
                                 / f["batch64_examples_per_second"], 3)}
    result = {"date": datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
              "distillation": distilled, "int8": quantized,
              "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out / f"compress-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
