"""Models on data no default was tuned on: for each dataset, on the same split, the linear
baseline (TF-IDF words and word pairs, or pixel values, with logistic regression: what every
run reports beside itself), a config with only its data section (``model.name: auto``,
``train.learning_rate: auto``, early stopping, ``data.max_len: auto``), the dataset's preset
where there is one, the default preset given the dataset's data section (``tfkit train
--set data.KEY=VALUE ...``, for text), and ``tfkit tune`` within a time budget; wall time of
each on this machine.

Datasets: the embedded ones (fine-food reviews, Tate titles by medium family, Tate tags,
Tate title + artist + year, digits) and variants no default was chosen on (Tate titles by
decade of their year, the fine-food reviews 10x smaller). The defaults were chosen on
``fine_foods`` and ``tate_medium``; the others are held out.

    python -m benchmarks.adaptive                    # tune budget 3 minutes per dataset
    python -m benchmarks.adaptive --budget 15m       # as the issue measures it
    python -m benchmarks.adaptive --quick            # smoke test: 300 examples, 1 trial

Results go to ``benchmarks/results/adaptive-<date>-<time>.json`` and a Markdown table to
standard output; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PRESET = "fine_foods_fasttext"  # `tfkit train --set data.KEY=VALUE ...`: its text model
# name -> (data section, preset or None, score key)
DATASETS = {
    "fine_foods": ({"source": "fine_foods"}, "fine_foods_fasttext", "accuracy"),
    "tate_medium": ({"source": "tate", "label_column": "medium_family"}, None, "accuracy"),
    "tate_tags": ({"source": "tate", "label_column": "tags", "multi_label": True}, "tate_tags",
                  "micro_f1"),
    "tate_table": ({"source": "tate", "label_column": "medium_family",
                    "features": {"year": "float_normalized", "artist": "string_categorical"}},
                   "tate_table", "accuracy"),
    "digits": ({"source": "digits"}, "digits_cnn", "accuracy"),
    # held out: no default was chosen on these
    "fine_foods_small": ({"source": "fine_foods", "limit": 400}, None, "accuracy"),
    "tate_year": ({"source": "tate", "label_column": "year"}, None, "accuracy"),
}
CHOSEN_ON = ("fine_foods", "tate_medium")


def run(values: dict, folder: str, key: str) -> dict:
    """One ``tfkit.train`` of a config dict: its test score, the baseline's, wall time."""
    import tfkit

    values = {**values, "train": {**values.get("train", {}), "verbose": "0",
                                  "runs_dir": f"{folder}/runs"},
              "export": {"enabled": False}}
    start = time.monotonic()
    result = tfkit.train(tfkit.config_from_dict(values))
    m = result.metrics
    return {"score": m[f"test_{key}"], "baseline": (m.get("baseline") or {}).get(f"test_{key}"),
            "model": m["model"], "epochs": m["epochs"], "best_epoch": m["best_epoch"],
            "chosen": {k: v.get("value") for k, v in (m.get("chosen") or {}).items()},
            "wall_seconds": round(time.monotonic() - start, 1)}


def preset_run(preset: str, data: dict, folder: str, key: str, all_data: bool = False) -> dict:
    """``preset`` on the dataset (its ``limit`` only), or with ``all_data`` on every key of
    the dataset's data section, as ``tfkit train PRESET --set data.KEY=VALUE ...`` runs it."""
    import yaml

    from tfkit.config import resolve_config_path

    values = yaml.safe_load(resolve_config_path(preset).read_text())
    values["data"] = {**values.get("data", {}), **{k: v for k, v in data.items()
                                                   if all_data or k == "limit"}}
    return run(values, folder, key)


def tune_run(name: str, data: dict, folder: str, key: str, budget: str, quick: bool) -> dict:
    """``tfkit tune`` from the same data-only config, within ``budget``."""
    import tfkit

    values = {"name": name, "data": data,
              "train": {"runs_dir": f"{folder}/runs", "verbose": "0", "baseline": False,
                        **({"epochs": 2} if quick else {})},
              "export": {"enabled": False}, "tune": {"max_trials": 1} if quick else {}}
    start = time.monotonic()
    result = tfkit.tune(tfkit.config_from_dict(values), budget=budget)
    best = result.best or {}
    return {"score": best.get(f"test_{key}"), "model": best.get("model"),
            "trials": len(result.trials), "wall_seconds": round(time.monotonic() - start, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="3m", help="tfkit tune's budget per dataset")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--no-tune", action="store_true", help="skip tfkit tune")
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 examples, 1 trial")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.datasets:
            data, preset, key = DATASETS[name]
            data = {**data, **({"limit": 300} if args.quick else {})}
            row = {"score": key, "held_out": name not in CHOSEN_ON}
            row["data_only"] = run({"name": f"adaptive_{name}", "data": data}, folder, key)
            row["baseline"] = row["data_only"]["baseline"]
            if preset:
                row["preset"] = {"name": preset, **preset_run(preset, data, folder, key)}
            if "features" not in data and data["source"] != "digits":  # what it reads: text
                row["default_preset"] = preset_run(DEFAULT_PRESET, data, folder, key, True)
            if not args.no_tune:
                row["tune"] = tune_run(f"adaptive_{name}", data, folder, key, args.budget,
                                       args.quick)
            rows[name] = row
            print(json.dumps({name: row}), flush=True)
    result = {"budget": args.budget, "quick": args.quick, "datasets": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out / f"adaptive-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    return result


def table(result: dict) -> str:
    """The results as a Markdown table (scores in points, wall time in seconds)."""
    lines = ["| data | score | linear baseline | data-only config | default preset, `--set data.…` "
             "| preset | tfkit tune |", "|---|---|---|---|---|---|---|"]
    for name, row in result["datasets"].items():
        def cell(part):
            if part is None or part.get("score") is None:
                return "—"
            return f"{100 * part['score']:.1f} ({part.get('model')}, {part['wall_seconds']:.0f} s)"
        base = "—" if row["baseline"] is None else f"{100 * row['baseline']:.1f}"
        lines.append(f"| {name}{' (held out)' if row['held_out'] else ''} | {row['score']} | "
                     f"{base} | {cell(row['data_only'])} | {cell(row.get('default_preset'))} | "
                     f"{cell(row.get('preset'))} | {cell(row.get('tune'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
