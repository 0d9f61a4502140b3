"""``tfkit convert``: any data source written as sharded TFRecord files of ``tf.Example``, the
format TPUs, large GPU jobs and several workers train from (``data.source: tfrecord``).

Each example holds its input under the name the served model's ``serving_examples``
signature parses (``text``, or ``image_bytes``: images as PNG, or the image files' own
bytes) and its label by name (``label``, or one feature per ``data.heads`` column: label
names as bytes, regression values as floats). So one record format trains and serves.

The training split (train and validation: validation is carved again, by hash, when
training from the records) goes to ``train-00000-of-0000N.tfrecord[.gz]``, the test split
to ``test-...``. Each file is written under a hidden ``.<name>.partial`` name and renamed
once every file is complete: an interrupted conversion leaves no file that ``train-*``
matches.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfkit.config import Config, ConfigError
from tfkit.data import load_data
from tfkit.data.streams import Progress
from tfkit.owners import claim, release

log = logging.getLogger("tfkit")


def _feature(value) -> tf.train.Feature:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def _inputs(x) -> tuple[str, list]:
    """The input feature's name and its values for a batch of inputs: texts, encoded image
    bytes, or image arrays (encoded as PNG)."""
    x = np.asarray(x)
    if x.dtype == object and len(x) and isinstance(x[0], bytes):
        return "image_bytes", list(x)
    if x.dtype == object or x.dtype.kind in "US":
        return "text", [str(t) for t in x]
    if x.ndim not in (3, 4):
        raise ConfigError(f"tfkit convert writes texts and images; this source gives arrays of "
                          f"shape {x.shape[1:]}.")
    images = x if x.ndim == 4 else x[..., None]
    return "image_bytes", [tf.io.encode_png(np.clip(i, 0, 255).astype(np.uint8)).numpy()
                           for i in images]


def convert(config: Config, to: str | os.PathLike, shards: int = 4,
            compression: str = "GZIP") -> dict:
    """Writes ``config.data``'s source as TFRecord shards of ``tf.Example`` in ``to``.

    Args:
        config: the config whose ``data`` section names the source.
        to: the folder to write (created; it must not hold converted files already).
        shards: files per split (examples go round-robin, so the files are equal in size).
        compression: ``GZIP`` (``.tfrecord.gz``) or ``none``.

    Returns:
        ``{"train": examples, "test": examples, "files": [...], "data": {...}}``: ``data`` is
        the ``data`` section that trains from the files.

    Raises:
        ConfigError: for a folder that holds converted files, bad arguments.
        DataError: from the source, naming its bad file, row or record.
    """
    if shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {shards}.")
    for key, value in (("data.features", config.data.features),
                       ("data.multi_label", config.data.multi_label)):
        if value:
            raise ConfigError(f"tfkit convert writes one input and one label per example; "
                              f"{key} data is not converted (it is read into memory).")
    if compression not in ("GZIP", "none"):
        raise ConfigError(f"--compression must be GZIP or none, got {compression!r}.")
    out = Path(to)
    existing = sorted(p.name for p in out.glob("*.tfrecord*")
                      if not p.name.startswith(".")) if out.is_dir() else []
    if existing:
        raise ConfigError(f"'{out}' already holds TFRecord files ({', '.join(existing[:3])}"
                          f"{', ...' if len(existing) > 3 else ''}); convert into an empty or "
                          "new folder.")
    data = load_data(config.data)
    out.mkdir(parents=True, exist_ok=True)
    other = claim(out)  # one conversion per folder at a time
    if other is not None:
        raise ConfigError(f"'{out}' is being written by tfkit convert (process {other['pid']} "
                          f"on {other['host']}, since {other.get('since', '?')}): wait for it, "
                          "or convert into another folder.")
    try:
        return _write(config, data, out, shards, compression)
    finally:
        release(out)


def _write(config: Config, data, out: Path, shards: int, compression: str) -> dict:
    """:func:`convert` once the folder is this process's: the partial files a killed
    conversion left removed (said in the log), then each split's shards written."""
    stale = sorted(out.glob(".*.partial"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("convert: removed %d partial file(s) a conversion that did not finish left in "
                 "'%s'", len(stale), out)
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    heads = data.heads or {}
    single = not heads
    names = {"label": data.label_names} if single else data.label_names
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == "GZIP" else "")
    counts, files, input_name = {}, [], "text"
    for split_name, splits in (("train", (data.train, data.validation)), ("test", (data.test,))):
        paths = [out / f"{split_name}-{i:05d}-of-{shards:05d}{suffix}" for i in range(shards)]
        partial = [p.with_name(f".{p.name}.partial") for p in paths]
        writers = [tf.io.TFRecordWriter(str(p), options) for p in partial]
        progress = Progress(f"converting the {split_name} split")
        try:
            for split in splits:
                for x, y in split.batches(1024):
                    input_name, values = _inputs(x)
                    labels = {"label": y} if single else y
                    for i, value in enumerate(values):
                        feature = {input_name: _feature(value)}
                        for column, ids in labels.items():
                            kind_names = names[column]
                            feature[column] = _feature(kind_names[int(ids[i])] if kind_names
                                                       else float(ids[i]))
                        example = tf.train.Example(features=tf.train.Features(feature=feature))
                        writers[(progress.count + i) % shards].write(example.SerializeToString())
                    progress.add(len(values))
        except BaseException:
            for writer, path in zip(writers, partial):
                writer.close()
                path.unlink(missing_ok=True)
            raise
        for writer in writers:
            writer.close()
        for path, final in zip(partial, paths):
            path.replace(final)
        progress.done()
        counts[split_name] = progress.count
        files += [str(p) for p in paths]
    section = {"source": "tfrecord", "path": str(out / f"train-*{suffix}"),
               "test_path": str(out / f"test-*{suffix}"), "text_column": input_name,
               "label_column": "label"}
    if heads:
        section["heads"] = dict(heads)
    return {**counts, "files": files, "data": section}
