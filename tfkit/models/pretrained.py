"""Pretrained backbones fine-tuned as classifiers: keras-hub text models (BERT, DistilBERT,
RoBERTa... presets)."""

from __future__ import annotations

import keras
from keras import layers


def build_hub_text(*, num_classes: int, preset: str = "", dropout: float = 0.1,
                   trainable: bool = True, name: str = "hub_text") -> keras.Model:
    """A keras-hub text backbone from ``preset`` (its pretrained weights) with a classifier
    on top: the backbone's pooled output (BERT-like models) or its first token's output
    (``[CLS]``), dropout, then ``Dense(num_classes, softmax)`` named ``probabilities``.
    The tokenizer comes from the same preset (:class:`tfkit.data.HubTextPreprocessor`).

    Args:
        num_classes: number of labels (>= 2).
        preset: a keras-hub preset name (``bert_tiny_en_uncased``, ``distil_bert_base_en``...;
            downloaded, needs the network) or a local preset folder.
        dropout: dropout before the softmax.
        trainable: fine-tune the backbone (False: train the head only).
        name: model name.

    Returns:
        A functional ``keras.Model`` from the backbone's inputs (``token_ids``,
        ``padding_mask``, ...: ``int32 [batch, length]``) to ``[batch, num_classes]``.

    Raises:
        ValueError: for a preset that cannot be loaded or a folder that is not a preset.

    Examples:
        >>> build_hub_text(num_classes=2, preset="no/such/folder")
        Traceback (most recent call last):
        ...
        ValueError: model.params.preset 'no/such/folder' is not a keras-hub preset folder ...
    """
    from tfkit.data.hub import load_hub

    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    backbone = load_hub("Backbone", preset)
    backbone.trainable = trainable
    inputs = {key: keras.Input(shape=(None,), dtype="int32", name=key)
              for key in backbone.input}
    outputs = backbone(inputs)
    if isinstance(outputs, dict) and "pooled_output" in outputs:
        features = outputs["pooled_output"]
    else:
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        features = sequence[:, 0, :]  # the first token's ([CLS]) output
    features = layers.Dropout(dropout, name="head_dropout")(features)
    probabilities = layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="probabilities")(features)
    return keras.Model(inputs, probabilities, name=name)
