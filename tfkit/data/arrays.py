"""Preprocessors and tf.data pipelines for numeric inputs: images and sequences.

Images travel as pixel values 0..255 (``[batch, height, width, channels]``); models
rescale them themselves (a ``Rescaling`` layer), so the exported model and the Keras
model see the same numbers. The exported ``serving_default`` takes encoded image bytes
(PNG, JPEG, GIF, BMP), decodes and resizes them in the graph exactly as training did.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfkit.data.pipeline import array_dataset
from tfkit.data.text import write_preprocessor_json

AUTOTUNE = tf.data.AUTOTUNE

# leading bytes of the formats tf.io.decode_image reads
_MAGIC = {"PNG": b"\x89PNG", "JPEG": b"\xff\xd8\xff", "GIF": b"GIF8", "BMP": b"BM"}
# byte -> how an error message quotes it: printable ASCII as itself, anything else as \xNN
# (a list, made a tensor in the graph: a tensor made at import would start TensorFlow's
# runtime before a multi-worker strategy can configure its collectives)
_PRINTABLE = [chr(i) if 32 <= i < 127 and i != 92 else f"\\x{i:02x}" for i in range(256)]
DEFAULT_MAX_PIXELS = 50_000_000  # export.max_image_pixels


def image_header_size(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(height, width)``, int64, of one encoded PNG, JPEG, GIF or BMP image, read from its
    header without decoding the pixels (JPEG: ``tf.image.extract_jpeg_shape``; the others:
    the fields at fixed offsets of their headers)."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(
        tf.strings.join([tf.strings.substr(data, 0, 32), "\0" * 32]), 0, 32), tf.uint8), tf.int64)

    def big_endian(start, count):
        return tf.reduce_sum(raw[start:start + count] * 256 ** tf.range(count - 1, -1, -1,
                                                                          dtype=tf.int64))

    def little_endian(start, count):
        return tf.reduce_sum(raw[start:start + count] * 256 ** tf.range(count, dtype=tf.int64))

    def bmp():  # int32 fields; a negative height means rows stored top-down
        signed = [tf.where(v >= 2 ** 31, v - 2 ** 32, v) for v in (little_endian(22, 4),
                                                                   little_endian(18, 4))]
        return tf.abs(signed[0]), tf.abs(signed[1])

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    first = tf.strings.substr(data, 0, 2)
    return tf.case([
        (tf.equal(first, b"\x89P"), lambda: (big_endian(20, 4), big_endian(16, 4))),
        (tf.equal(first, b"\xff\xd8"), jpeg),
        (tf.equal(first, b"GI"), lambda: (little_endian(8, 2), little_endian(6, 2))),
        (tf.equal(first, b"BM"), bmp)],
        default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), exclusive=True)


def _decodable(image, y):
    """``(image, y)`` once ``image`` decodes (an error otherwise, which ``ignore_errors``
    turns into the example being dropped)."""
    decoded = tf.io.decode_image(image, expand_animations=False)
    # an assertion is kept in the graph (a bare control dependency on the decode is pruned)
    with tf.control_dependencies([tf.debugging.assert_non_negative(tf.size(decoded))]):
        return tf.identity(image), y


class ImagePreprocessor:
    """Pixel arrays or encoded image bytes -> ``float32 [batch, height, width, channels]``.

    Args:
        height, width: the size the model takes; other sizes are resized (bilinear).
        channels: 1 (grey) or 3 (RGB); decoded images are converted to this count.
        max_pixels: the largest image (width x height) the served model decodes.

    Examples:
        >>> pre = ImagePreprocessor(8, 8, 1)
        >>> pre(np.zeros((2, 16, 16, 1), "uint8")).shape
        TensorShape([2, 8, 8, 1])
    """

    config_type = "image"
    serving_input = "image_bytes"
    tensorboard_extras = ("misclassified",)  # the images most confidently misclassified

    @classmethod
    def for_data(cls, config, x) -> ImagePreprocessor:
        """The size and channels ``data.image_size`` / ``data.channels`` say, else the
        training images' own; ``export.max_image_pixels``.

        Raises:
            ValueError: for arrays that are not images (``[n, h, w]`` or ``[n, h, w, c]``).
        """
        if x.dtype == object:  # encoded images (TFRecord files): the first one's format
            if not (config.data.image_size and config.data.channels):
                from tfkit.data.sources import image_format

                size, channels = image_format(x[0], "the first training image")
            height, width = config.data.image_size or size
            channels = config.data.channels or channels
            return cls(height, width, channels, config.export.max_image_pixels)
        if x.ndim not in (3, 4):
            raise ValueError(f"images must be [n, height, width(, channels)] arrays; data.source "
                             f"'{config.data.source}' gives arrays of shape {x.shape[1:]}.")
        height, width = config.data.image_size or x.shape[1:3]
        channels = config.data.channels or (x.shape[3] if x.ndim == 4 else 1)
        return cls(height, width, channels, config.export.max_image_pixels)

    def dataset(self, split, batch_size: int, *, training: bool, data) -> tf.data.Dataset:
        """The tf.data pipeline of one split, shuffled when ``training``: pixel arrays
        (:func:`array_dataset`), or encoded images decoded in the pipeline as the served model
        decodes them (:meth:`decode`), from memory or streamed from their files."""
        if split.streamed:
            examples = split.examples(shuffle_files=training, seed=data.seed, name_files=training)
            buffer = min(data.shuffle_buffer, max(len(split), 1))
            if data.skip_bad_records:  # the images the checking pass skipped: dropped here too
                examples = examples.map(_decodable).ignore_errors()
        elif split.x.dtype == object:
            examples = tf.data.Dataset.from_tensor_slices((list(split.x), split.y)).cache()
            buffer = len(split)
        else:
            return array_dataset(split.x, split.y, self, batch_size, shuffle=training,
                                 seed=data.seed)
        if training:
            examples = examples.shuffle(buffer, seed=data.seed, reshuffle_each_iteration=True)
        return examples.batch(batch_size).map(lambda images, y: (self.decode(images), y),
                                              num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def pixels(self, x):
        """Images as arrays: pixel arrays as they are, encoded images decoded (:meth:`decode`)."""
        x = np.asarray(x)
        return self.decode(tf.constant(list(x))).numpy() if x.dtype == object else x

    def __init__(self, height: int, width: int, channels: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.max_pixels = int(max_pixels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def adapt(self, x, limit: int | None = None) -> None:
        """Nothing to learn: the size comes from the constructor."""

    def __call__(self, images) -> tf.Tensor:
        """Pixel values ``[batch, h, w, c]`` (any h, w; c = 1 or 3) -> model input."""
        images = tf.convert_to_tensor(images)
        if images.shape.rank == 3:  # [batch, h, w] grey
            images = images[..., None]
        images = tf.cast(images, tf.float32)
        if images.shape[-1] != self.channels:
            if images.shape[-1] == 1 and self.channels == 3:
                images = tf.image.grayscale_to_rgb(images)
            elif images.shape[-1] == 3 and self.channels == 1:
                images = tf.image.rgb_to_grayscale(images)
            else:
                raise ValueError(f"images have {images.shape[-1]} channels; the model takes "
                                 f"{self.channels} (1 or 3 can be converted).")
        if tuple(images.shape[1:3]) != (self.height, self.width):
            images = tf.image.resize(images, (self.height, self.width))
        return images

    def decode(self, image_bytes) -> tf.Tensor:
        """Encoded images ``tf.string [batch]`` -> model input.

        Each image is checked before it is decoded: its first bytes must be PNG, JPEG, GIF or
        BMP, and the width x height its header gives at most ``max_pixels`` (a 389 KB PNG
        can hold a 20000 x 20000 image: 1.2 GB of pixels). It is decoded at its own channels
        (GIF and BMP decode only so), its alpha channel dropped, resized from 8-bit pixels
        (never a float copy of the full-size image), then converted to the model's channels.
        Errors are ``InvalidArgumentError``s whose text is printable (the bytes quoted are
        escaped).
        """
        limit = tf.constant(self.max_pixels, tf.int64)

        def one(data):
            head = tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8)
            known = tf.reduce_any([tf.equal(tf.strings.substr(data, 0, len(magic)), magic)
                                   for magic in _MAGIC.values()])
            check = tf.debugging.Assert(known, [
                "image_bytes is not a PNG, JPEG, GIF or BMP image; first bytes:",
                tf.strings.reduce_join(tf.gather(tf.constant(_PRINTABLE), tf.cast(head, tf.int32)))])
            with tf.control_dependencies([check]):
                height, width = image_header_size(data)
            size = tf.debugging.Assert(height * width <= limit, [
                "image_bytes holds an image of", width, "x", height, "pixels; the model takes "
                "at most", limit, "pixels (export.max_image_pixels)"])
            # the checks must run first: otherwise decode_image may fail first, with its own
            # less helpful message, or take the memory the check is there to spare
            with tf.control_dependencies([size]):
                image = tf.io.decode_image(data, expand_animations=False)
            channels = tf.shape(image)[2]  # 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
            image = image[:, :, : channels - 1 + channels % 2]  # the alpha channel dropped
            image = tf.image.resize(image, (self.height, self.width))  # uint8 in, float32 out
            grey = tf.equal(tf.shape(image)[2], 1)
            if self.channels == 3:
                image = tf.cond(grey, lambda: tf.image.grayscale_to_rgb(image), lambda: image)
            else:
                image = tf.cond(grey, lambda: image, lambda: tf.image.rgb_to_grayscale(image))
            return tf.ensure_shape(image, [self.height, self.width, self.channels])

        return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [self.height, self.width, self.channels], tf.float32))

    def serving_endpoints(self) -> dict:
        """``{name: (fn, input_signature)}``: bytes by default, the pixel tensor as well."""
        return {
            "serving_default": (self.decode, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
            "serving_tensor": (self.__call__, [tf.TensorSpec(
                [None, self.height, self.width, self.channels], tf.float32, name="images")]),
        }

    def client_inputs(self, x) -> list[bytes]:
        """What a client of the served model sends for images ``x``: PNG bytes at the
        model's size and channels (encoded images: their own bytes)."""
        if np.asarray(x).dtype == object:
            return [bytes(image) for image in x]
        pixels = tf.cast(tf.clip_by_value(tf.round(self(x)), 0, 255), tf.uint8)
        return [tf.io.encode_png(p).numpy() for p in pixels]

    def export_samples(self, x) -> list[bytes]:
        """PNG bytes of some inputs, to check an export with."""
        return self.client_inputs(x)

    def get_config(self) -> dict:
        return {"type": self.config_type, "height": self.height, "width": self.width,
                "channels": self.channels, "max_pixels": self.max_pixels}

    @classmethod
    def from_config(cls, config: dict) -> ImagePreprocessor:
        return cls(config["height"], config["width"], config["channels"],
                   config.get("max_pixels", DEFAULT_MAX_PIXELS))

    def save(self, directory: str | os.PathLike) -> None:
        write_preprocessor_json(directory, self.get_config())


class SequencePreprocessor:
    """Numeric sequences ``[batch, steps, features]`` (or images read row by row).

    An image ``[batch, h, w, c]`` becomes ``h`` steps of ``w * c`` features, so the
    8x8 digits are 8 steps of 8 features.
    """

    config_type = "sequence"
    serving_input = "sequence"
    tensorboard_extras = ()

    @classmethod
    def for_data(cls, config, x) -> SequencePreprocessor:
        """Steps from the training arrays' second axis, features from the rest."""
        return cls(x.shape[1], int(np.prod(x.shape[2:])))

    def dataset(self, split, batch_size: int, *, training: bool, data) -> tf.data.Dataset:
        """The tf.data pipeline of one split (:func:`array_dataset`), shuffled when ``training``."""
        return array_dataset(split.x, split.y, self, batch_size, shuffle=training, seed=data.seed)

    def client_inputs(self, x):
        """What a client of the served model sends: the arrays as ``[n, steps, features]``."""
        return self(x).numpy()

    def __init__(self, steps: int, features: int):
        self.steps, self.features = int(steps), int(features)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.steps, self.features)

    def adapt(self, x, limit: int | None = None) -> None:
        """Nothing to learn: the shape comes from the constructor."""

    def __call__(self, x) -> tf.Tensor:
        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        return tf.reshape(x, [-1, self.steps, self.features])

    def serving_endpoints(self) -> dict:
        return {"serving_default": (self.__call__, [tf.TensorSpec(
            [None, self.steps, self.features], tf.float32, name="sequence")])}

    def export_samples(self, x):
        return self.client_inputs(x)

    def get_config(self) -> dict:
        return {"type": self.config_type, "steps": self.steps, "features": self.features}

    @classmethod
    def from_config(cls, config: dict) -> SequencePreprocessor:
        return cls(config["steps"], config["features"])

    def save(self, directory: str | os.PathLike) -> None:
        write_preprocessor_json(directory, self.get_config())
