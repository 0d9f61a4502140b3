"""What it takes for a run's model to become the served version.

TF Serving (and ``tfkit predict saved_models/<name>``) switch every client to the highest
version, so a diverged or useless model published there replaces a good one without a word.
:func:`bless` decides whether a trained model may be published (TFX calls this check
"blessing"; this is the same idea without a pipeline); :func:`export_run` publishes a
finished run after it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from tfkit.config import Config, check_name
from tfkit.data import LabeledData, load_data
from tfkit.datasets import make_dataset
from tfkit.evaluation import score_saved_model, score_test_split
from tfkit.export import ExportError, check_next_version, export_for_serving
from tfkit.litert import REPRESENTATIVE, export_litert
from tfkit.metrics import label_set_baseline
from tfkit.quantization import (
    check_quantizable,
    quantization_reasons,
    quantize_for_serving,
    served_metrics,
)
from tfkit.runs import load_run, run_multi_label
from tfkit.serving_config import LabelError, check_label, published_versions, set_version_label

log = logging.getLogger("tfkit")

EXPORT_SAMPLES = 64  # test examples an export is checked with (and its warmup requests)
SCORE_BATCH = 256  # test examples per call when a quantized copy is scored
LITERT_CHECKED = 256  # test images an int8 LiteRT file's accuracy is checked on


def majority_rates(data: LabeledData) -> dict:
    """``{head: (share, label)}``: the test accuracy of always answering the most frequent
    test label, per classification head (head ``None`` for a single-task classifier). For
    multi-label data: ``{None: (micro F1, label set)}`` of always answering the training
    split's most frequent label set (:func:`tfkit.metrics.label_set_baseline`)."""
    if data.multi_label:
        f1, chosen = label_set_baseline(data.train.y, data.test.y)
        return {None: (f1, ", ".join(data.label_names[i] for i in chosen))}
    multitask = isinstance(data.label_names, dict)
    heads = data.label_names if multitask else {None: data.label_names}
    targets = data.test.y if multitask else {None: data.test.y}
    rates = {}
    for head, names in heads.items():
        if names:
            counts = np.bincount(np.asarray(targets[head]).astype(np.int64).reshape(-1),
                                 minlength=len(names))
            rates[head] = (float(counts.max() / max(counts.sum(), 1)), names[int(counts.argmax())])
    return rates


def bless(metrics: dict, data: LabeledData, model_dir: str | Path,
          max_regression: float, reasons=()) -> dict:
    """Whether a trained model may be published as the next version under ``model_dir``.

    It must have (1) finite test losses; (2) on every classification head, a test accuracy
    above what always answering the most frequent test label scores (multi-label: a test
    micro F1 above that of always answering the most frequent label set); (3) when ``model_dir``
    already serves a version (with the same labels: other labels are refused before
    training), a test accuracy at most ``max_regression`` below that version's, scored
    through its serving signature on this run's test split.

    Args:
        metrics: the run's test metrics (``test_loss``, ``test_accuracy``, per head
            ``test_<head>_accuracy``...).
        data: the run's data (its test split is scored).
        model_dir: ``saved_models/<name>``.
        max_regression: ``export.max_regression``.
        reasons: reasons already found not to publish (a quantized model that lost too
            much against its float model: :func:`model_to_serve`).

    Returns:
        ``{"blessed": bool, "reasons": [why not, ...], "majority_accuracy": {...},
        "served_version": path or None, "served_accuracy": {...}, "seconds": float}``.
    """
    started = time.perf_counter()
    reasons = list(reasons)
    for key, value in metrics.items():
        if key.startswith("test_") and key.endswith("loss") and isinstance(value, float) \
                and not math.isfinite(value):
            reasons.append(f"{key} is {value} (training diverged: lower train.learning_rate?)")
    rates = majority_rates(data)
    score = "micro_f1" if data.multi_label else "accuracy"  # what the baseline is scored on
    for head, (rate, label) in rates.items():
        key = f"test_{head}_{score}" if head else f"test_{score}"
        accuracy = metrics.get(key)
        if accuracy is not None and not accuracy > rate + 1e-6:  # float32 metric vs exact rate
            reasons.append(f"{key} {accuracy:.4f} is not above {rate:.4f}, what always "
                           f"answering {label!r} scores")
    served, served_accuracy = None, {}
    versions = published_versions(model_dir)
    if versions and not reasons:
        served = versions[-1]
        try:
            theirs = score_saved_model(served, data)
        except ValueError as exc:  # e.g. an export tfkit did not write: nothing to compare
            log.warning("could not score the served version '%s' to compare: %s", served, exc)
            theirs = {}
        for head in rates:
            key = f"test_{head}_{score}" if head else f"test_{score}"
            if key not in theirs or key not in metrics:
                continue
            served_accuracy[key] = theirs[key]
            if metrics[key] < theirs[key] - max_regression:
                reasons.append(
                    f"{key} {metrics[key]:.4f} is {theirs[key] - metrics[key]:.4f} below the "
                    f"served version {served.name}'s {theirs[key]:.4f} on this run's test split "
                    f"(export.max_regression: {max_regression})")
    return {"blessed": not reasons, "reasons": reasons,
            "majority_accuracy": {str(head) if head else "label": rate
                                  for head, (rate, _) in rates.items()},
            "served_version": None if served is None else str(served),
            "served_accuracy": served_accuracy,
            "seconds": round(time.perf_counter() - started, 2)}


def model_to_serve(model: keras.Model, config: Config, test_ds, predicted, metrics: dict
                   ) -> tuple[keras.Model, dict, list[str]]:
    """The model to export, the test metrics the checks before serving judge, and reasons
    not to publish it. With ``export.quantize: none``: ``model``, ``metrics``, ``[]``. With
    ``int8``: a quantized copy (:func:`tfkit.quantization.quantize_for_serving`, its facts
    added to ``metrics["quantization"]``), its own test accuracy and loss in the metrics
    judged, and a reason when it lost more than ``export.max_regression`` against ``model``.
    """
    mode = config.export.quantize
    if mode == "none":
        return model, metrics, []
    quantized, facts = quantize_for_serving(model, mode, test_ds, predicted)
    metrics["quantization"] = facts
    return (quantized, served_metrics(metrics, facts),
            quantization_reasons(facts, config.export.max_regression))


class NotPublished(ExportError):
    """A model failed the checks before serving (:func:`tfkit.publishing.bless`)."""


EXPORT_FORMATS = ("saved_model", "litert")


def _check_run_export(run_dir, config, model, multi_label: dict | None, format: str) -> None:
    """What a finished run cannot be exported as, refused before its data is read.

    Raises:
        ExportError: naming the run and what to choose instead.
    """
    if multi_label and format != "saved_model":
        raise ExportError(f"export --format {format}: '{run_dir}' answers several labels per "
                          "example, which only the SavedModel serves (--format saved_model).")
    if config.data.features and config.export.quantize != "none":
        raise ExportError(f"export --quantize {config.export.quantize}: '{run_dir}' reads text "
                          "with table columns, which int8 export does not take yet "
                          "(--quantize none).")
    if multi_label and config.export.quantize != "none":
        raise ExportError(f"export --quantize {config.export.quantize}: '{run_dir}' answers "
                          "several labels per example; its int8 copy cannot be checked "
                          "against it yet (--quantize none).")
    if format == "saved_model":
        check_quantizable(model, config.export.quantize, config.model.name)


def export_run(run_dir: str | Path, base_dir: str | None = None, name: str | None = None,
               force: bool = False, label: str | None = None,
               format: str = "saved_model", quantize: str | None = None) -> Path:
    """Exports a finished run as the next SavedModel version (``tfkit export``), or with
    ``format="litert"`` an image model as ``<base_dir>/<name>.tflite``
    (:func:`tfkit.litert.export_litert`; TF Serving's folder is left as it is).

    ``base_dir`` may be any folder; ``name`` (default: the run's ``export.name`` or ``name``)
    must be one folder name inside it (:func:`tfkit.config.check_name`). Unless ``force``,
    the model must pass the checks that ``train`` runs before publishing
    (:func:`tfkit.publishing.bless`, when the run's ``export.blessing`` is on), against the
    version that folder serves now.

    ``label`` (e.g. ``canary``) points that version label at the new version
    (:func:`tfkit.serving_config.set_version_label`).

    ``quantize`` (``none`` / ``int8``; default: the run's ``export.quantize``) exports a
    quantized copy of the run's float model, checked on the test split as ``train`` checks
    it (:func:`model_to_serve`).

    Raises:
        NotPublished: for a model that fails those checks, naming why.
        ExportError: for an export that fails.
        LabelError: for a label TF Serving could not carry (checked before exporting).
    """
    check_name("export --name", name)
    if format not in EXPORT_FORMATS:
        raise ExportError(f"export --format must be one of {', '.join(EXPORT_FORMATS)}; "
                          f"got {format!r}.")
    if label is not None and format != "saved_model":
        raise LabelError("export --label names a TF Serving version: it goes with --format "
                         "saved_model.")
    if label is not None:
        check_label(label, "export --label")
    config, model, preprocessor, label_names = load_run(run_dir)
    multi_label = run_multi_label(run_dir)
    if quantize is not None:
        config.export.quantize = quantize
    _check_run_export(run_dir, config, model, multi_label, format)
    model_dir = Path(base_dir or config.export.base_dir, name or config.export.name or config.name)
    litert_file = model_dir.with_name(f"{model_dir.name}.tflite")
    if format == "litert" and litert_file.exists() and not force:  # it has no versions
        raise ExportError(f"'{litert_file}' already exists (an earlier LiteRT export); "
                          "tfkit export --force replaces it, --name writes another.")
    data = load_data(config.data)
    if format == "saved_model":
        check_next_version(model_dir, label_names, preprocessor, multi_label)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    metrics.pop("quantization", None)  # the facts of this export's model, not of the run's
    served, judged, reasons = model, metrics, []
    if format == "saved_model" and config.export.quantize != "none":
        test_ds = make_dataset(data.test, preprocessor, config, SCORE_BATCH, training=False)
        served, judged, reasons = model_to_serve(
            model, config, test_ds, score_test_split(model, test_ds, label_names)[0], metrics)
    if config.export.blessing and not force:
        blessing = bless(judged, data, model_dir, config.export.max_regression, reasons)
        if not blessing["blessed"]:
            raise NotPublished(f"'{run_dir}' is not published: {'; '.join(blessing['reasons'])}. "
                               "tfkit export --force publishes it anyway.")
    if format == "litert":  # int8: calibrated on training images, checked on the test split
        test = data.test.sample(LITERT_CHECKED if config.export.quantize == "int8"
                                else EXPORT_SAMPLES)
        return export_litert(model, preprocessor, label_names,
                             litert_file, test.x,
                             quantize=config.export.quantize,
                             calibration=data.train.sample(REPRESENTATIVE).x, labels=test.y,
                             max_regression=config.export.max_regression)
    version = export_for_serving(served, preprocessor, label_names, model_dir,
                                 preprocessor.export_samples(data.test.sample(EXPORT_SAMPLES).x),
                                 serving_root=config.export.serving_root,
                                 metadata={"run_dir": str(run_dir), "metrics": metrics},
                                 multi_label=multi_label)
    if label is not None:
        set_version_label(model_dir, label, int(version.name), config.export.serving_root)
    return version
