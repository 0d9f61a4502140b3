"""Text plus table columns: one text column through :class:`TextPreprocessor` and numeric or
categorical columns through Keras's own ``keras.utils.FeatureSpace``, both adapted on the
training split, both inside the exported SavedModel.

A split's inputs are a NumPy structured array (:func:`table_inputs`): the field ``text``
and one field per feature column. The model takes ``{"token_ids": ids, "table": features}``
(:func:`tfkit.models.tabular.build_text_table`); TF Serving takes the raw row, one signature
input per column (``text``, ``price``, ``category``...), or ``tf.Example`` protos with those
features.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf

from tfkit.config import FEATURE_KINDS
from tfkit.data.pipeline import array_dataset
from tfkit.data.streams import text_array
from tfkit.data.text import TextPreprocessor, write_preprocessor_json
from tfkit.errors import excerpt

FLOAT_KINDS = ("float", "float_normalized", "float_discretized")
INTEGER_KINDS = ("integer_categorical", "integer_hashed")
MISSING = ("", "nan", "na", "n/a", "null", "none")  # a missing number, case-insensitive
DISCRETIZATION_BINS = 32  # float_discretized: quantile bins (FeatureSpace's default)
CROSSING_DIM = 32  # data.feature_crosses: hashed bins of each cross (FeatureSpace's default)


def column_dtype(kind: str):
    """The NumPy dtype a feature column of ``kind`` is read as."""
    if kind in FLOAT_KINDS:
        return np.float32
    return np.int64 if kind in INTEGER_KINDS else object


def table_inputs(texts: np.ndarray, columns, features: dict, where: str) -> np.ndarray:
    """A split's inputs: a structured array with field ``text`` and one field per column of
    ``features`` (``{column: kind}``), read from ``columns`` (a DataFrame or dict of raw
    values, strings or numbers).

    Missing values: an empty cell (or ``NaN``, ``NA``, ``null``) of a float column is NaN
    (the preprocessor puts the training mean there); of an integer column -1 (an unseen
    value: the lookup's out-of-vocabulary slot); of a string column ``""``.

    Raises:
        ValueError: naming the column, row and value that is not a number where one is needed.
    """
    out = np.empty(len(texts), dtype=[("text", object)] + [
        (name, column_dtype(kind)) for name, kind in features.items()])
    out["text"] = texts
    for name, kind in features.items():
        values = list(columns[name])
        if kind in FLOAT_KINDS + INTEGER_KINDS:
            out[name] = [_number(v, kind, f"{where} column '{name}' row {row + 1}")
                         for row, v in enumerate(values)]
        else:
            out[name] = ["" if _missing(v) else str(v) for v in values]
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        str(value).strip().lower() in MISSING


def _number(value, kind: str, where: str):
    if _missing(value):
        return np.nan if kind in FLOAT_KINDS else -1
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (kind in INTEGER_KINDS and number != int(number)):
        wanted = "a number" if kind in FLOAT_KINDS else "an integer"
        raise ValueError(f"{where} is {excerpt(value)}, not {wanted} (data.features: {kind}; "
                         "leave the cell empty for a missing value).")
    return number if kind in FLOAT_KINDS else int(number)


class TextTablePreprocessor:
    """Raw rows (a text and table columns) -> ``{"token_ids": int64 [batch, max_len],
    "table": float32 [batch, features]}``.

    The text goes through ``text`` (a :class:`TextPreprocessor`), the other columns through a
    ``keras.utils.FeatureSpace`` built from ``features`` (``{column: kind}``, FeatureSpace's
    own kinds: ``float``, ``float_normalized``, ``float_discretized``,
    ``string_categorical``, ``integer_categorical``, ``string_hashed``, ``integer_hashed``)
    and ``crosses`` (lists of columns whose value combinations are hashed into
    :data:`CROSSING_DIM` bins), output concatenated. A missing number (NaN) becomes the
    column's training mean before the FeatureSpace sees it; a category training never saw
    falls in the lookup's out-of-vocabulary slot.

    Args:
        text: the text preprocessor.
        features: ``{column: kind}``.
        crosses: ``[[column, column], ...]``.
        state: the adapted FeatureSpace's state, as :meth:`get_config` writes it (restoring
            one without adapting again).
        means: the training mean of each float column.
    """

    takes_text = True
    config_type = "text_table"
    serving_input = "text_table"  # several signature inputs: text and one per column
    tensorboard_extras = ("embeddings",)

    def __init__(self, text: TextPreprocessor, features: dict, crosses=(), state=None,
                 means=None):
        self.text, self.features = text, dict(features)
        self.crosses = [list(cross) for cross in crosses or ()]
        self.means = dict(means or {})
        self.state = state
        self.space = self._space(state)
        self.input_shape = None if state is None else (int(state["width"]),)

    def _space(self, state):
        """The FeatureSpace: fresh (to adapt), or holding ``state`` (adapted before)."""
        crosses = [keras.utils.FeatureSpace.cross(cross, crossing_dim=CROSSING_DIM)
                   for cross in self.crosses]
        if state is None:
            return keras.utils.FeatureSpace(dict(self.features), crosses=crosses,
                                            output_mode="concat",
                                            num_discretization_bins=DISCRETIZATION_BINS)
        space = keras.utils.FeatureSpace
        layers = keras.layers
        built = {}
        for name, kind in self.features.items():
            saved = state["features"].get(name, {})
            if kind == "float_normalized":
                built[name] = space.feature("float32", layers.Normalization(
                    axis=-1, mean=saved["mean"], variance=saved["variance"],
                    name=f"{name}_preprocessor"), "float")
            elif kind == "float_discretized":
                built[name] = space.float_discretized(
                    num_bins=len(saved["bin_boundaries"]) + 1,
                    bin_boundaries=saved["bin_boundaries"], name=name)
            elif kind == "string_categorical":
                built[name] = space.feature("string", layers.StringLookup(
                    vocabulary=saved["vocabulary"], name=f"{name}_preprocessor"), "one_hot")
            elif kind == "integer_categorical":
                built[name] = space.feature("int32", layers.IntegerLookup(
                    vocabulary=saved["vocabulary"], name=f"{name}_preprocessor"), "one_hot")
            else:
                built[name] = kind
        restored = space(built, crosses=crosses, output_mode="concat")
        restored.build_from_config({})  # Keras's own restore step: marks it adapted
        # then what adapt() finishes with: the one-hot encoders built now, eagerly (built
        # later, inside a traced dataset map, a vocabulary's size would be a symbolic tensor),
        # and the layer marked built, as exporting it needs
        restored.get_inputs()
        restored.built = True
        return restored

    @classmethod
    def for_data(cls, config, x) -> TextTablePreprocessor:
        """An unadapted preprocessor as ``config`` sets it up (``data.features``,
        ``data.feature_crosses`` and the text settings)."""
        return cls(TextPreprocessor.for_data(config, x["text"]), config.data.features,
                   config.data.feature_crosses)

    def adapt(self, x, limit: int | None = None) -> None:
        """Adapts the vocabulary on the texts and the FeatureSpace on the columns of the
        training inputs ``x`` (:func:`table_inputs`), or their first ``limit``."""
        x = x[:limit] if limit else x
        self.text.adapt(x["text"])
        self.means = {name: float(np.nanmean(x[name])) if np.isfinite(x[name]).any() else 0.0
                      for name, kind in self.features.items() if kind in FLOAT_KINDS}
        columns = self._columns({name: x[name] for name in self.features})
        self.space.adapt(tf.data.Dataset.from_tensor_slices(columns).batch(1024))
        width = int(self.space(self._columns({name: x[name][:1] for name in self.features}))
                    .shape[-1])
        self.state = {"width": width, "features": self._feature_state()}
        self.input_shape = (width,)

    def _feature_state(self) -> dict:
        """What the adapted FeatureSpace learnt, as plain JSON."""
        state = {}
        for name, kind in self.features.items():
            layer = self.space.preprocessors[name]
            if kind == "float_normalized":
                state[name] = {"mean": np.ravel(layer.adapt_mean).tolist(),
                               "variance": np.ravel(layer.adapt_variance).tolist()}
            elif kind == "float_discretized":
                state[name] = {"bin_boundaries": [float(b) for b in layer.bin_boundaries]}
            elif kind in ("string_categorical", "integer_categorical"):
                vocabulary = layer.get_vocabulary()[1:]  # index 0: the out-of-vocabulary slot
                state[name] = {"vocabulary": [v.item() if hasattr(v, "item") else v
                                              for v in vocabulary]}
        return state

    def _columns(self, raw: dict) -> dict:
        """Raw columns as the FeatureSpace takes them: a missing number (NaN) replaced by the
        training mean; integers as int64."""
        out = {}
        for name, kind in self.features.items():
            value = tf.convert_to_tensor(raw[name])
            if kind in FLOAT_KINDS:
                value = tf.cast(value, tf.float32)
                value = tf.where(tf.math.is_nan(value), self.means.get(name, 0.0), value)
                # training's rule, in the SavedModel too: NaN is missing, infinity refused
                value = tf.debugging.assert_all_finite(
                    value, f"column '{name}' holds an infinite number; send a finite number, "
                    "or NaN (or leave the feature out of a tf.Example) for a missing value")
            elif kind in INTEGER_KINDS:
                value = tf.cast(value, tf.int64)
            out[name] = value
        return out

    def __call__(self, raw: dict) -> dict:
        """``{"text": strings [batch], column: values [batch], ...}`` -> the model's inputs."""
        return {"token_ids": self.text(raw["text"]),
                "table": tf.cast(self.space(self._columns(raw)), tf.float32)}

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    def vocabulary(self) -> list[str]:
        return self.text.vocabulary()

    @property
    def layers(self) -> list:
        """What the export tracks: the vocabulary's and the lookups' tables."""
        return [self.text.layer, self.space]

    def dataset(self, split, batch_size: int, *, training: bool, data) -> tf.data.Dataset:
        """Rows and labels -> batches of ``(model inputs, labels)``: cached raw columns,
        shuffled each epoch when ``training``, preprocessed in a parallel map."""
        columns = {name: _tensor_values(split.x[name]) for name in split.x.dtype.names}
        return array_dataset(columns, split.y, self, batch_size, shuffle=training,
                             seed=data.seed)

    def serving_specs(self) -> dict:
        """The serving signature's inputs: ``text`` and one per column, ``[None]`` each."""
        dtypes = {"text": tf.string, **{
            name: tf.float32 if kind in FLOAT_KINDS else
            tf.int64 if kind in INTEGER_KINDS else tf.string
            for name, kind in self.features.items()}}
        return {name: tf.TensorSpec([None], dtype, name=name) for name, dtype in dtypes.items()}

    def serving_endpoints(self) -> dict:
        """``serving_default``: the raw row, one input per column (a float column's missing
        value: NaN)."""
        return {"serving_default": (self.__call__, [self.serving_specs()])}

    def client_inputs(self, x) -> dict:
        """What a client sends for inputs ``x``: ``{column: values}`` (texts as strings)."""
        return {name: [str(v) for v in x[name]] if name == "text" else x[name].tolist()
                for name in x.dtype.names}

    def export_samples(self, x) -> dict:
        """Rows to check an export with: some rows, then an empty text with missing values
        and an unseen category, and a very long text."""
        rows = x[:16]
        extra = np.empty(2, dtype=x.dtype)
        extra["text"] = ["", "great " * 5000]
        for name, kind in self.features.items():
            extra[name] = [np.nan if kind in FLOAT_KINDS else -1 if kind in INTEGER_KINDS
                           else "a value never seen in training"] * 2
        return self.client_inputs(np.concatenate([rows, extra]))

    def get_config(self) -> dict:
        return {"type": self.config_type, "text": self.text.get_config(),
                "features": self.features, "crosses": self.crosses, "means": self.means,
                "state": self.state}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes ``preprocessor.json``: the text settings and vocabulary, the columns, their
        training means and the FeatureSpace's state (plain JSON)."""
        config = self.get_config()
        config["text"] = {**config["text"], "vocabulary": self.text.vocabulary()}
        write_preprocessor_json(directory, config)

    @classmethod
    def from_config(cls, config: dict) -> TextTablePreprocessor:
        text = TextPreprocessor.from_config(config["text"])
        return cls(text, config["features"], config.get("crosses"), config.get("state"),
                   config.get("means"))


def _tensor_values(values: np.ndarray):
    """A column as ``from_tensor_slices`` takes it (texts and categories as strings)."""
    return text_array(values) if values.dtype == object else values


assert set(FLOAT_KINDS + INTEGER_KINDS) <= set(FEATURE_KINDS)
