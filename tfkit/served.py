"""A published SavedModel read as TF Serving reads it: :class:`ServedModel` (its
``serving_default`` signature, the input it takes, the labels it answers, called in batches on
raw inputs), :func:`predict`, and loading an export whose ops need TensorFlow Text. What
``tfkit predict``, ``evaluate``, ``explain`` and ``rest`` and the comparison with the served
version read any export through; writing one is :mod:`tfkit.export`.
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfkit.errors import short_reason
from tfkit.export import (
    CLASSIFY_KEY,
    REGRESS_KEY,
    SERVING_KEY,
    api_endpoints,
    export_facts,
    plain_names,
)


def version_folder(path: str | os.PathLike) -> Path:
    """``path`` itself, or its newest version folder when it is ``saved_models/<name>``."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file() and path.is_dir():
        versions = [p for p in path.iterdir() if p.name.isdigit()]
        if versions:
            path = max(versions, key=lambda p: int(p.name))
    return path


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SavedModel version folder or a folder of versions."""
    return (version_folder(path) / "saved_model.pb").is_file()


def load_serving(path: str | os.PathLike):
    """Loads a SavedModel version the way TF Serving does and returns its ``serving_default``.

    ``path`` may be a version folder or ``saved_models/<name>`` (latest version).

    Raises:
        FileNotFoundError: if no SavedModel is there.
    """
    path = version_folder(path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"No SavedModel at '{path}' (expected saved_model.pb, or "
                                "version folders 1/, 2/, ... inside it).")
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        if "Op type not registered" not in str(exc):
            raise ValueError(f"'{path}' cannot be loaded as a SavedModel: {short_reason(exc)}") from None
        loaded = _load_with_text_ops(path, exc)
    if SERVING_KEY not in loaded.signatures:
        raise ValueError(f"'{path}' has no '{SERVING_KEY}' signature (it has: "
                         f"{', '.join(sorted(loaded.signatures)) or 'none'}); tfkit reads that "
                         "one, which every tfkit export has: export the model with tfkit "
                         "(tfkit export RUN_DIR).")
    return loaded, loaded.signatures[SERVING_KEY], path


def _load_with_text_ops(path: Path, error: Exception):
    """A SavedModel whose ops TensorFlow Text registers (a keras-hub tokenizer inside the
    export: ``RegexSplitWithOffsets``, ``WordpieceTokenizeWithOffsets``...), loaded after
    importing it, as TF Serving's builds link those ops in.

    Raises:
        ValueError: naming the op and what to install when TensorFlow Text is missing.
    """
    try:
        import tensorflow_text  # noqa: F401  (registers its ops with TensorFlow)
    except ImportError:
        raise ValueError(f"'{path}' needs TensorFlow Text's ops ({short_reason(error)[:120]}): "
                         "pip install 'tfkit[hub]' (or pip install tensorflow-text).") from None
    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise ValueError(f"'{path}' cannot be loaded as a SavedModel: {short_reason(exc)}") from None


def predict(path: str | os.PathLike, inputs, batch_size: int = 256) -> list[dict]:
    """Runs a SavedModel's ``serving_default`` on raw inputs.

    Args:
        path: a version folder or ``saved_models/<name>`` (latest version).
        inputs: texts for text models; image file paths or encoded bytes for image models.

    Returns:
        One dict per input: ``{"label": str, "probabilities": {label: p}}``; for a
        multi-task model ``{head: that dict}`` per classification head and
        ``{head: value}`` per regression head; for a multi-label model
        ``{"labels": [the labels at or above their thresholds], "probabilities": {...}}``.

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=8)
        >>> pre.adapt(["tasty and fresh", "stale, do not buy"])
        >>> model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size,
        ...                           num_classes=2, buckets=64)
        >>> path = tfkit.export_for_serving(model, pre, ["great", "other"],
        ...                                 "saved_models/demo", samples=["tasty"])
        >>> predict("saved_models/demo", ["Delicious, will buy again"])  # untrained: ~0.5
        [{'label': '...', 'probabilities': {'great': 0.5..., 'other': 0.4...}}]
    """
    return ServedModel(path).predict(inputs, batch_size)


class ServedModel:
    """A published SavedModel as TF Serving loads it: its ``serving_default`` signature, the
    input it takes, the labels it answers, called in batches on raw inputs.

    ``predict``, ``tfkit evaluate saved_models/<name>``, the comparison with the served
    version before publishing, and ``explain`` all read an export through it.

    Args:
        path: a version folder, or ``saved_models/<name>`` (its newest version).

    Attributes:
        version: the version folder.
        signature: its ``serving_default`` concrete function.
        facts: ``assets.extra/tfkit.json`` (``{}`` for an export tfkit did not write).
        input_key: the signature's input: ``text``, ``image_bytes`` or ``sequence``.
        label_names: label names, or ``{head: names}`` (``[]`` for a regression head).
        multi_label: for a multi-label model, ``{"thresholds": [...], "separator": ...}``
            (its outputs: ``probabilities``, ``predicted``, ``labels``); else None.

    Raises:
        FileNotFoundError, ValueError: no SavedModel there, or none with ``serving_default``.

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4); pre.adapt(["tasty", "stale"])
        >>> model = tfkit.build_model("text_gru", vocab_size=pre.vocab_size, num_classes=2)
        >>> served = ServedModel(tfkit.export_for_serving(model, pre, ["yes", "no"], "m", ["tasty"]))
        >>> served.input_key, served.label_names, served(["tasty", "stale"])["label"].shape
        ('text', ['yes', 'no'], (2,))
    """

    def __init__(self, path: str | os.PathLike):
        self.loaded, self.signature, self.version = load_serving(path)
        self.facts = export_facts(self.version) or {}
        self.input_key = self.facts.get("serving_input") or list(
            self.signature.structured_input_signature[1])[0]
        self.label_names = export_label_names(self.loaded, self.version)
        self.multi_label = self.facts.get("multi_label")

    @property
    def multitask(self) -> bool:
        return isinstance(self.label_names, dict)

    @property
    def heads(self) -> dict:
        """``{head: names}``; a single-task model is the one head ``None``."""
        return self.label_names if self.multitask else {None: self.label_names}

    @property
    def several_inputs(self) -> bool:
        """Whether the signature takes several inputs (a text and table columns)."""
        return len(self.signature.structured_input_signature[1]) > 1

    def columns(self, inputs) -> dict:
        """Raw inputs of a signature with several inputs as ``{input: values}``: from a dict
        of columns or a list of rows (dicts), texts as UTF-8.

        Raises:
            ValueError: naming an input the rows lack, or one the signature does not take.
        """
        specs = self.input_specs()
        if not isinstance(inputs, dict):
            rows = list(inputs)
            for number, row in enumerate(rows, 1):
                missing = [name for name in specs if not isinstance(row, dict) or name not in row]
                if missing:
                    raise ValueError(f"input {number} has no {missing[0]!r}: this model takes "
                                     f"{', '.join(specs)} for each input.")
            inputs = {name: [row[name] for row in rows] for name in specs}
        unknown = [name for name in inputs if name not in specs]
        missing = [name for name in specs if name not in inputs]
        if unknown or missing:
            raise ValueError(f"this model takes the inputs {', '.join(specs)}; "
                             + (f"{missing[0]!r} is missing" if missing else
                                f"{unknown[0]!r} is not one of them") + ".")
        return {name: utf8_texts(inputs[name]) if name == "text" else
                _typed(inputs[name], spec.dtype, name) for name, spec in specs.items()}

    def input_specs(self) -> dict:
        """The signature's inputs in the training order (the text, then the table columns as
        ``data.features`` lists them), whatever order the SavedModel keeps them in: request
        bodies and error messages come out the same on every run."""
        specs = self.signature.structured_input_signature[1]
        features = (self.facts.get("preprocessor") or {}).get("features") or {}
        order = ["text", *features]
        return dict(sorted(specs.items(), key=lambda item: (
            order.index(item[0]) if item[0] in order else len(order), item[0])))

    def prepare(self, inputs) -> list:
        """Raw inputs as the signature takes them: texts as UTF-8 (:func:`utf8_texts`);
        images as encoded bytes, or file paths read; sequences as they are."""
        if self.input_key == "text":
            return utf8_texts(inputs)
        if self.input_key == "image_bytes":
            return [x if isinstance(x, bytes) else _read_image(x) for x in inputs]
        return list(inputs)

    def predict(self, inputs, batch_size: int = 256) -> list[dict]:
        """:func:`predict` on this export: one dict per input (``label``, ``probabilities``;
        per head for a multi-task model; ``labels``, a list, for a multi-label model). A
        model of a text and table columns takes rows ``[{"text": ..., "price": ...}, ...]``
        or columns ``{"text": [...], "price": [...]}``."""
        if self.input_key not in ("text", "image_bytes", "text_table"):
            raise ValueError(f"predict takes text or image models; this one takes "
                             f"'{self.input_key}' tensors: call its serving_default signature "
                             "from Python.")
        out, names = self(inputs, batch_size), self.label_names
        rows = range(len(next(iter(out.values()))) if out else 0)
        if self.multi_label:
            return [{"labels": [n for n, hit in zip(names, out["predicted"][row]) if hit],
                     "probabilities": {n: round(float(p), 6)
                                       for n, p in zip(names, out["probabilities"][row])}}
                    for row in rows]
        if not self.multitask:
            return [_class_result(out, row, names) for row in rows]
        return [{head: _class_result(out, row, head_names, f"{head}_") if head_names
                 else round(float(out[head][row]), 6) for head, head_names in names.items()}
                for row in rows]

    def rest_requests(self, inputs) -> dict[str, dict]:
        """The JSON bodies TF Serving's REST API takes for ``inputs``, per method and
        signature: ``{"predict": {"instances": [...]}, "classify": {"signature_name":
        "classification", "examples": [{"text": ...}]}, ...}`` (``classify_<head>`` /
        ``regress_<head>`` for multi-task exports). Bytes (images) are ``{"b64": ...}``, as
        TF Serving's REST API spells binary values.

        Examples:
            >>> pre = tfkit.TextPreprocessor(max_tokens=50, max_len=4); pre.adapt(["tasty"])
            >>> model = tfkit.build_model("text_gru", vocab_size=pre.vocab_size, num_classes=2)
            >>> path = tfkit.export_for_serving(model, pre, ["yes", "no"], "m", ["tasty"])
            >>> ServedModel(path).rest_requests(["Tasty"])["classify"]
            {'signature_name': 'classification', 'examples': [{'text': 'Tasty'}]}
        """
        def value(item):
            if isinstance(item, bytes):
                return {"b64": base64.b64encode(item).decode("ascii")}
            return np.asarray(item).tolist() if not isinstance(item, str) else item

        if self.several_inputs:  # rows: {input: value}, typed as the signature takes them
            columns = self.columns(inputs)
            columns["text"] = [t.decode("utf-8") for t in columns["text"]]
            values = [dict(zip(columns, row)) for row in zip(*columns.values())]  # a missing
            # number stays NaN: TF Serving's JSON parser reads NaN
        else:
            values = [value(item) for item in inputs]
        bodies = {"predict": {"instances": values}}
        feature = self.input_key
        for endpoint in api_endpoints(plain_names(self.label_names)):
            if endpoint not in self.loaded.signatures:  # an export from before these APIs
                continue
            method = "classify" if endpoint.startswith(CLASSIFY_KEY) else "regress"
            key = method + endpoint[len(CLASSIFY_KEY if method == "classify" else REGRESS_KEY):]
            bodies[key] = {"signature_name": endpoint,
                           "examples": [item if self.several_inputs else {feature: item}
                                        for item in values]}
        return bodies

    def __call__(self, inputs, batch_size: int = 256) -> dict[str, np.ndarray]:
        """The signature's outputs for ``inputs`` (:meth:`prepare`), ``batch_size`` a call,
        as ``{output: array}`` with one row per input."""
        specs = self.signature.structured_input_signature[1]
        feeds = self.columns(inputs) if self.several_inputs else \
            {self.input_key: self.prepare(inputs)}
        rows = len(next(iter(feeds.values())))
        batches = [self.signature(**{name: tf.constant(values[i:i + batch_size], specs[name].dtype)
                                     for name, values in feeds.items()})
                   for i in range(0, rows, batch_size)]
        if not batches:
            return {}
        return {key: np.concatenate([batch[key].numpy() for batch in batches]) for key in batches[0]}


def _typed(values, dtype: tf.DType, name: str) -> list:
    """A column's values as the signature's ``dtype`` takes them; strings read from a file
    (``"1999"``, ``""`` for a missing number: NaN, or -1 for an integer)."""
    if dtype == tf.string:
        return ["" if v is None else v if isinstance(v, bytes) else str(v) for v in values]
    out = []
    for number, value in enumerate(values, 1):
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(float("nan") if dtype.is_floating else -1)
            continue
        try:
            parsed = float(value) if dtype.is_floating else int(str(value).strip())
        except (TypeError, ValueError):
            parsed = None
        # training's rule (tfkit.data.table): a missing value is empty (or NaN), any other
        # value a finite number, an integer within int64
        if parsed is None or (dtype.is_floating and math.isinf(parsed)) or (
                not dtype.is_floating and not -2**63 <= parsed < 2**63):
            kind = "a finite number" if dtype.is_floating else "an integer within int64"
            raise ValueError(f"input {number}: {name!r} is {str(value)[:40]!r}, not {kind} "
                             "(leave it empty for a missing value).") from None
        out.append(parsed)
    return out


def utf8_texts(texts) -> list[bytes]:
    """Texts as the UTF-8 bytes a ``text`` signature takes.

    Raises:
        ValueError: naming the first input that is not valid text (a command-line argument
            with bytes that are not UTF-8 arrives as a string with lone surrogates).
    """
    out = []
    for number, text in enumerate(texts, 1):
        if isinstance(text, bytes):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"input {number} is not valid UTF-8: byte 0x{text[exc.start]:02x} "
                                 f"at byte {exc.start + 1}.") from None
            out.append(text)
            continue
        text = str(text)
        try:
            out.append(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            bad = ord(text[exc.start])
            what = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
            raise ValueError(f"input {number} is not valid UTF-8 text: {what} at character "
                             f"{exc.start + 1}; give text in UTF-8 (or a file with "
                             "--input and its --encoding).") from None
    return out


def _class_result(out, row, names, prefix=""):
    return {"label": out[f"{prefix}label"][row].decode(),
            "probabilities": {n: round(float(p), 6)
                              for n, p in zip(names, out[f"{prefix}probabilities"][row])}}


def export_label_names(loaded, version: Path):
    """Label names of an export: the ``label_names`` variable, or for multi-task exports the
    ``{head: names}`` dict in ``assets.extra/tfkit.json``."""
    if hasattr(loaded, "label_names"):
        return [n.decode() for n in loaded.label_names[0].numpy()]
    facts = export_facts(version)
    if facts is None:
        raise FileNotFoundError(f"'{version}' has no label names (not a tfkit export?).")
    return facts["label_names"]


def _read_image(path) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image file '{path}' does not exist.")
    return file.read_bytes()
