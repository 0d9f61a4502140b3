"""SavedModels for TF Serving: raw input in, probabilities and labels out, published atomically.

Layout (what TF Serving's file-system poller expects)::

    saved_models/<name>/1/saved_model.pb, variables/, assets/
    saved_models/<name>/2/...

A version is written with Keras 3's ``ExportArchive`` into a hidden temporary folder
beside the versions (TF Serving ignores names that are not integers), loaded back
with ``tf.saved_model.load``, checked against the Keras model on sample inputs, and
only then renamed to the next integer version. A failed export leaves no version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

SERVING_KEY = "serving_default"


class ExportError(RuntimeError):
    """The exported SavedModel did not reproduce the Keras model; nothing was published."""


def next_version(model_dir: str | os.PathLike) -> int:
    """The next integer version under ``model_dir`` (1 when there is none)."""
    path = Path(model_dir)
    versions = [int(p.name) for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []
    return max(versions, default=0) + 1


def _class_outputs(probabilities, label_names, prefix=""):
    class_id = tf.argmax(probabilities, axis=-1)
    labels = tf.gather(tf.constant(label_names, tf.string), class_id)
    return {f"{prefix}probabilities": tf.cast(probabilities, tf.float32),
            f"{prefix}class_id": class_id, f"{prefix}label": labels}


def _outputs(predictions, label_names):
    """The serving outputs: ``probabilities``, ``class_id``, ``label``; for a multi-task
    model (``label_names`` a dict) the same prefixed with ``<head>_`` per classification
    head and ``<head>`` (``float32 [None]``) per regression head."""
    if not isinstance(label_names, dict):
        return _class_outputs(predictions, label_names)
    out = {}
    for head, names in label_names.items():
        if names:
            out.update(_class_outputs(predictions[head], names, prefix=f"{head}_"))
        else:
            out[head] = tf.cast(tf.reshape(predictions[head], [-1]), tf.float32)
    return out


def _serving_fn(model, prepare, names):
    def serve(inputs):
        return _outputs(model(prepare(inputs), training=False), names)

    return serve


def build_archive(model: keras.Model, preprocessor, label_names: list[str] | dict):
    """An ``ExportArchive`` with one endpoint per preprocessor serving input.

    Text models: ``serving_default`` takes ``text`` (``tf.string [None]``). Image models:
    ``serving_default`` takes ``image_bytes`` (encoded PNG/JPEG, ``tf.string [None]``) and
    ``serving_tensor`` takes ``images`` (``float32 [None, h, w, c]``, values 0..255).
    Every endpoint returns ``probabilities`` (``float32 [None, classes]``), ``class_id``
    (``int64 [None]``) and ``label`` (``string [None]``). The label names are also kept
    as the variable collection ``label_names`` (``loaded.label_names[0]``). Multi-task
    models return those per classification head, prefixed ``<head>_``, and ``<head>``
    per regression head; their label names are in ``assets.extra/tfkit.json``.
    """
    archive = keras.export.ExportArchive()
    # The model is not passed to archive.track(): add_endpoint() already tracks every variable
    # the endpoint uses, and track(model) would add the keras.Variable wrappers of the same
    # weights, which the checkpoint writes a second time (keras-team/keras#23553: 2x the
    # SavedModel's size and 2x the variable memory in TF Serving).
    if hasattr(preprocessor, "layer"):
        archive.track(preprocessor.layer)  # the vocabulary lookup table
    names = dict(label_names) if isinstance(label_names, dict) else list(label_names)
    for endpoint, (prepare, signature) in preprocessor.serving_endpoints().items():
        archive.add_endpoint(endpoint, _serving_fn(model, prepare, names),
                             input_signature=signature)
    if isinstance(names, list):
        archive.add_variable_collection(
            "label_names", [tf.Variable(names, trainable=False, name="label_names")])
    return archive


def _check_export(path: Path, model, preprocessor, label_names, samples, atol: float) -> None:
    """Loads the SavedModel back and compares every endpoint's float outputs (probabilities,
    regression values) with the Keras model on the same inputs."""
    loaded = tf.saved_model.load(str(path))
    endpoints = preprocessor.serving_endpoints()
    raw = tf.constant(samples)
    model_inputs = endpoints[SERVING_KEY][0](raw)  # e.g. tokenised text, decoded images
    expected = _outputs(model(model_inputs, training=False), label_names)
    for endpoint, (_, signature) in endpoints.items():
        # serving_default gets the raw inputs; other endpoints take the prepared tensor
        inputs = raw if endpoint == SERVING_KEY else model_inputs
        served = loaded.signatures[endpoint](**{signature[0].name: inputs})
        if set(served) != set(expected):
            raise ExportError(f"exported model at '{path}' ({endpoint}) returns {sorted(served)}, "
                              f"expected {sorted(expected)}")
        for key, want in expected.items():
            if want.dtype != tf.float32:
                continue
            got, want = served[key].numpy(), want.numpy()
            if got.shape != want.shape:
                raise ExportError(f"exported model at '{path}' ({endpoint}) returns {key} of "
                                  f"shape {got.shape}, the Keras model {want.shape}")
            diff = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) \
                if got.size else 0.0
            if diff > atol:
                raise ExportError(f"exported model at '{path}' ({endpoint}) differs from the "
                                  f"Keras model in {key}: max relative |diff| = {diff:.3g} "
                                  f"> atol = {atol}")


def export_for_serving(model: keras.Model, preprocessor, label_names: list[str],
                       model_dir: str | os.PathLike, samples, *, atol: float = 1e-5,
                       metadata: dict | None = None) -> Path:
    """Exports ``preprocessor ∘ model`` as the next version under ``model_dir``.

    Args:
        model: the trained Keras model (token ids in, probabilities out).
        preprocessor: the adapted preprocessor the model was trained with.
        label_names: label string for each class id.
        model_dir: ``saved_models/<name>``; versions are created inside it.
        samples: raw inputs used to check the export (include edge cases: "" and long text).
        atol: largest allowed difference between served and Keras probabilities.
        metadata: extra facts written to ``assets.extra/tfkit.json`` (run dir, metrics).

    Returns:
        The published version directory, e.g. ``saved_models/fine_foods/1``.

    Raises:
        ExportError: if the reloaded SavedModel does not match; nothing is published.

    Examples:
        >>> path = export_for_serving(model, pre, ["great", "other"], "saved_models/demo",
        ...                           samples=["tasty", ""])
    """
    model_dir = Path(model_dir).resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        archive = build_archive(model, preprocessor, label_names)
        archive.write_out(str(staging / "model"), verbose=False)
        extra = staging / "model" / "assets.extra"
        extra.mkdir(exist_ok=True)
        facts = {"label_names": label_names if isinstance(label_names, dict) else list(label_names),
                 "preprocessor": preprocessor.get_config(),
                 "signature": SERVING_KEY, **(metadata or {})}
        (extra / "tfkit.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
        _check_export(staging / "model", model, preprocessor, label_names, samples, atol)
        while True:  # another exporter may take a version number between our check and rename
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(staging / "model", target)
                return target
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_serving(path: str | os.PathLike):
    """Loads a SavedModel version the way TF Serving does and returns its ``serving_default``.

    ``path`` may be a version folder or ``saved_models/<name>`` (latest version).

    Raises:
        FileNotFoundError: if no SavedModel is there.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file() and path.is_dir():
        versions = [p for p in path.iterdir() if p.name.isdigit()]
        if versions:
            path = max(versions, key=lambda p: int(p.name))
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"No SavedModel at '{path}' (expected saved_model.pb, or "
                                "version folders 1/, 2/, ... inside it).")
    loaded = tf.saved_model.load(str(path))
    return loaded, loaded.signatures[SERVING_KEY], path


def predict(path: str | os.PathLike, inputs, batch_size: int = 256) -> list[dict]:
    """Runs a SavedModel's ``serving_default`` on raw inputs.

    Args:
        path: a version folder or ``saved_models/<name>`` (latest version).
        inputs: texts for text models; image file paths or encoded bytes for image models.

    Returns:
        One dict per input: ``{"label": str, "probabilities": {label: p}}``; for a
        multi-task model ``{head: that dict}`` per classification head and
        ``{head: value}`` per regression head.

    Examples:
        >>> predict("saved_models/fine_foods_fasttext", ["Delicious, will buy again"])
        [{'label': 'great', 'probabilities': {'great': 0.93, 'other': 0.07}}]
    """
    loaded, signature, version = load_serving(path)
    names = _label_names(loaded, version)
    key = list(signature.structured_input_signature[1])[0]
    if key == "text":
        inputs = [str(x) for x in inputs]
    elif key == "image_bytes":
        inputs = [x if isinstance(x, bytes) else _read_image(x) for x in inputs]
    else:
        raise ValueError(f"predict takes text or image models; this one takes '{key}' "
                         "tensors: call its serving_default signature from Python.")
    results = []
    for start in range(0, len(inputs), batch_size):
        out = {k: v.numpy() for k, v in
               signature(**{key: tf.constant(inputs[start:start + batch_size], tf.string)}).items()}
        for row in range(len(inputs[start:start + batch_size])):
            if isinstance(names, list):
                results.append(_class_result(out, row, names))
            else:  # multi-task: one entry per head
                results.append({head: _class_result(out, row, head_names, f"{head}_")
                                if head_names else round(float(out[head][row]), 6)
                                for head, head_names in names.items()})
    return results


def _class_result(out, row, names, prefix=""):
    return {"label": out[f"{prefix}label"][row].decode(),
            "probabilities": {n: round(float(p), 6)
                              for n, p in zip(names, out[f"{prefix}probabilities"][row])}}


def _label_names(loaded, version: Path):
    """Label names of an export: the ``label_names`` variable, or for multi-task exports the
    ``{head: names}`` dict in ``assets.extra/tfkit.json``."""
    if hasattr(loaded, "label_names"):
        return [n.decode() for n in loaded.label_names[0].numpy()]
    facts = version / "assets.extra" / "tfkit.json"
    if not facts.is_file():
        raise FileNotFoundError(f"'{version}' has no label names (not a tfkit export?).")
    return json.loads(facts.read_text(encoding="utf-8"))["label_names"]


def _read_image(path) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image file '{path}' does not exist.")
    return file.read_bytes()
