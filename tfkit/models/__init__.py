"""Model builders and the registry that names them.

A builder is a plain function: keyword arguments in, ``keras.Model`` out. The
registry is a plain dict, ``name -> Entry(builder, inputs)``, where ``inputs`` says
which preprocessor feeds the model:

- ``tokens``: right-padded token ids ``int32 [batch, length]`` (TextPreprocessor)
- ``documents``: ids ``int32 [batch, sentences, words]`` (HierarchicalTextPreprocessor)
- ``image``: pixel values 0..255 ``[batch, h, w, c]`` (ImagePreprocessor)
- ``sequence``: numbers ``[batch, steps, features]`` (SequencePreprocessor)
- ``encoder``: whatever the text builder named by its ``encoder`` argument takes

Adding a model: write ``build_<name>`` in a family module and add one line below.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import keras

from tfkit.models.hierarchical import build_han
from tfkit.models.layers import (
    AttentionPooling,
    FoldSentences,
    HashedNgrams,
    PaddingMask,
    UnfoldSentences,
)
from tfkit.models.multitask import build_multitask
from tfkit.models.text import (
    build_stacked_lstm,
    build_text_bilstm,
    build_text_cnn,
    build_text_fasttext,
    build_text_gru,
    build_text_lstm,
)
from tfkit.models.vision import build_image_cnn, build_sequence_lstm

TEXT_INPUTS = ("tokens", "documents")  # the input kinds a text preprocessor feeds


@dataclass(frozen=True)
class Entry:
    builder: Callable[..., keras.Model]
    inputs: str  # which preprocessor feeds it: tokens, documents, image or sequence


MODELS: dict[str, Entry] = {
    "text_lstm": Entry(build_text_lstm, "tokens"),
    "text_bilstm": Entry(build_text_bilstm, "tokens"),
    "text_gru": Entry(build_text_gru, "tokens"),
    "text_cnn": Entry(build_text_cnn, "tokens"),
    "text_fasttext": Entry(build_text_fasttext, "tokens"),
    "stacked_lstm": Entry(build_stacked_lstm, "tokens"),
    "han": Entry(build_han, "documents"),
    "multitask": Entry(build_multitask, "encoder"),
    "image_cnn": Entry(build_image_cnn, "image"),
    "sequence_lstm": Entry(build_sequence_lstm, "sequence"),
}

# Arguments that come from the data (vocabulary, label set, input shape), never from the config.
DATA_ARGS = ("vocab_size", "num_classes", "input_shape", "heads")


def get_entry(name: str) -> Entry:
    """Returns the registry entry for ``name``.

    Raises:
        ValueError: naming the unknown model and the closest registered one.
    """
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown model '{name}'.{hint} Registered: {', '.join(MODELS)}.")
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
    signature = inspect.signature(get_entry(name).builder)
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


def build_model(name: str, **kwargs) -> keras.Model:
    """Calls the registered builder ``name`` with the keyword arguments it accepts.

    Data arguments the builder does not take (say ``vocab_size`` for an image model)
    are dropped, so callers can pass everything they know.

    Examples:
        >>> build_model("text_gru", vocab_size=50, num_classes=2, units=4).name
        'text_gru'
    """
    builder = get_entry(name).builder
    accepted = inspect.signature(builder).parameters
    data = {k: v for k, v in kwargs.items() if k in DATA_ARGS and k in accepted}
    params = {k: v for k, v in kwargs.items() if k not in DATA_ARGS}
    check_model_params(name, params)
    return builder(**data, **params)


__all__ = ["MODELS", "Entry", "AttentionPooling", "FoldSentences", "HashedNgrams", "PaddingMask",
           "TEXT_INPUTS", "UnfoldSentences", "build_han", "build_model", "build_multitask", "model_inputs",
           "check_model_params", "get_entry", "model_params", "build_stacked_lstm",
           "build_text_bilstm", "build_text_cnn", "build_text_fasttext", "build_text_gru", "build_text_lstm",
           "build_image_cnn", "build_sequence_lstm"]
