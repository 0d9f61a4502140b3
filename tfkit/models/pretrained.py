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


# keras.applications backbones: name -> (what scales 0..255 pixels for it: None when the
# backbone does it itself with include_preprocessing, else (scale, offset) of a Rescaling)
IMAGE_BACKBONES = {
    "MobileNetV3Small": None, "MobileNetV3Large": None,
    "EfficientNetV2B0": None, "EfficientNetV2B1": None, "EfficientNetV2S": None,
    "ResNet50V2": (1 / 127.5, -1.0), "ResNet101V2": (1 / 127.5, -1.0),
}
SMALLEST_SIDE = 32  # images are resized up to this inside the model (the backbones' minimum)


def build_image_backbone(*, input_shape, num_classes: int, backbone: str = "MobileNetV3Small",
                         weights: str = "", backbone_params: dict | None = None,
                         dropout: float = 0.2, name: str = "image_backbone") -> keras.Model:
    """A ``keras.applications`` backbone (ImageNet-pretrained with ``weights``), frozen, with
    a classifier on top: pixels 0..255 in, grey images repeated to RGB, images smaller than
    :data:`SMALLEST_SIDE` resized up, the backbone's own input scaling, its global average
    pooling, dropout, then ``Dense(num_classes, softmax)`` named ``probabilities``.

    The backbone (the nested model, :func:`backbone_of`) starts frozen (its
    BatchNormalization in inference mode throughout, as Keras's transfer-learning guide
    advises); the usual second stage unfreezes its top layers at a lower learning rate:
    ``train.fine_tune_epochs``.

    Args:
        input_shape: ``(height, width, channels)`` of the images.
        num_classes: number of labels (>= 2).
        backbone: one of :data:`IMAGE_BACKBONES` (``keras.applications`` class names).
        weights: ``"imagenet"`` (downloaded by Keras: needs the network), a local weights
            file of the backbone without its top (``.weights.h5`` or Keras's ``.h5``), or
            ``""`` for random weights.
        backbone_params: more arguments of the backbone's constructor (``alpha``,
            ``minimalistic`` for MobileNetV3).
        dropout: dropout before the softmax.
        name: model name.

    Returns:
        A functional ``keras.Model`` from ``[batch, h, w, c]`` (0..255) to
        ``[batch, num_classes]``.

    Raises:
        ValueError: for an unknown backbone, or weights that cannot be read.

    Examples:
        >>> model = build_image_backbone(input_shape=(8, 8, 1), num_classes=3,
        ...                              backbone_params={"alpha": 0.75, "minimalistic": True})
        >>> model(np.zeros((2, 8, 8, 1))).shape, backbone_of(model).trainable
        (TensorShape([2, 3]), False)
    """
    from pathlib import Path

    if backbone not in IMAGE_BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(IMAGE_BACKBONES)}. "
                         f"Received: backbone={backbone!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels). Received: {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    if weights and weights != "imagenet" and not Path(weights).is_file():
        raise ValueError(f"weights '{weights}' is not a file: give a weights file of the "
                         f"{backbone} backbone without its top, 'imagenet' (downloaded), or "
                         "'' (random).")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = images
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    height, width = input_shape[0], input_shape[1]
    if min(height, width) < SMALLEST_SIDE:
        x = layers.Resizing(max(height, SMALLEST_SIDE), max(width, SMALLEST_SIDE),
                            name="resize")(x)
    scaling = IMAGE_BACKBONES[backbone]
    if scaling:
        x = layers.Rescaling(scaling[0], offset=scaling[1], name="backbone_scaling")(x)
    settings = dict(backbone_params or {})
    if scaling is None:
        settings.setdefault("include_preprocessing", True)
    try:
        base = getattr(keras.applications, backbone)(
            include_top=False, weights=weights or None, input_shape=tuple(x.shape[1:]),
            pooling="avg", **settings)
    except (ValueError, OSError) as exc:
        raise ValueError(f"the {backbone} backbone with weights {weights or 'random'!r}: "
                         f"{str(exc).splitlines()[0][:300]}") from None
    base.trainable = False
    x = base(x, training=False)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           name="probabilities")(x)
    return keras.Model(images, outputs, name=name)


def backbone_of(model: keras.Model) -> keras.Model:
    """The pretrained backbone inside ``model``: its one nested model (``image_backbone``'s
    ``keras.applications`` model, ``hub_text``'s keras-hub backbone).

    Raises:
        ValueError: when the model has no nested model, or several.
    """
    found = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(found) != 1:
        raise ValueError(f"model '{model.name}' has {len(found) or 'no'} nested backbone "
                         "model(s); fine-tuning unfreezes the one backbone of image_backbone "
                         "and hub_text models.")
    return found[0]


def unfreeze(model: keras.Model, layers_count: int) -> int:
    """Makes the top ``layers_count`` layers of the model's backbone (:func:`backbone_of`)
    trainable (-1: all), BatchNormalization layers excepted (they stay in inference mode);
    returns how many layers with weights became trainable.

    Raises:
        ValueError: when the model has no backbone.
    """
    base = backbone_of(model)
    base.trainable = True
    chosen = base.layers if layers_count < 0 else base.layers[-layers_count:] if layers_count else []
    for layer in base.layers:
        layer.trainable = layer in chosen and not isinstance(layer, layers.BatchNormalization)
    return sum(1 for layer in chosen if layer.trainable and layer.weights)
