"""Model builders and the registry that names them.

A builder is a plain function: keyword arguments in, ``keras.Model`` out. The
registry is a plain dict, ``name -> Entry(builder, inputs)``, where ``inputs`` says
which preprocessor feeds the model:

- ``tokens``: right-padded token ids ``int32 [batch, length]`` (TextPreprocessor)
- ``documents``: ids ``int32 [batch, sentences, words]`` (HierarchicalTextPreprocessor)
- ``image``: pixel values 0..255 ``[batch, h, w, c]`` (ImagePreprocessor)
- ``sequence``: numbers ``[batch, steps, features]`` (SequencePreprocessor)
- ``text_table``: ``{"token_ids": ids, "table": float32 [batch, features]}``, a text and
  table columns (TextTablePreprocessor, with ``keras.utils.FeatureSpace``)
- ``tfidf``: TF-IDF weights ``float32 [batch, terms]`` of words and n-grams
  (TfidfPreprocessor)
- ``hub_text``: a keras-hub backbone's inputs (``token_ids``, ``padding_mask``...), from its
  preset's tokenizer (HubTextPreprocessor)
- ``encoder``: whatever the text builder named by its ``encoder`` argument takes

Adding a model to tfkit: write ``build_<name>`` in a family module and add one line below.
Your own model, without editing tfkit: in Python, ``MODELS["my_model"] = Entry(builder,
"tokens")``; for the command line too, an installed package declares the ``Entry`` as an
entry point in the group ``tfkit.models`` (:data:`ENTRY_POINTS`), loaded when its name is
first looked up (built-in names win).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tfkit.data.kinds import INPUT_KINDS

# the input kinds: tfkit.data.INPUT_KINDS (kind -> preprocessor), plus "encoder" for wrappers
INPUTS = (*INPUT_KINDS, "encoder")
# Arguments that come from the data (vocabulary, label set, input shape), never from the config.
DATA_ARGS = ("vocab_size", "num_classes", "input_shape", "heads")
ENTRY_POINTS = "tfkit.models"  # the entry-point group through which packages add models


@dataclass(frozen=True)
class Entry:
    """A registered model: its builder and which preprocessor feeds it.

    Args:
        builder: keyword arguments in, ``keras.Model`` out; or ``"module:function"``, which
            is imported when the model is first built (tfkit's own builders: listing them
            and checking a config reads their signatures from the source, without importing
            Keras). It takes ``num_classes`` (or ``heads``) and whichever of ``vocab_size`` /
            ``input_shape`` its input needs from the data; every other argument is
            keyword-only with a default (the config's ``model.params``).
        inputs: one of :data:`INPUTS` (``tokens``, ``tfidf``, ``image``...).

    Raises:
        ValueError: naming the argument or value that breaks those rules.

    Examples:
        >>> def build_tiny(*, vocab_size, num_classes, units=8):
        ...     return keras.Sequential([keras.layers.Embedding(vocab_size, units),
        ...                              keras.layers.GlobalAveragePooling1D(),
        ...                              keras.layers.Dense(num_classes, activation="softmax")])
        >>> MODELS["tiny"] = Entry(build_tiny, "tokens")
        >>> model_params("tiny")
        {'units': 8}
        >>> Entry(build_tiny, "text")
        Traceback (most recent call last):
        ValueError: Entry(build_tiny, inputs='text'): inputs must be one of tokens, documents, image, sequence, text_table, hub_text, tfidf, encoder.
    """

    builder: Callable | str
    inputs: str

    def __post_init__(self):
        name = self.name
        where = f"Entry({name}, inputs={self.inputs!r})"
        if self.inputs not in INPUTS:
            raise ValueError(f"{where}: inputs must be one of {', '.join(INPUTS)}.")
        named = isinstance(self.builder, str) and re.fullmatch(r"[\w.]+:\w+", self.builder)
        if not (callable(self.builder) or named):
            raise ValueError(f"{where}: the builder must be a function returning a keras.Model "
                             "(or its 'module:function' name).")
        parameters = self.signature().parameters.values()
        if not {"num_classes", "heads"} & {p.name for p in parameters}:
            raise ValueError(f"{where}: the builder must take num_classes (or heads), "
                             "which tfkit sets from the data.")
        for p in parameters:
            if p.name in DATA_ARGS or p.kind is p.VAR_KEYWORD:
                continue
            if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
                raise ValueError(f"{where}: argument '{p.name}' must be keyword-only with a "
                                 f"default (def {name}(*, ..., {p.name}=...)), "
                                 "so that model.params can set it.")

    @property
    def name(self) -> str:
        if isinstance(self.builder, str):
            return self.builder.rpartition(":")[2]
        return getattr(self.builder, "__name__", repr(self.builder))  # a partial has none

    def load(self) -> Callable:
        """The builder function (imported, for a ``"module:function"`` builder)."""
        if not isinstance(self.builder, str):
            return self.builder
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def signature(self) -> inspect.Signature:
        if isinstance(self.builder, str):
            return _source_function(self.builder)[0]
        return inspect.signature(self.builder)

    def summary(self) -> str:
        """The first line of the builder's docstring."""
        doc = _source_function(self.builder)[1] if isinstance(self.builder, str) else (
            self.builder.__doc__ or "")
        return next(iter(doc.strip().splitlines()), "")


@cache
def _source_function(path: str) -> tuple[inspect.Signature, str]:
    """The signature and docstring of ``"module:function"``, read from the module's source
    without importing it (its defaults must be literals)."""
    module, name = path.split(":")
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    node = next((n for n in ast.parse(source).body
                 if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise ValueError(f"builder '{path}': no function {name} in module {module}.")
    a, kinds = node.args, inspect.Parameter

    def param(arg, kind, default=None):
        return kinds(arg.arg, kind, default=kinds.empty if default is None else _literal(default))

    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [param(arg, kinds.POSITIONAL_ONLY if arg in a.posonlyargs else
                    kinds.POSITIONAL_OR_KEYWORD, default) for arg, default in zip(positional, defaults)]
    params += [param(a.vararg, kinds.VAR_POSITIONAL)] if a.vararg else []
    params += [param(arg, kinds.KEYWORD_ONLY, default)
               for arg, default in zip(a.kwonlyargs, a.kw_defaults)]
    params += [param(a.kwarg, kinds.VAR_KEYWORD)] if a.kwarg else []
    return inspect.Signature(params), ast.get_docstring(node) or ""


def _literal(node: ast.expr):
    """A default's value: a literal, or arithmetic on literals (``1.0 / 255``)."""
    arithmetic = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Tuple,
                  ast.List, ast.Load)
    if not all(isinstance(n, arithmetic) for n in ast.walk(node)):
        raise ValueError(f"a builder default must be a literal, got '{ast.unparse(node)}'.")
    return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})


MODELS: dict[str, Entry] = {
    "text_lstm": Entry("tfkit.models.text:build_text_lstm", "tokens"),
    "text_bilstm": Entry("tfkit.models.text:build_text_bilstm", "tokens"),
    "text_gru": Entry("tfkit.models.text:build_text_gru", "tokens"),
    "text_cnn": Entry("tfkit.models.text:build_text_cnn", "tokens"),
    "text_fasttext": Entry("tfkit.models.text:build_text_fasttext", "tokens"),
    "text_linear": Entry("tfkit.models.linear:build_text_linear", "tfidf"),
    "text_transformer": Entry("tfkit.models.text:build_text_transformer", "tokens"),
    "stacked_lstm": Entry("tfkit.models.text:build_stacked_lstm", "tokens"),
    "han": Entry("tfkit.models.hierarchical:build_han", "documents"),
    "multitask": Entry("tfkit.models.multitask:build_multitask", "encoder"),
    "text_table": Entry("tfkit.models.tabular:build_text_table", "text_table"),
    "hub_text": Entry("tfkit.models.pretrained:build_hub_text", "hub_text"),
    "image_backbone": Entry("tfkit.models.pretrained:build_image_backbone", "image"),
    "image_cnn": Entry("tfkit.models.vision:build_image_cnn", "image"),
    "sequence_lstm": Entry("tfkit.models.vision:build_sequence_lstm", "sequence"),
}

# the builders and layers by name, imported on first use (PEP 562): importing the registry
# does not import Keras
_LAZY = {
    **{entry.name: entry.builder for entry in MODELS.values()},
    **{name: f"tfkit.models.layers:{name}" for name in (
        "AttentionPooling", "FoldSentences", "HashedNgrams", "KeyMask", "PaddingMask",
        "SinePositions", "UnfoldSentences")},
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfkit.models' has no attribute {name!r}")
    module, attribute = _LAZY[name].split(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def load_plugins(name: str | None = None) -> dict[str, Entry]:
    """Adds to :data:`MODELS` the models installed packages declare in the entry-point group
    ``tfkit.models`` (all of them, or only ``name``); names already registered are kept.

    Raises:
        ValueError: if an entry point fails to load or is not an :class:`Entry`, naming it
            and its package.
    """
    for point in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if point.name in MODELS or name not in (None, point.name):
            continue
        where = (f"model '{point.name}' = '{point.value}' (entry point group {ENTRY_POINTS}, "
                 f"package {point.dist.name if point.dist else '?'})")
        try:
            entry = point.load()
        except Exception as exc:
            raise ValueError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
        if not isinstance(entry, Entry):
            raise ValueError(f"{where} must be a tfkit.models.Entry(builder, inputs). "
                             f"Received: {entry!r}")
        MODELS[point.name] = entry
    return MODELS


def get_entry(name: str) -> Entry:
    """Returns the registry entry for ``name`` (a built-in, one added to :data:`MODELS`, or
    an installed package's entry point, see :func:`load_plugins`).

    Raises:
        ValueError: naming the unknown model and the closest registered one.
    """
    if name not in MODELS:
        load_plugins(name)
    if name not in MODELS:
        names = list(MODELS) + [p.name for p in importlib.metadata.entry_points(group=ENTRY_POINTS)
                                if p.name not in MODELS]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown model '{name}'.{hint} Registered: {', '.join(names)}.")
    return MODELS[name]


def model_inputs(name: str, params: dict) -> str:
    """What feeds model ``name`` built with ``params``: tokens, documents, image or sequence."""
    inputs = get_entry(name).inputs
    if inputs == "encoder":
        encoder = params.get("encoder", model_params(name)["encoder"])
        return get_entry(encoder).inputs
    return inputs


def model_params(name: str) -> dict[str, object]:
    """Returns the user-settable keyword arguments of a builder and their defaults."""
    signature = get_entry(name).signature()
    return {p.name: p.default for p in signature.parameters.values()
            if p.name not in DATA_ARGS and p.kind is p.KEYWORD_ONLY}


def check_model_params(name: str, params: dict) -> None:
    """Checks ``model.params`` against the builder's signature.

    Raises:
        ValueError: for an unknown model, an unknown argument (with the closest valid
            one) or an argument that the data decides (``vocab_size``, ``num_classes``).
    """
    valid = model_params(name)
    for key in params:
        if key in DATA_ARGS:
            raise ValueError(f"model.params.{key} is set from the data and cannot be configured.")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"Unknown argument model.params.{key} for model '{name}'.{hint} "
                             f"Valid: {', '.join(sorted(valid))}.")
    if "encoder_params" in valid:  # a wrapper (multitask): check what it passes on, too
        encoder = params.get("encoder", valid.get("encoder"))
        try:
            check_model_params(encoder, params.get("encoder_params") or {})
        except ValueError as exc:
            raise ValueError(str(exc).replace("model.params.", "model.params.encoder_params.")
                             .replace("Unknown model", "Unknown model.params.encoder")) from None


def build_model(name: str, *, multi_label: bool = False, **kwargs):
    """Calls the registered builder ``name`` with the keyword arguments it accepts.

    Data arguments the builder does not take (say ``vocab_size`` for an image model)
    are dropped, so callers can pass everything they know. ``multi_label``: several labels
    per example, the builder's softmax output replaced by sigmoids (:func:`sigmoid_outputs`).

    Examples:
        >>> build_model("text_gru", vocab_size=50, num_classes=2, units=4).name
        'text_gru'
        >>> build_model("text_cnn", vocab_size=50, num_classes=5, multi_label=True,
        ...             filters=4).get_layer("probabilities").activation.__name__
        'sigmoid'
    """
    builder = get_entry(name).load()
    accepted = inspect.signature(builder).parameters
    data = {k: v for k, v in kwargs.items() if k in DATA_ARGS and k in accepted}
    params = {k: v for k, v in kwargs.items() if k not in DATA_ARGS}
    check_model_params(name, params)
    model = builder(**data, **params)
    return sigmoid_outputs(model, name) if multi_label else model


def sigmoid_outputs(model, name: str = "the model"):
    """The same model with its softmax output layer (named ``probabilities``, as tfkit's
    builders name it) replaced by a ``Dense`` layer of the same size with one sigmoid per
    label: independent probabilities for multi-label data (trained with binary
    cross-entropy).

    Raises:
        ValueError: when the model has no ``Dense`` layer named ``probabilities`` as its output.
    """
    import keras

    try:
        layer = model.get_layer("probabilities")
    except ValueError:
        layer = None
    if not isinstance(layer, keras.layers.Dense) or layer.output is not model.outputs[0]:
        raise ValueError(f"multi-label data needs {name}'s output to be a Dense layer named "
                         "'probabilities' (as tfkit's builders make it).")
    settings = {**layer.get_config(), "activation": "sigmoid"}
    outputs = keras.layers.Dense.from_config(settings)(layer.input)
    return keras.Model(model.input, outputs, name=model.name)


__all__ = ["MODELS", "Entry", "ENTRY_POINTS", "INPUTS", "load_plugins", "AttentionPooling", "FoldSentences", "HashedNgrams", "KeyMask", "PaddingMask",
           "SinePositions", "UnfoldSentences", "build_han", "build_model", "build_multitask", "sigmoid_outputs", "model_inputs",
           "check_model_params", "get_entry", "model_params", "build_stacked_lstm",
           "build_text_bilstm", "build_text_cnn", "build_text_fasttext", "build_text_gru", "build_text_linear", "build_text_lstm",
           "build_text_transformer", "build_text_table", "build_hub_text", "build_image_backbone", "build_image_cnn", "build_sequence_lstm"]
