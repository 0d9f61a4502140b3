"""LiteRT (TensorFlow Lite) files of image models, for phones and edge devices.

The ``.tflite`` file is the export's ``serving_tensor`` signature: pixel values in
(``float32 [batch, height, width, channels]``, 0..255), ``probabilities``, ``class_id`` and
``label`` out. Decoding PNG/JPEG stays outside, as LiteRT apps decode with the platform's own
image library. Text models are refused: their preprocessing (TextVectorization's string
lookup table) needs TensorFlow ops that LiteRT's built-in op set does not have.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfkit.export import ExportError, build_archive

SIGNATURE = "serving_tensor"


def litert_interpreter(content: bytes):
    """A LiteRT interpreter of ``content`` (TensorFlow's ``tf.lite.Interpreter``, which warns
    that it moves to the ``ai_edge_litert`` package; the API is the same)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter is deprecated")
        return tf.lite.Interpreter(model_content=content)


REPRESENTATIVE = 200  # training images LiteRT's int8 converter calibrates activations on


def export_litert(model, preprocessor, label_names, path: str | os.PathLike, images,
                  atol: float = 1e-5, *, quantize: str = "none", calibration=None,
                  labels=None, max_regression: float = 0.02) -> Path:
    """Writes the image ``model`` (with its ``preprocessor``'s resizing and channel
    conversion) as a LiteRT file at ``path``, after checking it against the SavedModel it is
    converted from on ``images`` (pixel arrays, e.g. the test split).

    ``quantize="int8"``: LiteRT's own post-training integer quantization
    (``Optimize.DEFAULT`` with a representative dataset: the first :data:`REPRESENTATIVE`
    of ``calibration``, training images): int8 weights and activations wherever LiteRT has
    int8 kernels, float inputs and outputs. Checked on ``images`` against the float
    SavedModel by its answers, not within ``atol``: with their ``labels``, its accuracy may
    be at most ``max_regression`` below the float model's (without labels: at most that
    share of answers may differ).

    Raises:
        ExportError: for a model that does not take images, or a converted model whose
            probabilities differ from the SavedModel's by more than ``atol`` (int8: whose
            answers are worse than allowed); nothing is written then.
    """
    if SIGNATURE not in preprocessor.serving_endpoints():
        raise ExportError(f"LiteRT files are for image models (pixels in); this model takes "
                          f"'{preprocessor.serving_input}', whose preprocessing needs "
                          "TensorFlow string ops that LiteRT's built-in ops do not have. "
                          "Serve it with TF Serving instead.")
    path = Path(path)
    pixels = tf.cast(preprocessor(images), tf.float32).numpy()
    with tempfile.TemporaryDirectory(prefix="tfkit-litert-") as folder:
        build_archive(model, preprocessor, label_names).write_out(folder, verbose=False)
        expected = tf.saved_model.load(folder).signatures[SIGNATURE](images=tf.constant(pixels))
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE])
        if quantize == "int8":
            sample = tf.cast(preprocessor(calibration[:REPRESENTATIVE]), tf.float32).numpy()
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in sample)
        content = converter.convert()
    got = litert_interpreter(content).get_signature_runner(SIGNATURE)(images=pixels)
    expected = expected["probabilities"].numpy()
    if quantize == "int8":
        check_int8(got["probabilities"], expected, labels, max_regression)
    else:
        diff = float(np.max(np.abs(got["probabilities"] - expected)))
        if diff > atol:
            raise ExportError(f"the LiteRT model differs from the SavedModel: max |diff| of "
                              f"the probabilities {diff:.3g} > {atol}; nothing was written.")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    partial.replace(path)
    return path


def check_int8(got: np.ndarray, expected: np.ndarray, labels, max_regression: float) -> None:
    """Refuses an int8 LiteRT model that answers worse than its float SavedModel allows."""
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        lost = float(np.mean(expected.argmax(1) == labels) - np.mean(got.argmax(1) == labels))
        what = f"its test accuracy is {lost:.4f} below the float model's"
    else:
        lost = float(np.mean(got.argmax(1) != expected.argmax(1)))
        what = f"{lost:.1%} of its answers differ from the float model's"
    if lost > max_regression:
        raise ExportError(f"the int8 LiteRT model is not written: {what} (export.max_regression:"
                          f" {max_regression}); export it without --quantize int8.")
