"""End-to-end models over numeric inputs: the end-to-end article's CNN and LSTM.

``image_cnn`` takes pixel values 0..255 ``[batch, h, w, c]`` and rescales them itself;
``sequence_lstm`` takes numeric sequences ``[batch, steps, features]``.
"""

from __future__ import annotations

import keras
from keras import layers

from tfkit.models.text import classifier_head, recurrent_layer


def build_image_cnn(*, input_shape, num_classes: int, filters=(32, 64), kernel_size: int = 3,
                    dense_units: int = 128, batch_norm: bool = False, dropout: float = 0.0,
                    augment: bool = False, rotation: float = 0.05, zoom: float = 0.1,
                    flip: bool = False, rescale: float = 1.0 / 255) -> keras.Model:
    """The article's conv -> pool -> conv -> pool -> dense -> dense, for any image size.

    One block per entry of ``filters``: Conv2D (same padding) [-> BatchNorm] -> ReLU ->
    MaxPool (skipped once the feature map is 1 pixel wide, so tiny images work). The
    flatten size follows from the input shape (nothing hard-coded like the article's 7x7x64).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of labels (>= 2).
        filters: feature maps per block (seed: 32, 64).
        kernel_size: convolution size (seed: 3).
        dense_units: hidden dense layer size (seed: 128).
        batch_norm: BatchNormalization after each convolution.
        dropout: dropout before the softmax.
        augment: random rotation/zoom (and ``flip``) layers, active only in training:
            ``fit`` and ``predict`` handle that, but like every Keras 3 augmentation
            layer they are active in a bare ``model(x)`` call; use ``model(x, training=False)``.
        rotation, zoom, flip: augmentation strengths.
        rescale: multiplies pixel values inside the model (1/255 maps 0..255 to 0..1).

    Returns:
        A functional ``keras.Model`` from ``[batch, h, w, c]`` to ``[batch, num_classes]``.

    Examples:
        >>> model = build_image_cnn(input_shape=(8, 8, 1), num_classes=10, filters=(4, 8))
        >>> model(np.zeros((2, 8, 8, 1))).shape
        TensorShape([2, 10])
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels). Received: {input_shape}")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Rescaling(rescale, name="rescale")(images)
    if augment:
        if flip:
            x = layers.RandomFlip("horizontal", name="random_flip")(x)
        x = layers.RandomRotation(rotation, name="random_rotation")(x)
        x = layers.RandomZoom(zoom, name="random_zoom")(x)
    size = min(input_shape[0], input_shape[1])
    for block, count in enumerate(filters, start=1):
        x = layers.Conv2D(count, kernel_size, padding="same", use_bias=not batch_norm,
                          name=f"conv_{block}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"batch_norm_{block}")(x)
        x = layers.Activation("relu", name=f"relu_{block}")(x)
        if size >= 2:
            x = layers.MaxPooling2D(2, name=f"pool_{block}")(x)
            size //= 2
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return keras.Model(images, classifier_head(x, num_classes, dropout), name="image_cnn")


def build_sequence_lstm(*, input_shape, num_classes: int, hidden_size: int = 128,
                        num_layers: int = 2, dropout: float = 0.0,
                        rescale: float = 1.0) -> keras.Model:
    """The article's ``RNN(input_size, hidden_size, num_layers, output_size)`` in Keras.

    ``num_layers`` stacked LSTMs over ``[batch, steps, features]`` (``input_size`` is the
    feature count), the last time step's state -> Dense(``num_classes``) softmax.

    Args:
        input_shape: ``(steps, features)``.
        num_classes: number of labels (the article's ``output_size``).
        hidden_size: LSTM units per layer.
        num_layers: stacked LSTM layers.
        dropout: input dropout of each LSTM.
        rescale: multiplies the inputs first (1/255 for pixel rows).

    Examples:
        >>> model = build_sequence_lstm(input_shape=(8, 8), num_classes=10, hidden_size=4)
        >>> model(np.zeros((2, 8, 8))).shape
        TensorShape([2, 10])
    """
    if len(input_shape) != 2:
        raise ValueError(f"input_shape must be (steps, features). Received: {input_shape}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1. Received: num_layers={num_layers}")
    sequence = keras.Input(shape=tuple(input_shape), name="sequence")
    x = layers.Rescaling(rescale, name="rescale")(sequence)
    for depth in range(num_layers):
        x = recurrent_layer("lstm", hidden_size, return_sequences=depth < num_layers - 1,
                            dropout=dropout, name=f"lstm_{depth + 1}")(x)
    return keras.Model(sequence, classifier_head(x, num_classes), name="sequence_lstm")
