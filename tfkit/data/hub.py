"""Pretrained text backbones from keras-hub, with their own tokenizer inside the export.

:class:`HubTextPreprocessor` is the keras-hub preset's ``TextClassifierPreprocessor``
(tokenizer and packer: ``[CLS] text [SEP]``, padding, segment ids) used as a tfkit
preprocessor: in tf.data for training and inside the exported SavedModel, so the served
model takes raw strings like every tfkit export (keras-hub's own exports leave it out).
The run folder keeps a copy of it (``hub_preprocessor/``), so the run does not depend on
the preset folder staying where it was.

keras-hub is an optional dependency: ``pip install tfkit[hub]`` (``keras-hub``, which brings
``tensorflow-text``, whose ops TF Serving's standard builds include).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tensorflow as tf

from tfkit.data.text import RawText, write_preprocessor_json

SAVED_FOLDER = "hub_preprocessor"  # in the run folder: the tokenizer's own preset copy


def import_keras_hub():
    """``keras_hub``, or a clear error naming the extra to install."""
    try:
        import keras_hub
    except ImportError:
        raise ValueError("pretrained text models need keras-hub: pip install 'tfkit[hub]' "
                         "(or pip install keras-hub).") from None
    return keras_hub


def load_hub(kind: str, preset: str, **kwargs):
    """``keras_hub.models.<kind>.from_preset(preset)``, refusing a folder that is not a
    preset and naming what went wrong when a preset cannot be loaded (no network, say).

    Raises:
        ValueError: naming the preset and why.
    """
    keras_hub = import_keras_hub()
    if not preset:
        raise ValueError("model.params.preset is needed: a keras-hub preset name (e.g. "
                         "bert_tiny_en_uncased; needs the network) or a local preset folder.")
    path = Path(preset)
    looks_local = path.exists() or "/" in preset or preset.startswith(".")
    if looks_local and not (path / "config.json").is_file():
        raise ValueError(f"model.params.preset '{preset}' is not a keras-hub preset folder (no "
                         "config.json in it); save one with backbone.save_to_preset(folder) "
                         "and tokenizer.save_to_preset(folder).")
    try:
        return getattr(keras_hub.models, kind).from_preset(preset, **kwargs)
    except Exception as exc:  # keras-hub raises several types (network, file, format)
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        where = "" if looks_local else (" (a preset name is downloaded: without a network, "
                                         "give a local preset folder)")
        raise ValueError(f"model.params.preset '{preset}' cannot be loaded{where}: "
                         f"{reason}") from None


class HubTextPreprocessor(RawText):
    """Raw strings -> the keras-hub backbone's inputs (``token_ids``, ``padding_mask`` and,
    for BERT-like models, ``segment_ids``; ``int32 [batch, sequence_length]``).

    Args:
        preset: the keras-hub preset (name or folder) the tokenizer comes from.
        sequence_length: tokens per text, special tokens included (longer texts are cut).
    """

    takes_text = True
    config_type = "hub_text"
    serving_input = "text"
    tensorboard_extras = ()

    def __init__(self, preset: str, sequence_length: int = 128):
        self.preset, self.sequence_length = str(preset), int(sequence_length)
        self._layer = None

    @property
    def layer(self):
        """The keras-hub ``TextClassifierPreprocessor`` (loaded on first use)."""
        if self._layer is None:
            self._layer = load_hub("TextClassifierPreprocessor", self.preset,
                                   sequence_length=self.sequence_length)
            self._layer(tf.constant([""]))  # builds it: an export needs built layers
        return self._layer

    @classmethod
    def for_data(cls, config, x) -> HubTextPreprocessor:
        """The preprocessor of the preset ``model.params.preset``, ``data.max_len`` tokens."""
        pre = cls(config.model.params.get("preset", ""), config.data.max_len)
        if pre.layer is None:  # loads it: a bad preset fails here, before any run folder
            raise ValueError(f"model.params.preset '{pre.preset}' has no text preprocessor.")
        return pre

    def adapt(self, texts, limit: int | None = None) -> None:
        """Nothing to learn: the vocabulary is the preset's."""

    def __call__(self, texts) -> dict:
        """Strings ``[batch]`` -> ``{input: int32 [batch, sequence_length]}``."""
        features = self.layer(tf.convert_to_tensor(texts, tf.string))
        return {name: tf.cast(value, tf.int32) for name, value in features.items()}

    def get_config(self) -> dict:
        return {"type": self.config_type, "preset": self.preset,
                "sequence_length": self.sequence_length}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the tokenizer as its own preset into ``directory/hub_preprocessor`` and
        ``preprocessor.json`` pointing at it (plain JSON and keras-hub's files, no pickle)."""
        from keras_hub.src.utils.preset_utils import get_file  # the preset's (cached) file

        copy = Path(directory, SAVED_FOLDER).resolve()
        self.layer.save_to_preset(str(copy))
        # the backbone's config names the model family, which loading the tokenizer needs
        shutil.copyfile(get_file(self.preset, "config.json"), copy / "config.json")
        write_preprocessor_json(directory, {**self.get_config(), "preset": str(copy),
                                            "source_preset": self.preset})

    @classmethod
    def from_config(cls, config: dict) -> HubTextPreprocessor:
        return cls(config["preset"], config.get("sequence_length", 128))
