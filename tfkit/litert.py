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


def export_litert(model, preprocessor, label_names, path: str | os.PathLike, images,
                  atol: float = 1e-5) -> Path:
    """Writes the image ``model`` (with its ``preprocessor``'s resizing and channel
    conversion) as a LiteRT file at ``path``, after checking it against the SavedModel it is
    converted from on ``images`` (pixel arrays, e.g. the test split).

    Raises:
        ExportError: for a model that does not take images, or a converted model whose
            probabilities differ from the SavedModel's by more than ``atol``; nothing is
            written then.
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
        content = converter.convert()
    got = litert_interpreter(content).get_signature_runner(SIGNATURE)(images=pixels)
    diff = float(np.max(np.abs(got["probabilities"] - expected["probabilities"].numpy())))
    if diff > atol:
        raise ExportError(f"the LiteRT model differs from the SavedModel: max |diff| of the "
                          f"probabilities {diff:.3g} > {atol}; nothing was written.")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    partial.replace(path)
    return path
