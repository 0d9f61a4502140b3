"""Streaming sources: CSV / TSV / JSON Lines files and TFRecord files of ``tf.Example`` read
lazily through tf.data, so memory stays flat however large the data is.

Before training, one pass over the files (the *scan*, with a progress line every few
seconds) checks every row or record, naming the first bad one by file and row or record
number (``data.skip_bad_records`` lets up to N be skipped and counted), and keeps only what
is small: the label vocabulary and each split's label ids (4 bytes per example), from which
the splits' sizes, class weights and the majority-label rates follow. Training then reads
the files again every epoch.

Splits are carved without holding the data: each example's input (its text, or its encoded
image bytes) goes through two keyed hashes (``tf.strings.to_hash_bucket_strong``, keyed with
``data.seed``); the scan keeps them (16 bytes per example) and picks the cuts below which
``test_fraction`` of the examples are test examples (when the source has no test files), and
``validation_fraction`` of the rest validation examples. The hashes are independent, so the validation split carved from converted files (which hold no test
examples) is the one carved from the original data. An example is in the same split on every
worker, every epoch, after a resume and whether the data streams or is read into memory
(``data.stream: false`` reads these same streams into arrays). Identical inputs share a
split, so a duplicated review cannot leak from training into the test split.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfkit.config import DataConfig
from tfkit.errors import excerpt, without_graph_names

log = logging.getLogger("tfkit")

HASH_RANGE = 2**62  # split hashes fall in [0, HASH_RANGE)
TEACHER_SALT = 3  # the hash salt of the key a teacher's answers are looked up by
STREAM_ABOVE_BYTES = 256 * 2**20  # data.stream: auto streams data whose memory_estimate is larger
TEXT_MEMORY_FACTOR = 12  # read into memory, texts and records take ~12x their files' bytes
# (one epoch of the default preset: its peak grew 402 MB for 33.7 MB more CSV, 20,000 ->
# 200,000 reviews; docs/benchmarks.md)
CHUNK_ROWS = 20_000  # rows of a CSV read at a time
RECORD_BATCH = 1024  # records parsed at a time
PROGRESS_SECONDS = 5.0
NAMED_FILES = 32  # a stream names each file it opens (on standard error) up to this many files
TABLE_KINDS = {".tsv": "TSV", ".tab": "TSV", ".jsonl": "JSON Lines", ".ndjson": "JSON Lines"}


def text_array(values) -> np.ndarray:
    """``values`` as an object array of Python strings, as ``tf.constant`` and
    ``from_tensor_slices`` take texts. (NumPy's ``astype(str)`` would make a fixed-width
    array, every text padded to the longest one in four bytes a character: 200,000 reviews
    took 1.9 GB for a moment that way.)"""
    return np.array([v if isinstance(v, str) else str(v) for v in np.asarray(values, dtype=object)],
                    dtype=object)


class StreamError(ValueError):
    """A bad file, row or record; the message names it (turned into a ``DataError``)."""


def split_hash(keys, seed: int, salt: int):
    """Each key's (``tf.string``) keyed hash in ``[0, HASH_RANGE)``; test and validation use
    their own ``salt``, so the validation split carved from files that hold no test examples
    (converted ones) is the one carved from the original data."""
    return tf.strings.to_hash_bucket_strong(keys, HASH_RANGE, [int(seed) & (2**63 - 1), salt])


def split_cuts(test_hashes: np.ndarray, validation_hashes: np.ndarray, config: DataConfig,
               has_test_files: bool) -> tuple[int, int]:
    """``(test cut, validation cut)``: the hash values below which an example of the training
    files is a test example (none when there are test files), else a validation example;
    chosen so that ``test_fraction`` of the examples, then ``validation_fraction`` of the rest,
    fall below them (examples with one text share a hash, so a few more or less)."""
    def cut(hashes, fraction):
        k = round(fraction * len(hashes))
        return 0 if k == 0 else HASH_RANGE if k >= len(hashes) else int(np.partition(hashes, k)[k])

    test = 0 if has_test_files else cut(test_hashes, config.test_fraction)
    return test, cut(validation_hashes[test_hashes >= test], config.validation_fraction)


def split_codes(keys, seed: int, cuts: tuple[int, int]):
    """Each key's split: 0 train, 1 validation, 2 test (:func:`split_cuts`)."""
    test = split_hash(keys, seed, 1) < cuts[0]
    validation = split_hash(keys, seed, 2) < cuts[1]
    return tf.where(test, 2, tf.where(validation, 1, 0))


def file_list(pattern: str, what: str) -> list[str]:
    """The files a path or glob names, sorted; a :class:`StreamError` when there are none."""
    files = sorted(f for f in glob.glob(str(pattern)) if Path(f).is_file())
    if not files:
        if glob.has_magic(str(pattern)):
            raise StreamError(f"{what} '{pattern}' matches no file.")
        raise StreamError(f"{what} '{pattern}' does not exist.")
    return files


def memory_estimate(file_bytes: int, images: int = 0, pixels: int = 0) -> int:
    """Bytes that data would take read into memory, what ``data.stream: auto`` decides by:
    for ``images`` decoded at ``pixels`` values each (height x width x channels), their
    ``uint8`` arrays twice (each image as it is read, then all of them stacked); for texts
    and records, ``TEXT_MEMORY_FACTOR`` times the bytes of their files (the texts as
    strings, their token ids and the training dataset's copy; a compressed image weighs
    far less in its file than decoded, a text about the same).

    Examples:
        >>> memory_estimate(int(37.5 * 2**20)) // 2**20  # a 37.5 MB CSV (200,000 reviews)
        450
        >>> memory_estimate(150 * 2**20, images=5000, pixels=256 * 256 * 3) // 2**20
        1875
    """
    if images and pixels:
        return 2 * images * pixels
    return TEXT_MEMORY_FACTOR * file_bytes


def should_stream(config: DataConfig, estimate: int, what: str) -> bool:
    """``data.stream``: true, false, or auto: stream when ``estimate`` (bytes read into
    memory, :func:`memory_estimate`) is over ``STREAM_ABOVE_BYTES``; auto's choice is
    logged with the estimate."""
    setting = str(config.stream).lower()
    if setting != "auto":
        return setting == "true"
    streamed = estimate > STREAM_ABOVE_BYTES
    log.info("data.stream: auto: %s read into memory would take ~%s MB, %s %d MB: %s", what,
             f"{estimate / 2**20:,.0f}", "over" if streamed else "at most",
             STREAM_ABOVE_BYTES // 2**20, "streamed" if streamed else "read into memory")
    return streamed


def files_bytes(files: list[str]) -> int:
    """The files' total size in bytes."""
    return sum(Path(f).stat().st_size for f in files)


def first_bad_line(file: Path, encoding: str | None) -> int:
    """The number of the first line of ``file`` that ``encoding`` cannot decode."""
    with file.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode(encoding or "utf-8")
            except UnicodeDecodeError:
                return number
    return 1  # a character cut across lines (UTF-16, say): the file as a whole


def json_objects(file, kind: str = "JSON Lines", encoding: str | None = None):
    """``(line number, object)`` for each line of a JSON Lines file (blank lines skipped, a
    byte-order mark too); a line that is not a JSON object is a :class:`StreamError` naming
    its number."""
    with Path(file).open(encoding=encoding or "utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StreamError(f"{kind} file '{file}' line {number}: not valid JSON "
                                  f"({exc.msg}).") from None
            if not isinstance(row, dict):
                raise StreamError(f"{kind} file '{file}' line {number}: expected an object "
                                  f"{{\"column\": value, ...}}, got {type(row).__name__}.")
            yield number, row


class Progress:
    """Logs ``<what>: N <unit> (R/s)`` every :data:`PROGRESS_SECONDS` and once at the end."""

    def __init__(self, what: str, unit: str = "records"):
        self.what, self.unit, self.count, self.logged = what, unit, 0, False
        self.start = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self._log()

    def _log(self, done: str = "") -> None:
        rate, self.logged = self.count / max(time.monotonic() - self.start, 1e-9), True
        log.info("%s: %s %s (%s/s)%s", self.what, f"{self.count:,}", self.unit, f"{rate:,.0f}", done)

    def done(self) -> None:
        self._log(", done")


def keyed(inputs, labels, valid):
    """``(key, inputs, labels, valid)``: the input is its own key for the split hashes."""
    return inputs, inputs, labels, valid


# --- readers: one per format. Each gives tf.data batches of (key, inputs, {label column: raw
# label as a string}, valid), and the scan the same as NumPy with where each row came from. The
# key is what the split hashes: the input itself, or for a folder the file's class/name.


def label_list(values: list, separator: str, where: str) -> str:
    """A JSON Lines list of labels as one label column value joined by ``separator``.

    Raises:
        StreamError: naming ``where`` and the element, for one that is not a non-empty string,
            or a string holding the separator.

    Examples:
        >>> label_list(["poem", "love"], "|", "line 1")
        'poem|love'
    """
    for element in values:
        if not isinstance(element, str) or not element.strip() or separator in element:
            what = (f"holds {separator!r}, the label separator" if isinstance(element, str)
                    and element.strip() else "is not a label (a non-empty string)")
            raise StreamError(f"{where}: the list element {excerpt(element, 40)} {what}; each "
                              "label in a list must be a non-empty string without the separator "
                              "(data.label_separator).")
    return separator.join(element.strip() for element in values)


class TableReader:
    """CSV, TSV (``.tsv``, ``.tab``) or JSON Lines (``.jsonl``, ``.ndjson``) files read in
    chunks of :data:`CHUNK_ROWS` rows (pandas' C parser, every value read as a string)."""

    input_kind = "text"
    shardable = False  # read by Python (from_generator): tf.data shards it by element
    numeric_labels = True  # labels that are all integers sort as numbers

    def __init__(self, files: list[str], text_column: str, label_columns: list[str],
                 encoding: str | None, label_separator: str | None = None):
        self.files, self.text_column, self.label_columns = files, text_column, label_columns
        self.encoding = encoding
        # several labels per example: a JSON Lines list of strings is joined by it
        self.label_separator = label_separator
        try:
            "".encode(encoding or "utf-8")
        except LookupError:
            raise StreamError(f"data.encoding {encoding!r} is not a text encoding Python knows "
                              "(e.g. utf-8, latin-1, cp1252, utf-16, shift_jis, gb18030).") from None

    def kind(self, file: str) -> str:
        return TABLE_KINDS.get(Path(file).suffix.lower(), "CSV")

    def chunks(self, file: str):
        """``(first row number, texts, {column: labels}, valid)`` per chunk of ``file``;
        rows are numbered from 1 after the header (JSON Lines: line numbers)."""
        kind = self.kind(file)
        try:
            if kind == "JSON Lines":
                yield from self._json_chunks(file)
                return
            import pandas as pd

            reader = pd.read_csv(file, sep="\t" if kind == "TSV" else ",", dtype=str,
                                 keep_default_na=False, na_values=[], chunksize=CHUNK_ROWS,
                                 encoding=self.encoding or "utf-8-sig")
            row = 1
            with reader:
                for frame in reader:
                    missing = [c for c in [self.text_column, *self.label_columns]
                               if c not in frame.columns]
                    if missing:
                        raise StreamError(f"{kind} file '{file}' has no column {missing[0]!r}; "
                                          f"its columns are {list(frame.columns)}.")
                    texts = frame[self.text_column].to_numpy(dtype=object)
                    labels = {c: frame[c].to_numpy(dtype=object) for c in self.label_columns}
                    yield row, texts, labels, np.ones(len(frame), bool)
                    row += len(frame)
        except UnicodeDecodeError as exc:
            raise StreamError(
                f"{kind} file '{file}' line {first_bad_line(Path(file), self.encoding)} is not "
                f"{self.encoding or 'UTF-8'} (byte 0x{exc.object[exc.start]:02x}): save the file "
                "as UTF-8, or set data.encoding to the encoding it was written in (spreadsheets "
                "on Windows often write cp1252; latin-1 reads any bytes).") from None
        except StreamError:
            raise
        except Exception as exc:  # pandas' ParserError, EmptyDataError, csv.Error
            raise StreamError(f"{kind} file '{file}' cannot be read: {exc}") from None

    def _json_chunks(self, file: str):
        rows, numbers = [], []
        for number, row in json_objects(file, encoding=self.encoding):
            rows.append(row)
            numbers.append(number)
            if len(rows) == CHUNK_ROWS:
                yield self._json_chunk(rows, numbers, file)
                rows, numbers = [], []
        if rows:
            yield self._json_chunk(rows, numbers, file)

    def _json_chunk(self, rows, numbers, file: str = ""):
        separator = self.label_separator

        def value(v, column, number):  # a missing key or null reads as empty: the scan names it
            if isinstance(v, list) and separator is not None:
                return label_list(v, separator, f"JSON Lines file '{file}' line {number} "
                                                f"column '{column}'")
            return "" if v is None else v if isinstance(v, str) else json.dumps(v)

        texts = np.array([row.get(self.text_column) for row in rows], dtype=object)
        valid = np.array([t is None or isinstance(t, str) for t in texts])
        texts = np.array([t if isinstance(t, str) else "" for t in texts], dtype=object)
        labels = {c: np.array([value(row.get(c), c, n) for row, n in zip(rows, numbers)],
                              dtype=object) for c in self.label_columns}
        return numbers[0], texts, labels, valid

    def scan_batches(self, file: str):
        """``(where, inputs, labels, valid, problem)`` per chunk: ``where(i)`` names row ``i``
        (file and row number), ``problem(i)`` says why an invalid row is."""
        kind = self.kind(file)
        unit = "line" if kind == "JSON Lines" else "row"
        for first, texts, labels, valid in self.chunks(file):
            def where(i, first=first):
                return f"{kind} file '{file}' {unit} {first + i:,}"

            def problem(i, texts=texts):
                return f"column {self.text_column!r} is not text: {excerpt(texts[i])}"

            yield where, texts, labels, valid, problem

    def dataset(self, files: tf.data.Dataset, named: bool = False,
                sequential: bool = True) -> tf.data.Dataset:
        """Batches of ``(text, {column: label}, valid)`` of every row of ``files``, one file
        after the other (``named``: each file named on standard error as it is opened)."""
        columns = self.label_columns
        signature = (tf.TensorSpec([None], tf.string), {c: tf.TensorSpec([None], tf.string)
                                                       for c in columns},
                     tf.TensorSpec([None], tf.bool))

        def rows(file):
            for _, texts, labels, valid in self.chunks(file.decode() if isinstance(file, bytes)
                                                       else str(file)):
                yield text_array(texts), {c: text_array(v) for c, v in labels.items()}, valid

        def read(file):
            file = announced(file) if named else file
            return tf.data.Dataset.from_generator(rows, args=(file,), output_signature=signature)

        return files.flat_map(read).map(keyed)


class RecordReader:
    """TFRecord files of ``tf.Example`` (``data.compression``, default GZIP for ``*.gz``):
    the input in a bytes feature (text, or an encoded image), each label a bytes or int64
    feature (regression heads: float too). Parsed :data:`RECORD_BATCH` records at a time."""

    shardable = True  # TFRecordDataset on a list of files: tf.data can shard it by file
    numeric_labels = True

    def __init__(self, files: list[str], text_column: str, label_columns: list[str],
                 compression: str | None, regression: tuple = (), tolerant: bool = False):
        self.files, self.text_column, self.label_columns = files, text_column, label_columns
        self.tolerant = tolerant  # data.skip_bad_records: records of another type are dropped
        self.compression = compression or ("GZIP" if files[0].endswith(".gz") else "none")
        first = self._first_example(files[0])
        self.input_kind = "text"
        self.dtypes = {}
        for column in [text_column, *label_columns]:
            feature = first.features.feature.get(column)
            if feature is None:
                raise StreamError(f"TFRecord file '{files[0]}' record 1 has no feature {column!r}; "
                                  f"its features are {sorted(first.features.feature)}.")
            kind = feature.WhichOneof("kind")
            allowed = ("bytes_list",) if column == text_column else (
                ("bytes_list", "int64_list", "float_list") if column in regression
                else ("bytes_list", "int64_list"))
            if kind not in allowed:
                raise StreamError(f"TFRecord file '{files[0]}' record 1: feature {column!r} is "
                                  f"a {kind}; expected {' or '.join(allowed)}.")
            self.dtypes[column] = {"bytes_list": tf.string, "int64_list": tf.int64,
                                   "float_list": tf.float32}[kind]
        text = first.features.feature[text_column].bytes_list.value
        if text and _is_image(text[0]):
            self.input_kind = "image"

    def _open(self, file) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(file, compression_type="" if self.compression == "none"
                                       else self.compression)

    def _first_example(self, file: str) -> tf.train.Example:
        try:
            serialized = next(iter(self._open(file).take(1)), None)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise StreamError(f"TFRecord file '{file}' cannot be read "
                              f"(compression {self.compression}): {_reason(exc)}") from None
        if serialized is None:
            raise StreamError(f"TFRecord file '{file}' holds no records.")
        try:
            return tf.train.Example.FromString(serialized.numpy())
        except Exception:
            raise StreamError(f"TFRecord file '{file}' record 1 is not a tf.train.Example.") from None

    def parse(self, serialized):
        """Records ``tf.string [n]`` -> ``(inputs, {column: label as string}, valid)``: valid
        when each feature holds exactly one value."""
        spec = {c: tf.io.VarLenFeature(d) for c, d in self.dtypes.items()}
        features = tf.io.parse_example(serialized, spec)
        valid = tf.ones_like(serialized, tf.bool)
        values = {}
        for column, sparse in features.items():
            ragged = tf.RaggedTensor.from_sparse(sparse)
            valid &= tf.equal(ragged.row_lengths(), 1)
            default = "" if sparse.dtype == tf.string else 0
            first = ragged[:, :1].to_tensor(default_value=default, shape=[None, 1])[:, 0]
            values[column] = first if sparse.dtype == tf.string else tf.strings.as_string(first)
        text = values.pop(self.text_column)
        return text, values, valid

    def dataset(self, files: tf.data.Dataset, named: bool = False,
                sequential: bool = False) -> tf.data.Dataset:
        """Batches of ``(input, {column: label}, valid)`` of every record of ``files``
        (``named``: each file named on standard error as it is opened; ``sequential``: one
        file after the other, else four read at a time)."""
        def open_file(file):
            return self._open(announced(file) if named else file)

        records = files.interleave(open_file, cycle_length=1 if sequential else 4, block_length=16,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.tolerant:  # one record at a time: one that fails to parse is dropped alone
            return records.map(lambda record: keyed(*self.parse(record[None])),
                               num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        return records.batch(RECORD_BATCH).map(lambda batch: keyed(*self.parse(batch)),
                                               num_parallel_calls=tf.data.AUTOTUNE)

    def scan_batches(self, file: str):
        """``(where, inputs, labels, valid, problem)`` per :data:`RECORD_BATCH` records of
        ``file``, as :meth:`TableReader.scan_batches`."""
        if not hasattr(self, "_parse"):
            self._parse = tf.function(self.parse, input_signature=[tf.TensorSpec([None], tf.string)])
        parse = self._parse
        record = 1
        iterator = iter(self._open(file).batch(RECORD_BATCH))
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
                where = (f"within its first {RECORD_BATCH:,} records" if record == 1 else
                         f"after record {record - 1:,}")  # records are read in batches
                raise StreamError(f"TFRecord file '{file}' is damaged {where} (truncated or "
                                  f"corrupt): {_reason(exc)}") from None
            try:
                texts, labels, valid = parse(batch)
            except (tf.errors.InvalidArgumentError, UnicodeDecodeError):  # the latter: an error
                texts, labels, valid = self._parse_one_by_one(batch.numpy())  # quoting bytes
            else:
                texts, valid = texts.numpy(), valid.numpy()
                labels = {c: v.numpy() for c, v in labels.items()}

            def where(i, first=record):
                return f"TFRecord file '{file}' record {first + i:,}"

            raw = batch.numpy()

            def problem(i, raw=raw):
                return self.problem(raw[i])

            yield where, texts, labels, valid, problem
            record += len(valid)

    def _parse_one_by_one(self, serialized):
        """A batch that does not parse (a feature of another type): each record alone, the
        ones that fail marked invalid (their problem: :meth:`problem`)."""
        texts, labels, valid = [], {c: [] for c in self.label_columns}, []
        for record in serialized:
            try:
                text, values, ok = self.parse(tf.constant([record]))
                texts.append(text.numpy()[0])
                for c in self.label_columns:
                    labels[c].append(values[c].numpy()[0])
                valid.append(bool(ok.numpy()[0]))
            except (tf.errors.InvalidArgumentError, UnicodeDecodeError):
                texts.append(b"")
                for c in self.label_columns:
                    labels[c].append(b"")
                valid.append(False)
        return (np.array(texts, dtype=object), {c: np.array(v, dtype=object)
                                                for c, v in labels.items()}, np.array(valid))

    def problem(self, record: bytes) -> str:
        """Why ``record`` cannot be read: a missing feature, another type, not one value."""
        try:
            example = tf.train.Example.FromString(record)
        except Exception:
            return "it is not a tf.train.Example"
        for column, dtype in self.dtypes.items():
            feature = example.features.feature.get(column)
            if feature is None:
                return f"it has no feature {column!r}"
            kind = feature.WhichOneof("kind")
            want = {tf.string: "bytes_list", tf.int64: "int64_list", tf.float32: "float_list"}[dtype]
            if kind != want:
                return f"feature {column!r} is a {kind}; the other records' is a {want}"
            count = len(getattr(feature, kind).value)
            if count != 1:
                return f"feature {column!r} holds {count} values, not 1"
        return "it cannot be parsed"


class FolderReader:
    """One sub-folder per class (``image_directory``, ``directory``): files listed by path,
    each read whole in the pipeline, its label the name of its folder. The split hashes see
    ``class/file name``, so moving the folder keeps every example in its split."""

    shardable = True  # a list of files: each worker reads its share
    numeric_labels = False  # class folders sort by name, as Keras's directory readers do

    def __init__(self, files: list[str], input_kind: str, label_column: str):
        self.files, self.input_kind, self.label_columns = files, input_kind, [label_column]

    def scan_units(self, files: list[str]) -> list[list[str]]:
        return [files[i:i + RECORD_BATCH] for i in range(0, len(files), RECORD_BATCH)]

    def scan_batches(self, paths: list[str]):
        keys = np.array(["/".join(Path(p).parts[-2:]) for p in paths], dtype=object)
        labels = {self.label_columns[0]: np.array([Path(p).parent.name for p in paths], dtype=object)}
        # a file that is no image, or whose image does not decode: named before training
        problems = [_image_problem(p) for p in paths] if self.input_kind == "image" else []
        valid = np.array([not problem for problem in problems] or [True] * len(paths))

        def where(i):
            return f"file '{paths[i]}'"

        def problem(i):
            return problems[i]

        yield where, keys, labels, valid, problem

    def dataset(self, files: tf.data.Dataset, named: bool = False,
                sequential: bool = True) -> tf.data.Dataset:
        column = self.label_columns[0]

        def read(path):
            parts = tf.strings.split(path, "/")
            key = tf.strings.reduce_join(parts[-2:], separator="/")
            return key, tf.io.read_file(path), {column: parts[-2]}, tf.constant(True)

        ds = files.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(64)


class TfdsReader:
    """One tensorflow-datasets split read by ``builder.as_dataset`` as tf.data, never as NumPy
    (images left encoded, tfds's ``SkipDecoding``, and decoded in the pipeline as the served
    model decodes them). ClassLabel features keep their names and their order."""

    shardable = False  # tfds reads its own files: sharded by element
    numeric_labels = True

    def __init__(self, builder, split: str, input_key: str, label_columns: list[str],
                 is_image: bool):
        self.builder, self.split, self.input_key = builder, split, input_key
        self.label_columns, self.input_kind = label_columns, "image" if is_image else "text"
        features = builder.info.features
        self.label_order = {c: list(getattr(features[c], "names", []) or []) for c in label_columns}

    def _read(self) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        decoders = {self.input_key: tfds.decode.SkipDecoding()} if self.input_kind == "image" else None
        ds = self.builder.as_dataset(split=self.split, decoders=decoders, shuffle_files=False)
        order = self.label_order

        def pick(example):
            labels = {}
            for column in self.label_columns:
                value = example[column]
                if order[column]:  # a ClassLabel id: its name
                    value = tf.gather(tf.constant(order[column]), tf.cast(value, tf.int32))
                elif value.dtype != tf.string:
                    value = tf.strings.as_string(value)
                labels[column] = value
            return example[self.input_key], labels, tf.constant(True)

        return ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE).batch(RECORD_BATCH)

    def scan_batches(self, split: str):
        first = 1
        for inputs, labels, valid in self._read().as_numpy_iterator():
            def where(i, first=first):
                return f"tfds '{self.builder.name}' split '{self.split}' example {first + i:,}"

            yield where, inputs, labels, valid, lambda i: "it cannot be read"
            first += len(valid)

    def dataset(self, files: tf.data.Dataset, named: bool = False,
                sequential: bool = True) -> tf.data.Dataset:
        return self._read().map(keyed)


def folder_files(folder: str | None, suffixes: tuple, what: str) -> list[str]:
    """The files with ``suffixes`` in the class sub-folders of ``folder``, sorted."""
    if not folder or not Path(folder).is_dir():
        raise StreamError(f"{what} '{folder}' does not exist.")
    files = sorted(str(p) for p in Path(folder).glob("*/*")
                   if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise StreamError(f"{what} '{folder}' has no {'/'.join(suffixes)} files in class folders.")
    return files


def _head(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(16)


def _image_problem(path: str) -> str | None:
    """Why the file at ``path`` is not an image the pipeline can decode (its first bytes, or
    the decoder's reason for a damaged one), or None."""
    head = _head(path)
    if not _is_image(head):
        return f"not a PNG, JPEG, GIF or BMP image (first bytes {excerpt(head[:8])})"
    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.InvalidArgumentError as exc:
        return f"an image that does not decode ({_reason(exc)})"
    return None


def _is_image(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or \
        data[:6] in (b"GIF87a", b"GIF89a") or data[:2] == b"BM"


def _reason(exc: tf.errors.OpError) -> str:
    return without_graph_names(exc.message).strip().split("\n")[0].split(" [[")[0][:200]


NUMBER = r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*"  # a finite number, in Python and in-graph


@dataclass
class Labels:
    """What the scan found about the labels: ``names`` per classification column (sorted,
    numerically when every label is an integer), ``[]`` per regression column."""

    columns: list[str]
    kinds: dict  # column -> "classification" | "regression" | "multilabel" (label sets)
    names: dict  # column -> label names ([] for regression)

    def encode(self, raw: dict):
        """In-graph: ``{column: label string}`` -> ``(ids or values, ok)``."""
        ok, out = tf.constant(True), {}
        for column in self.columns:
            value = raw[column]
            if self.kinds[column] == "regression":
                number = tf.strings.regex_full_match(value, NUMBER)
                ok &= number
                out[column] = tf.strings.to_number(tf.where(number, value, "0"), tf.float32)
            else:
                names = self.names[column]
                table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                    tf.constant(names, tf.string), tf.range(len(names), dtype=tf.int32)), -1)
                out[column] = table.lookup(value)
                ok &= out[column] >= 0
        return out, ok


@dataclass
class Split:
    """One split: inputs ``x`` (texts or arrays) and targets ``y``.

    ``y`` holds int label ids, or for multi-task data a dict ``{head: array}`` (int ids
    for classification heads, float32 values for regression heads).
    """

    x: np.ndarray
    y: np.ndarray | dict

    def __len__(self) -> int:
        return len(self.x)

    streamed = False  # in memory (a StreamSplit reads its files on every pass)

    def take(self, index) -> Split:
        if isinstance(self.y, dict):
            return Split(self.x[index], {k: v[index] for k, v in self.y.items()})
        return Split(self.x[index], self.y[index])

    def sample(self, n: int) -> Split:
        """The first ``n`` examples (all when there are fewer)."""
        return self.take(slice(0, n))

    def batches(self, size: int):
        """``(inputs, label ids)``, ``size`` examples at a time."""
        for start in range(0, len(self), size):
            part = self.take(slice(start, start + size))
            yield part.x, part.y


@dataclass
class StreamSplit:
    """One split read from its files on every pass: ``len()`` and the label ids ``y`` come
    from the scan (label ids only: 4 bytes per example); the inputs are never held."""

    reader: TableReader | RecordReader
    files: list[str]
    part: int | None  # which split of the files' examples (split_codes), None: all
    cuts: tuple  # split_cuts
    labels: Labels
    seed: int
    limit: int | None
    y: np.ndarray | dict
    single: str | None  # the label column of single-task data (y is its ids), else None
    shard: tuple | None = None  # (workers, this worker's index): read only its share of files
    # knowledge distillation: (each training example's key hash, the teacher's probabilities
    # for it); the label id of each example then travels as [label id, probabilities...]
    taught: tuple | None = None

    streamed = True

    def __len__(self) -> int:
        first = self.y if self.single else next(iter(self.y.values()))
        return len(first)

    def examples(self, *, shuffle_files: bool = False, seed: int = 0,
                 name_files: bool = False, keys: bool = False) -> tf.data.Dataset:
        """Unbatched ``(input, label ids)`` of this split, in file order (``shuffle_files``:
        the files in a new order each epoch; ``name_files``: each file named on standard error
        as it is opened, up to :data:`NAMED_FILES` files). The source of the pipeline is the
        list of files, so a multi-worker strategy can shard it by file.

        ``keys``: ``(input, (key hash, label ids))``, the hash a teacher's answers are looked
        up by (:attr:`taught`). With :attr:`taught` set, the label ids of a single-task split
        come as ``[label id, the teacher's probabilities...]`` (float32)."""
        files = tf.data.Dataset.from_tensor_slices(self.files)
        if self.shard:
            files = files.shard(*self.shard)
        if shuffle_files and len(self.files) > 1 and not self.limit:
            files = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)
        part, cuts, labels, seed_, single = self.part, self.cuts, self.labels, self.seed, self.single
        taught = self.taught
        if taught is not None and not keys:  # key hash -> row of the teacher's answers
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(taught[0], tf.int64), tf.range(len(taught[0]), dtype=tf.int64)), -1)
            answers = tf.constant(taught[1], tf.float32)

        def encode(key, x, raw, valid):
            y, ok = labels.encode(raw)
            if part is not None:
                ok &= tf.equal(split_codes(key, seed_, cuts), part)
            y = y[single] if single else y
            if keys:
                y = (split_hash(key, seed_, TEACHER_SALT), y)
            elif taught is not None:
                row = table.lookup(split_hash(key, seed_, TEACHER_SALT))
                ok &= row >= 0  # every training example has its answer: none is dropped
                y = tf.concat([tf.cast(y, tf.float32)[:, None],
                               tf.gather(answers, tf.maximum(row, 0))], axis=1)
            return x, y, ok & valid

        def kept(x, y, ok):  # a batch's examples of this split with readable labels
            return tf.nest.map_structure(lambda part: tf.boolean_mask(part, ok), (x, y))

        named = name_files and len(self.files) <= NAMED_FILES
        ds = self.reader.dataset(files, named, sequential=bool(self.limit))  # limit: the
        ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE)  # scan's first examples
        ds = ds.map(kept, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return ds.take(self.limit) if self.limit else ds

    def cache_file(self, cache_dir: str | None, fingerprint: str) -> str | None:
        """Where this split's token ids are cached under ``cache_dir`` (None: no cache): a
        name from the files, their sizes and times, the split and ``fingerprint``."""
        if not cache_dir:
            return None
        stats = [(f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in self.files]
        taught = None if self.taught is None else hashlib.sha256(
            np.ascontiguousarray(self.taught[1]).tobytes()).hexdigest()  # the targets differ
        key = json.dumps([stats, self.part, self.cuts, self.seed, self.limit, fingerprint, taught])
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return str(Path(cache_dir, hashlib.sha256(key.encode()).hexdigest()[:20]))

    def batches(self, size: int):
        """``(inputs, label ids)`` as NumPy, ``size`` examples at a time (texts as ``str``)."""
        for x, y in self.examples().batch(size).as_numpy_iterator():
            yield self._inputs(x), y

    def keyed_batches(self, size: int):
        """``(key hashes, inputs, label ids)`` as NumPy, ``size`` examples at a time: what a
        teacher answers, and the hash its answers are looked up by (:attr:`taught`)."""
        for x, (hashes, y) in self.examples(keys=True).batch(size).as_numpy_iterator():
            yield hashes, self._inputs(x), y

    def _inputs(self, x):
        if self.reader.input_kind == "text":
            return np.array([t.decode("utf-8", errors="replace") for t in x], dtype=object)
        return x

    def sample(self, n: int):
        """The first ``n`` examples, in memory, as a :class:`Split`."""
        xs, ys = [], []
        for x, y in self.batches(min(n, 1024)):
            xs.append(x)
            ys.append(y)
            if sum(map(len, xs)) >= n:
                break
        x = np.concatenate(xs)[:n] if xs else np.array([], dtype=object)
        if self.single:
            return Split(x, np.concatenate(ys)[:n] if ys else np.array([], np.int32))
        return Split(x, {c: np.concatenate([y[c] for y in ys])[:n] for c in self.labels.columns})

    def read_all(self):
        """The whole split in memory (``data.stream: false``)."""
        return self.sample(2**62)


def what_file(reader, file: str) -> str:
    """``CSV file 'x.csv'``, ``TFRecord file 'x.tfrecord'``..."""
    return f"{reader.kind(file) if isinstance(reader, TableReader) else 'TFRecord'} file '{file}'"


def announced(file):
    """``file``, named on standard error when the pipeline opens it (under a multi-worker
    strategy each worker names only the files it reads)."""
    with tf.control_dependencies([tf.print("tfkit: reading", file, output_stream=sys.stderr)]):
        return tf.identity(file)


def scan(train: tuple, test: tuple | None, config: DataConfig, kinds: dict) -> tuple:
    """One pass over the training files (``train``: ``(reader, files)``) and the test files
    (``test``, or None: the test split is carved from the training files): checks every
    record, collects the labels and carves the splits (:func:`split_cuts`).

    Returns:
        ``(Labels, {split: y}, cuts)``: ``y`` the label ids (or per-column ids / values) of
        each split, ``cuts`` what :func:`split_codes` carves the training files with.

    Raises:
        StreamError: naming the first bad record (file and row or record number) and why,
            when there are more than ``data.skip_bad_records``.
    """
    columns = list(kinds)
    vocab = {c: {} for c in columns if kinds[c] != "regression"}  # raw label -> temporary id
    kept = {side: {"ids": {c: [] for c in columns}, "hashes": ([], [])} for side in ("train", "test")}
    bad = {"count": 0, "first": None}
    number = re.compile(NUMBER)
    sides = [(train, False)] + ([(test, True)] if test else [])
    for (reader, files), is_test in sides:
        side = kept["test" if is_test else "train"]
        progress = Progress(f"reading {'test' if is_test else 'training'} data "
                            f"({len(files)} file{'s' if len(files) > 1 else ''})")
        for file in getattr(reader, "scan_units", list)(files):
            rows = progress.count
            for where, inputs, raw, valid, problem in reader.scan_batches(file):
                ok, ids, cause = _check_batch(raw, valid, problem, columns, kinds, vocab,
                                              is_test, number)
                for i in np.flatnonzero(~ok):
                    bad["count"] += 1
                    if bad["first"] is None:
                        bad["first"] = f"{where(i)}: {cause(i)}"
                    if bad["count"] > config.skip_bad_records:
                        skip = (f" ({bad['count']} bad so far, data.skip_bad_records is "
                                f"{config.skip_bad_records})" if config.skip_bad_records else
                                " (data.skip_bad_records: N skips up to N bad records)")
                        raise StreamError(f"{where(i)}: {cause(i)}.{skip}")
                for column in columns:
                    side["ids"][column].append(ids[column][ok])
                if not is_test:
                    keys = tf.constant(np.asarray(inputs, dtype=object)[ok], tf.string)
                    for salt, hashes in enumerate(side["hashes"], 1):
                        hashes.append(split_hash(keys, config.seed, salt).numpy())
                progress.add(len(valid))
            if progress.count == rows and isinstance(file, str):
                raise StreamError(f"{what_file(reader, file)} has no rows.")
        progress.done()
    if bad["count"]:
        log.warning("skipped %d bad record(s) (data.skip_bad_records: %d); the first: %s",
                    bad["count"], config.skip_bad_records, bad["first"])
    names, remap = _label_names(vocab, train[0])

    def joined(parts, column):
        values = np.concatenate(parts) if parts else np.array([], np.float32)
        return (values.astype(np.float32) if kinds[column] == "regression"
                else remap[column][values.astype(np.int64)].astype(np.int32))

    train_ids = {c: joined(kept["train"]["ids"][c], c) for c in columns}
    test_hashes, validation_hashes = (np.concatenate(h) if h else np.array([], np.int64)
                                      for h in kept["train"]["hashes"])
    cuts = split_cuts(test_hashes, validation_hashes, config, test is not None)
    codes = np.where(test_hashes < cuts[0], 2, np.where(validation_hashes < cuts[1], 1, 0))
    y = {}
    for code, name in enumerate(("train", "validation", "test")):
        if name == "test" and test is not None:
            y[name] = {c: joined(kept["test"]["ids"][c], c) for c in columns}
        else:
            y[name] = {c: values[codes == code] for c, values in train_ids.items()}
        if config.limit:
            y[name] = {c: values[: config.limit] for c, values in y[name].items()}
    for column in columns:
        if kinds[column] == "regression":
            names[column] = []
    return Labels(columns, kinds, names), y, cuts


def _label_names(vocab: dict, reader) -> tuple[dict, dict]:
    """Each label column's names in their final order (numerically when every label is an
    integer and the reader reads labels as text; a tfds ClassLabel's own order), and the
    array mapping the scan's temporary ids to their index in that order."""
    names, remap = {}, {}
    for column, table in vocab.items():
        raw_names = list(table)
        integers = reader.numeric_labels and all(v.strip().lstrip("-").isdigit()
                                                 for v in raw_names)
        given = getattr(reader, "label_order", {}).get(column)  # a tfds ClassLabel's names
        names[column] = list(given) if given else sorted(
            raw_names, key=(lambda v: int(v)) if integers else None)
        remap[column] = np.array([names[column].index(v) for v in raw_names] or [0], np.int32)
    return names, remap


def _check_batch(raw, valid, problem, columns, kinds, vocab, is_test, number):
    """``(ok, ids, cause)`` for one batch of the scan: which rows are readable, their
    temporary label ids per column (regression: values), and ``cause(i)``: why row ``i`` is not."""
    ids, causes = {}, {}
    ok = np.asarray(valid, bool).copy()
    for column in columns:
        # each distinct label once: labels repeat, rows are many
        distinct, inverse = np.unique(np.asarray(raw[column], dtype=object), return_inverse=True)
        values = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
                  for v in distinct]
        if kinds[column] == "regression":
            good = np.array([number.fullmatch(v) is not None for v in values], bool)
            numbers = np.array([float(v) if g else 0.0 for v, g in zip(values, good)], np.float32)
            ids[column] = numbers[inverse]
            causes[column] = lambda i, c=column, g=good, v=values, inv=inverse: (
                "" if g[inv[i]] else f"column {c!r} is {excerpt(v[inv[i]])}, not a finite number "
                "(regression heads need numbers)")
            ok &= good[inverse]
            continue
        table, distinct_ids, why = vocab[column], [], {}
        for j, v in enumerate(values):
            if not v.strip():
                why[j] = f"column {column!r} has no label"
            elif is_test and v not in table and kinds[column] != "multilabel":  # label
                # sets unseen in training are fine: multi_hot checks each of their labels
                known = ", ".join(excerpt(k, 40) for k in list(table)[:20])
                why[j] = (f"label {excerpt(v, 40)} in column {column!r} does not occur in the "
                          f"training data (known: [{known}])")
            distinct_ids.append(-1 if j in why else table.setdefault(v, len(table)))
        ids[column] = np.array(distinct_ids, np.int64)[inverse]
        causes[column] = lambda i, w=why, inv=inverse: w.get(inv[i], "")
        ok &= ids[column] >= 0

    def cause(i):
        if not valid[i]:
            return problem(i)
        return next((c for c in (f(i) for f in causes.values()) if c), "it cannot be read")

    return ok, ids, cause
