"""A run's inputs: the preprocessor its model needs, adapted on the training split, and the
tf.data pipeline of each split (class weights applied, sharded under any strategy)."""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import numpy as np
import tensorflow as tf

from tfkit.config import (
    Config,
    ConfigError,
    auto_model,
    config_from_dict,
    input_kind_problem,
)
from tfkit.data import (
    INPUT_KINDS,
    LabeledData,
    add_vector_words,
)
from tfkit.models import model_inputs

log = logging.getLogger("tfkit")
AutoShardPolicy = tf.data.experimental.AutoShardPolicy


def make_preprocessor(config: Config, data: LabeledData):
    """The preprocessor the model's ``inputs`` kind needs, adapted on the training split.

    Raises:
        ConfigError: when the data cannot feed the model (say text data for ``image_cnn``).
    """
    name, inputs = config.model.name, model_inputs(config.model.name, config.model.params)
    x = data.train.sample(8).x  # what the inputs are: texts (and table columns), encoded
    is_text = x.dtype.names is not None or (  # images, arrays
        x.dtype == object and isinstance(x[0], str))
    given = "text" if is_text else ("encoded images" if x.dtype == object
                                    else f"arrays of shape {x.shape[1:]}")
    problem = input_kind_problem(name, config.model.params, config.data.source, is_text, given)
    if problem:  # tfds and tfrecord, which the config cannot tell
        raise ConfigError(problem)
    try:
        preprocessor = INPUT_KINDS[inputs].load().for_data(config, x)
    except ValueError as exc:
        raise ConfigError(f"model '{name}': {exc}") from None
    if data.streamed:  # one pass over the files (or the first data.adapt_limit examples)
        preprocessor.adapt(data.train.examples().map(lambda inputs, _: inputs),
                           config.data.adapt_limit)
    else:
        preprocessor.adapt(data.train.x, config.data.adapt_limit)
    extra = config.model.word_vectors_vocabulary
    if extra:  # words training never saw, which the vectors file knows
        size = preprocessor.vocab_size
        preprocessor = add_vector_words(preprocessor, config.model.word_vectors, extra)
        log.info("vocabulary: %d words from the training texts + %d from %s",
                 size, preprocessor.vocab_size - size, config.model.word_vectors)
    return preprocessor


DOCUMENT_SENTENCES = 2.0  # texts of at least this many sentences on average are documents


def data_kind(data: LabeledData) -> tuple[str, bool]:
    """What the inputs are: ``text``, ``image`` (encoded, or pixel arrays ``[n, h, w(, c)]``
    of integers) or ``sequence`` (numbers ``[n, steps, features]``); and whether the texts
    hold several sentences on average (documents, for a hierarchical model)."""
    x = data.train.sample(500).x
    if x.dtype.names is not None or (x.dtype == object and len(x) and isinstance(x[0], str)):
        texts = x["text"] if x.dtype.names else x
        ends = [len(re.findall(r"[.!?。！？]+(?:\s|$)", str(t))) or 1 for t in texts]
        return "text", bool(np.mean(ends) >= DOCUMENT_SENTENCES)
    if x.dtype == object or x.ndim == 4 or (x.ndim == 3 and np.issubdtype(x.dtype, np.integer)):
        return "image", False
    return "sequence", False


def resolve_model(config: Config, data: LabeledData) -> Config:
    """``model.name: auto`` that the source could not decide (numpy, tfds, tfrecord), chosen
    from the data (:func:`tfkit.config.auto_model`) and the whole config checked again.

    Raises:
        ConfigError: for arrays no model takes.
    """
    if config.model.name != "auto":
        return config
    kind, _ = data_kind(data)
    x = data.train.sample(1).x
    if kind == "sequence" and x.ndim != 3:
        raise ConfigError(f"model.name auto: no model takes arrays of shape {x.shape[1:]} "
                          "(images are [height, width(, channels)], sequences [steps, "
                          "features]); set model.name.")
    values = config.to_dict()
    values["model"]["name"] = auto_model(config, kind)
    log.info("model.name auto: %s for %s data", values["model"]["name"], kind)
    return config_from_dict(values)


# data.max_len auto: the training texts' length at this percentile, rounded up to a multiple
# of 8 and kept within MAX_LEN_LIMITS, for the model inputs that data.max_len cuts
LENGTH_PERCENTILE = 95
MAX_LEN_LIMITS = (8, 1000)
MAX_LEN_INPUTS = ("tokens", "text_table", "hub_text")
LENGTH_SAMPLE = 20_000  # training texts measured (the first ones of a larger split)
WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # what standardize_text keeps as one word


def text_lengths(texts, split: str = "whitespace") -> np.ndarray:
    """Tokens per text as the text preprocessors count them: words (letters and digits,
    apostrophes inside; punctuation splits), or non-space characters with ``character``.

    Examples:
        >>> text_lengths(["Great.Buy it", "don't", ""]).tolist()
        [3, 1, 0]
        >>> text_lengths(["美味しい !"], "character").tolist()
        [5]
    """
    if split == "character":
        return np.array([sum(not c.isspace() for c in str(t)) for t in texts])
    return np.array([len(WORDS.findall(str(t))) for t in texts])


def resolve_max_len(config: Config, data: LabeledData) -> tuple[Config, dict | None]:
    """``data.max_len: auto`` made a number from the training texts' lengths (the config to
    train with, and what was chosen, for ``metrics.json``); other configs as they are.

    Models that do not read ``data.max_len`` (documents, TF-IDF, images, sequences): it becomes
    200 (the number every earlier version had), recorded as nothing."""
    if config.data.max_len != "auto":
        return config, None
    if model_inputs(config.model.name, config.model.params) not in MAX_LEN_INPUTS:
        return dataclasses.replace(config, data=dataclasses.replace(config.data, max_len=200)), None
    x = data.train.sample(LENGTH_SAMPLE).x
    texts = x["text"] if x.dtype.names else x
    lengths = text_lengths(texts, config.data.split)
    at = float(np.percentile(lengths, LENGTH_PERCENTILE)) if len(lengths) else 0.0
    low, high = MAX_LEN_LIMITS
    value = int(min(high, max(low, 8 * math.ceil(at / 8))))
    log.info("data.max_len auto: %d tokens (the %dth percentile of %d training texts' lengths "
             "is %.0f; the longest %d)", value, LENGTH_PERCENTILE, len(lengths), at,
             int(lengths.max(initial=0)))
    chosen = {"value": value, "percentile": LENGTH_PERCENTILE, "length_at_percentile": at,
              "longest": int(lengths.max(initial=0)), "texts_measured": len(lengths)}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, max_len=value)), chosen


FEW_EXAMPLES = 5  # per class, in the validation or test split: fewer makes noisy scores


def warn_small_splits(data: LabeledData) -> list[str]:
    """Logs a warning for each class with fewer than ``FEW_EXAMPLES`` examples in the
    validation or test split (per classification head): its scores, the best epoch and the
    checks before publishing then rest on a handful of examples. Tiny data is fine for a try,
    so this is no error. Returns the warnings."""
    multitask = isinstance(data.label_names, dict)
    heads = data.label_names if multitask else {None: data.label_names}
    warnings = []
    for split_name, split in (("validation", data.validation), ("test", data.test)):
        if not len(split):
            continue
        for head, names in heads.items():
            if not names:
                continue
            y = split.y[head] if multitask else split.y
            counts = np.asarray(y).sum(axis=0) if data.multi_label else \
                np.bincount(np.asarray(y).astype(np.int64).reshape(-1), minlength=len(names))
            few = [f"{name!r} {count}" for name, count in zip(names, counts)
                   if count < FEW_EXAMPLES]
            if few:
                where = f"the {split_name} split" + (f" (head {head})" if head else "")
                warnings.append(f"{where} has fewer than {FEW_EXAMPLES} examples of "
                                f"{len(few)} class(es) ({', '.join(few[:5])}): its scores are noisy")
    for warning in warnings:
        log.warning("small data: %s", warning)
    return warnings


def class_weights(config: Config, data: LabeledData) -> np.ndarray | None:
    """``train.class_weight`` as one weight per label id, or None when it is not set.

    ``balanced``: ``n / (classes * count)`` over the training split (scikit-learn's
    definition: every class then weighs as much in the loss as the others); a mapping:
    ``{label name: weight}``, 1.0 for labels not named.

    Raises:
        ConfigError: naming a label that the data does not have.
    """
    setting = config.train.class_weight
    if setting is None:
        return None
    names = list(data.label_names)
    if setting == "balanced":
        counts = np.bincount(np.asarray(data.train.y).reshape(-1), minlength=len(names))
        return (counts.sum() / (len(names) * np.maximum(counts, 1))).astype(np.float32)
    unknown = sorted(str(label) for label in setting if str(label) not in names)
    if unknown:
        raise ConfigError(f"train.class_weight: no label {', '.join(map(repr, unknown))} in "
                          f"the data; its labels are {names}.")
    given = {str(label): float(weight) for label, weight in setting.items()}
    return np.array([given.get(name, 1.0) for name in names], np.float32)


def make_dataset(split, preprocessor, config: Config, batch_size: int, *, training: bool,
                 weights: np.ndarray | None = None, workers: int = 1, worker: int = 0):
    """The tf.data pipeline for one split (shuffled, and for text bucketed, as configured).

    ``weights`` (training, :func:`class_weights`): each example's sample weight is its
    label's weight (times 0 for the filler rows of full batches). Keras's
    ``fit(class_weight=...)`` does the same but refuses datasets that already carry sample
    weights, as full batches do.

    Under a multi-worker strategy (``workers`` pipelines, this one ``worker``), data in memory
    is sharded by element (auto-shard policy DATA: every worker builds the same pipeline and
    keeps its share of each global batch). The training split of streamed TFRecord files is
    sharded by file when there are at least as many files as workers: each worker opens only
    every ``workers``-th file (tfkit shards the file list itself: tf.data's FILE policy cannot
    find the files behind length bucketing), and the global batch is split across the
    workers as usual. Validation and test splits, and CSV files (read by Python, which
    tf.data cannot shard by file), are sharded by element.
    """
    policy = shard_policy(split, workers) if training else AutoShardPolicy.DATA
    if policy == AutoShardPolicy.FILE:
        split = dataclasses.replace(split, shard=(workers, worker))
    ds = preprocessor.dataset(split, batch_size, training=training, data=config.data)
    if training and split.streamed:  # one endless stream, reshuffled on every pass: fit
        ds = ds.repeat()  # counts an epoch in steps (each worker's share may differ)
    if weights is not None:
        table = tf.constant(weights)

        def weigh(x, y, sample_weight=1.0):
            labels = y[:, 0] if y.shape.rank == 2 and y.shape[-1] > 1 else y  # distillation
            return x, y, sample_weight * tf.gather(table, tf.reshape(tf.cast(labels, tf.int32),
                                                                     [-1]))

        ds = ds.map(weigh)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        AutoShardPolicy.OFF if policy == AutoShardPolicy.FILE else AutoShardPolicy.DATA)
    return ds.with_options(options)


def shard_policy(split, workers: int):
    """FILE for streamed TFRecord files at least as many as ``workers``, else DATA."""
    by_file = split.streamed and split.reader.shardable and len(split.files) >= workers
    return AutoShardPolicy.FILE if by_file and workers > 1 else AutoShardPolicy.DATA
