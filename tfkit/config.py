"""Experiment configuration: dataclasses loaded from YAML with ``--set`` overrides.

A config has four sections, ``data``, ``model``, ``train`` and ``export``, plus a
``name``. Unknown keys and values of the wrong type are errors that name the key
and suggest the closest valid one, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfkit.errors import excerpt


class ConfigError(ValueError):
    """A config file, key or value is not valid. The message says which and why."""


class SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (plain data only: no Python objects), reading ``1e-4`` and
    ``3E5`` as numbers, as YAML 1.2 does; PyYAML's YAML 1.1 rules make them strings without
    a dot (``1.0e-4``), so ``learning_rate: 1e-4`` failed as "must be float, got str"."""


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def safe_load(text: str):
    """``yaml.safe_load`` with :class:`SafeLoader`."""
    return yaml.load(text, Loader=SafeLoader)  # a SafeLoader: plain data, no Python objects


@dataclass
class DataConfig:
    """Where the examples come from and how they are turned into tensors.

    ``source`` is one of ``fine_foods`` (embedded reviews), ``digits`` (embedded 8x8
    images), ``csv``, ``tfds``, ``directory`` (text files), ``image_directory``,
    ``numpy`` (an ``.npz`` file).
    """

    source: str = "fine_foods"
    path: str | None = None  # csv: the training file; directory: the folder of class folders
    test_path: str | None = None  # csv/directory: a separate test file or folder
    encoding: str | None = None  # csv/tsv/jsonl: the files' text encoding (default UTF-8)
    name: str | None = None  # tfds: dataset name, e.g. imdb_reviews
    data_dir: str | None = None  # tfds: where prepared data lives
    train_split: str = "train"  # tfds split names
    test_split: str = "test"
    text_column: str = "text"  # csv/tfds feature holding the text (tfds: first text feature if absent)
    label_column: str = "label"
    # multi-task: {column: classification | regression}, one model head per column
    heads: dict | None = None
    # several labels per example (tags): the label column holds them separated by
    # label_separator ("poem|love"), or as a list in JSON Lines
    multi_label: bool = False
    label_separator: str = "|"
    # text plus table columns (model text_table): {column: kind}, kinds as keras.utils.FeatureSpace
    # names them (float_normalized, string_categorical, ...), and crosses [[column, column]]
    features: dict | None = None
    feature_crosses: list | None = None
    test_fraction: float = 0.2  # used when a source has no test split of its own
    validation_fraction: float = 0.1  # carved from train with `seed`
    seed: int = 42
    limit: int | None = None  # keep at most this many examples per split (quick runs)
    # text preprocessing (TextVectorization, adapted on the training split only)
    max_tokens: int = 20000
    # tokens kept per text; auto: the training texts' 95th percentile of length, rounded up to
    # a multiple of 8, between 8 and 1000 (recorded in the run's config.yaml and metrics.json)
    max_len: int | str = "auto"
    # whitespace: tokens are words; character: tokens are characters (Chinese, Japanese, Thai)
    split: str = "whitespace"
    # hierarchical models (han): sentences per document, words per sentence
    max_sentences: int = 16
    max_words: int = 40
    bucket_by_length: bool = True
    # reading: auto streams data that would take over 256 MB in memory through tf.data
    # (memory stays flat; ~12x a text file's bytes, images decoded), true always streams,
    # false reads the data into memory (csv, tfrecord, directory, image_directory, tfds)
    stream: str = "auto"
    compression: str | None = None  # tfrecord: GZIP | ZLIB | none (default: GZIP for *.gz)
    adapt_limit: int | None = None  # adapt the vocabulary on the first N training examples
    cache_dir: str | None = None  # streaming: cache token ids in files here (default: no cache)
    shuffle_buffer: int = 10000  # streaming: examples shuffled at a time (plus file order)
    skip_bad_records: int = 0  # skip up to N unreadable records or rows (counted), else stop
    # image preprocessing: the size and channels the model takes (default: the data's own)
    image_size: list | None = None  # [height, width]
    channels: int | None = None  # 1 (grey) or 3 (RGB)


@dataclass
class ModelConfig:
    """Which registered builder to call and its keyword arguments."""

    # a registered model, or auto: chosen from the data (text_linear for text, image_cnn for
    # images, sequence_lstm for sequences; multitask with data.heads, text_table with
    # data.features), recorded in the run's config.yaml
    name: str = "auto"
    params: dict = field(default_factory=dict)
    # text models: start the word embedding from pre-trained vectors (GloVe .txt, fastText .vec)
    word_vectors: str | None = None
    freeze_word_vectors: bool = False  # keep those vectors as they are (trainable = False)
    # add the file's first N words that training lacks to the vocabulary: unseen words then
    # get their vectors instead of the out-of-vocabulary id
    word_vectors_vocabulary: int = 0


@dataclass
class TrainConfig:
    """How ``model.fit`` runs."""

    epochs: int = 100  # the most epochs: training stops earlier when the monitor stops improving
    batch_size: int = 32  # per replica; the global batch is batch_size * replicas
    # a number, or auto: a learning-rate range test on a copy of the model picks it (a tenth of
    # the rate where the training loss fell lowest; recorded in config.yaml and metrics.json)
    learning_rate: float | str = "auto"
    # constant | cosine | linear: cosine and linear decay learning_rate to 0 over the run's steps
    lr_schedule: str = "constant"
    # epochs over which the rate first rises linearly from 0 to learning_rate (then lr_schedule
    # applies); auto: 1 with learning_rate: auto, else 0 (recorded in config.yaml)
    warmup_epochs: float | str = "auto"
    optimizer: str = "adam"
    strategy: str = "auto"
    devices: list | None = None  # mirrored/one_device: e.g. ["/gpu:0", "/gpu:1"] (default: all GPUs)
    tf_config: dict | None = None  # multi_worker: the TF_CONFIG dict, when not set in the environment
    tpu: str | None = None  # tpu: "local" on a TPU VM, or the TPU name (default: $TPU_NAME)
    scale_learning_rate: bool = False  # multiply learning_rate by the number of replicas
    mixed_precision: str = "none"  # none | mixed_float16 (GPU) | mixed_bfloat16 (TPU, recent CPUs)
    jit_compile: str = "auto"  # auto | true | false: XLA-compile the train step
    # what picks the best checkpoint (and early stopping): val_loss | val_accuracy | val_macro_f1
    # | val_micro_f1 (several labels per example)
    # what picks the best epoch and stops training; auto: val_accuracy (one label per
    # example), val_micro_f1 (several), val_loss (multi-task heads, or no validation split)
    monitor: str = "auto"
    # stop when the monitor has not improved for this many epochs (the best epoch's weights
    # are kept either way; null: train every one of train.epochs)
    early_stopping_patience: int | None = 3
    loss_weights: dict | None = None  # multi-task: {head: weight}, 1.0 for heads not named
    # single-task classifiers: "balanced" (n / (classes x count), from the training split) or
    # {label: weight}, 1.0 for labels not named; weights the training loss, not validation/test
    class_weight: str | dict | None = None
    steps_per_epoch: int | None = None
    steps_per_execution: int = 1  # train steps per tf.function call (>1: fewer Python round trips)
    # write the backup a crashed run resumes from (model and optimizer state) at the end of an
    # epoch at most every N seconds (0: every epoch; multi-worker training: every epoch)
    backup_seconds: float = 60.0
    runs_dir: str = "runs"
    run_name: str | None = None  # run folder name (default: a timestamp); an unfinished one resumes
    seed: int = 42
    verbose: str = "auto"  # model.fit: 0, 1, 2; auto: 1 on a terminal or in a notebook, else 2
    # weight histograms (Histograms and Distributions tabs) every N epochs; 0: none (the
    # default: on the fastText default preset they cost ~1 s per epoch for its 5M weights)
    histogram_freq: int = 0
    # [start, stop]: trace these training batches (1-based, counted over the run) with the
    # TensorFlow profiler, for TensorBoard's Profile tab (pip install tensorboard-plugin-profile)
    profile_batch: list | None = None
    # knowledge distillation: a trained classifier (a finished run folder, or a SavedModel:
    # saved_models/<name> or one version) whose probabilities on the training split, softened
    # by distill_temperature, are mixed with the true labels: loss = (1 - distill_alpha) x
    # cross-entropy + distill_alpha x temperature^2 x KL(teacher || student)
    teacher: str | None = None
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    # pretrained backbones (image_backbone, hub_text): start from a finished run's weights
    # (same model and data), with the top unfreeze_layers layers of the backbone trainable
    # (-1: all; BatchNormalization stays frozen); fine_tune_epochs > 0 runs the usual second
    # stage after this run: a new run from its weights, unfreeze_layers (default -1: all)
    # unfrozen, fine_tune_learning_rate, only the second stage exported
    init_from: str | None = None
    unfreeze_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    # classifiers: fit a linear model (logistic regression on TF-IDF words and word pairs, or
    # on the values of arrays) on the same split and report its test score beside the run's
    baseline: bool = True


@dataclass
class ExportConfig:
    """Where the SavedModel for TF Serving goes."""

    enabled: bool = True
    base_dir: str = "saved_models"
    name: str | None = None  # defaults to the config name
    serving_root: str = "/models"  # where TF Serving sees base_dir (models.config base paths)
    # publish only a model that passes the checks: finite loss, accuracy above always answering
    # the most frequent label, and not worse than the version already served (see below)
    blessing: bool = True
    # how much lower (accuracy, 0..1) than the served version's on this run's test split a new
    # model may score and still be published
    max_regression: float = 0.02
    # image models: the served model refuses an image whose header says it has more pixels
    # (width x height) than this, before decoding it (a small file can hold a huge image)
    max_image_pixels: int = 50_000_000
    # "int8": the served model's Dense, EinsumDense and Embedding weights as int8 (Keras's own
    # model.quantize), checked against the float model on the test split before it is
    # published; the run's model.keras stays float
    quantize: str = "none"


@dataclass
class TuneConfig:
    """How ``tfkit tune`` searches (the other sections are every trial's starting point)."""

    budget: str = "15m"  # the search's wall time: 90s, 15m, 2h, 1h30m
    max_trials: int = 30  # at most this many trials, even with time left
    algorithm: str = "bayesian"  # bayesian | random: KerasTuner's oracle
    # the model families searched (default: those that fit the data, each with its own
    # parameters); e.g. [text_linear, text_cnn]
    models: list | None = None
    # more keys to search, or other values for the default ones: {config key: [values] or
    # {min, max, sampling: log | linear}}, e.g. {train.learning_rate: {min: 0.0003, max: 0.03,
    # sampling: log}, model.params.head_dropout: [0.0, 0.5]}
    space: dict | None = None


@dataclass
class Config:
    """A whole experiment: ``name`` plus the four sections (and ``tune``, for ``tfkit tune``)."""

    name: str = "fine_foods_text_lstm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        """Returns the config as plain YAML-safe data."""
        return dataclasses.asdict(self)


DEFAULT_PRESET = "fine_foods_fasttext"
LR_SCHEDULES = ("constant", "cosine", "linear")
# the keys of tfkit.compiling.OPTIMIZERS and tfkit.data.text.SPLITS (checked by the tests):
# named here so that checking a config does not import TensorFlow
OPTIMIZERS = ("adam", "lazy_adam", "adamw", "sgd", "rmsprop")
SPLITS = ("whitespace", "character")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("none", "int8")  # export.quantize
MAX_DISTILL_TEMPERATURE = 100.0  # train.distill_temperature: softer than this is only noise
JIT_CHOICES = ("auto", "true", "false")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1", "val_micro_f1")  # micro: label sets
ALGORITHMS = ("bayesian", "random")  # tune.algorithm: KerasTuner's oracles
DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
HEAD_KINDS = ("classification", "regression")  # data.heads values
# model.name auto: the model for each kind of data (tfkit.datasets.data_kind)
AUTO_MODELS = {"text": "text_linear", "image": "image_cnn", "sequence": "sequence_lstm"}
IMAGE_SOURCES = ("digits", "image_directory")
WORD_VECTOR_INPUTS = ("tokens", "documents", "text_table")  # inputs of a word embedding
# data.source -> the optional data keys it reads (setting one for a source that ignores it is
# an error: a data.test_path the embedded sets would silently ignore, say), the keys it
# cannot do without, and what it gives the model (text, or arrays: images, sequences)
SOURCE_KEYS = {"fine_foods": (), "tate": (), "digits": (),
               "csv": ("path", "test_path", "encoding"), "directory": ("path", "test_path"),
               "image_directory": ("path", "test_path"), "numpy": ("path",),
               "tfds": ("name", "data_dir"), "tfrecord": ("path", "test_path", "compression")}
SOURCE_NEEDS = {"csv": ("path", "the CSV file"), "directory": ("path", "the folder"),
                "image_directory": ("path", "the folder of class folders"),
                "numpy": ("path", "the .npz file"),
                "tfds": ("name", "the tensorflow-datasets dataset"),
                "tfrecord": ("path", "the TFRecord files (a glob such as data/train-*)")}
STREAM_CHOICES = ("auto", "true", "false")
STREAM_SOURCES = ("csv", "tfrecord", "directory", "image_directory", "tfds")  # data.stream
COMPRESSIONS = ("GZIP", "ZLIB", "none")
TEXT_SOURCES = ("fine_foods", "tate", "csv", "directory")
ARRAY_SOURCES = ("digits", "image_directory", "numpy")  # tfds, tfrecord: text or images
# a name that becomes one folder: runs/<name>/<run_name>, saved_models/<export.name>
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """Returns ``value`` if it fits the type hint ``hint`` (ints are accepted as floats)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        options = [t for t in options if t is not type(None)]
        if len(options) > 1:  # e.g. str | dict: the first that fits
            for option in options:
                with contextlib.suppress(ConfigError):
                    return _check_type(where, value, option)
            raise ConfigError(f"{where} must be {' or '.join(t.__name__ for t in options)}, "
                              f"got {type(value).__name__} {value!r}.")
        hint = options[0]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {str: str, int: int, float: float, bool: bool, dict: dict, list: list}[hint]
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if hint is str and isinstance(value, bool):
        return str(value).lower()  # e.g. jit_compile: true
    if hint is str and isinstance(value, int):
        return str(value)  # e.g. verbose: 2
    if not ok:
        raise ConfigError(
            f"{where} must be {expected.__name__}, got {type(value).__name__} {value!r}."
        )
    return value


def _build(cls, values: Any, where: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"Unknown config key '{full}'.{_suggest(str(key), names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, full)
        else:
            kwargs[key] = _check_type(full, value, hint)
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    """Builds a :class:`Config` from nested dicts, refusing unknown keys and bad types.

    Args:
        values: e.g. ``{"model": {"name": "text_gru"}, "train": {"epochs": 2}}``.

    Returns:
        The config, with defaults for everything not given.

    Raises:
        ConfigError: naming the bad key or value.

    Examples:
        >>> config_from_dict({"train": {"epochs": 2}}).train.epochs
        2
    """
    config = _build(Config, values, "")
    name = auto_model(config)
    if name:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, name=name))
    monitor = auto_monitor(config)
    if monitor:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                       monitor=monitor))
    _validate(config)
    return config


def auto_monitor(config: Config) -> str | None:
    """The monitor ``train.monitor: auto`` stands for: the score a user reads, where each
    epoch has one (``val_accuracy``; ``val_micro_f1`` for several labels per example), else
    ``val_loss`` (multi-task heads, or no validation split); None when it is not auto.

    Examples:
        >>> auto_monitor(Config())
        'val_accuracy'
    """
    if config.train.monitor != "auto":
        return None
    return score_monitor(config.data)


def score_monitor(data: DataConfig) -> str:
    """The validation score of ``data``'s targets a user reads: ``val_accuracy`` (one label per
    example), ``val_micro_f1`` (several), ``val_loss`` (multi-task heads; or no validation
    split, where Keras falls back to the training loss). What ``train.monitor: auto`` stands
    for, and what ``tfkit tune`` ranks trials by."""
    if data.heads or data.validation_fraction == 0:
        return "val_loss"
    return "val_micro_f1" if data.multi_label else "val_accuracy"


def warmup_epochs(train: TrainConfig) -> float:
    """``train.warmup_epochs`` as a number: auto is 1 epoch with ``learning_rate: auto`` (the
    range test's rate, a tenth of the largest that still trains, is better reached than
    started at), else 0 (a configured rate starts at once, as it always did).

    Examples:
        >>> warmup_epochs(TrainConfig()), warmup_epochs(TrainConfig(learning_rate=0.001))
        (1.0, 0.0)
    """
    if train.warmup_epochs != "auto":
        return float(train.warmup_epochs)
    return 1.0 if train.learning_rate == "auto" else 0.0


def monitor_direction(monitor: str) -> str:
    """``"min"`` for a loss (``val_loss``, a head's loss: lower is better), ``"max"`` for a
    score (accuracy, F1): how the best epoch, early stopping and a sweep's or tune's ranking
    read ``monitor``.

    Examples:
        >>> monitor_direction("val_loss"), monitor_direction("val_micro_f1")
        ('min', 'max')
    """
    return "min" if monitor.endswith("loss") else "max"


def auto_model(config: Config, kind: str | None = None) -> str | None:
    """The model ``model.name: auto`` stands for: ``multitask`` with ``data.heads``,
    ``text_table`` with ``data.features``, else :data:`AUTO_MODELS` for the data's ``kind``
    (known from ``data.source``, or given: ``text``, ``image``, ``sequence``); None when the
    name is not auto or the kind is not known yet (numpy, tfds, tfrecord: from the data)."""
    if config.model.name != "auto":
        return None
    if config.data.heads:
        return "multitask"
    if config.data.features:
        return "text_table"
    if kind is None:
        kind = ("text" if config.data.source in TEXT_SOURCES else
                "image" if config.data.source in IMAGE_SOURCES else None)
    return AUTO_MODELS.get(kind)


def check_name(key: str, value: str | None) -> None:
    """A name that tfkit turns into one folder (a run's, a served model's) must be one safe
    path component: letters, digits, ``.``, ``_``, ``-``, and not ``.`` or ``..``.

    Raises:
        ConfigError: naming ``key`` and what is allowed.
    """
    if value is None:
        return
    if not NAME_PATTERN.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{key} must be one folder name: letters, digits, '.', '_' and '-', "
                          f"not '.' or '..'; got {excerpt(value)}.")


def data_source_problem(d: DataConfig) -> str | None:
    """What is wrong with ``data.source`` and the keys that go with it, or None: an unknown
    source, a key the source does not read, or one it cannot do without. Checked by
    :func:`config_from_dict` (``tfkit config`` too) and again by ``load_data``."""
    if d.source not in SOURCE_KEYS:
        close = difflib.get_close_matches(str(d.source), list(SOURCE_KEYS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (f"Unknown data.source {excerpt(d.source)}; expected one of "
                f"{', '.join(SOURCE_KEYS)}.{hint}")
    for key in ("path", "test_path", "encoding", "name", "data_dir", "compression"):
        if getattr(d, key) is not None and key not in SOURCE_KEYS[d.source]:
            readers = [source for source, keys in SOURCE_KEYS.items() if key in keys]
            return (f"data.{key} is set ({excerpt(getattr(d, key))}) but data.source "
                    f"'{d.source}' does not read it; it is read by {', '.join(readers)}.")
    if d.source in SOURCE_NEEDS:
        key, what = SOURCE_NEEDS[d.source]
        if not getattr(d, key):
            return f"data.{key} must name {what} when data.source is '{d.source}'."
    if str(d.stream).lower() not in STREAM_CHOICES:
        return f"data.stream must be one of {', '.join(STREAM_CHOICES)}, got {excerpt(d.stream)}."
    if str(d.stream).lower() == "true" and d.source not in STREAM_SOURCES:
        return (f"data.stream is true but data.source '{d.source}' is read into memory; the "
                f"sources that stream are {', '.join(STREAM_SOURCES)} (tfkit convert writes any "
                "source as TFRecord files).")
    if d.compression is not None and d.compression not in COMPRESSIONS:
        return (f"data.compression must be one of {', '.join(COMPRESSIONS)}, "
                f"got {excerpt(d.compression)}.")
    for key in ("adapt_limit", "shuffle_buffer"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            return f"data.{key} must be at least 1, got {getattr(d, key)!r}."
    if d.skip_bad_records < 0:
        return f"data.skip_bad_records must be 0 or more, got {d.skip_bad_records!r}."
    return None


def _validate(config: Config) -> None:
    check_name("name", config.name)
    check_name("train.run_name", config.train.run_name)
    check_name("export.name", config.export.name)
    problem = data_source_problem(config.data)
    if problem:
        raise ConfigError(problem)
    m = config.model
    if m.name == "auto":  # chosen when the data is read (numpy, tfds, tfrecord)
        if m.params or m.word_vectors:
            raise ConfigError("model.params and model.word_vectors need a model.name: with "
                              f"model.name auto (data.source '{config.data.source}') the model "
                              "is chosen from the data.")
    else:
        _validate_model(config)
    choices = {"data.split": (config.data.split, SPLITS),
               "train.optimizer": (config.train.optimizer, OPTIMIZERS),
               "train.lr_schedule": (config.train.lr_schedule, LR_SCHEDULES),
               "train.strategy": (config.train.strategy, STRATEGIES),
               "train.mixed_precision": (config.train.mixed_precision, PRECISIONS),
               "train.jit_compile": (str(config.train.jit_compile).lower(), JIT_CHOICES),
               "train.monitor": (config.train.monitor, ("auto",) + MONITORS),
               "export.quantize": (config.export.quantize, QUANTIZE_MODES)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}.{hint}")
    if m.name != "auto":
        _validate_heads(config)
        _validate_multi_label(config)
        _validate_features(config)
        _validate_inputs(config)
    _validate_ranges(config)
    _validate_tune(config)


def _validate_model(config: Config) -> None:
    """model.name and model.params against the registry; the word vectors settings."""
    from tfkit.data.kinds import TEXT_INPUTS
    from tfkit.models import check_model_params, model_inputs  # late: models must not import config

    m = config.model
    try:
        check_model_params(m.name, m.params)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    inputs = model_inputs(m.name, m.params)
    if m.word_vectors is not None and inputs not in WORD_VECTOR_INPUTS:
        what = "text models" if inputs not in TEXT_INPUTS else "models with a word embedding"
        raise ConfigError(f"model.word_vectors is for {what}; model '{m.name}' reads "
                          f"{inputs}.")
    for key, value in (("freeze_word_vectors", m.freeze_word_vectors),
                       ("word_vectors_vocabulary", m.word_vectors_vocabulary)):
        if value and m.word_vectors is None:
            raise ConfigError(f"model.{key} is set but model.word_vectors is not: "
                              "name the vectors file (GloVe .txt, fastText .vec).")
    if m.word_vectors_vocabulary < 0:
        raise ConfigError("model.word_vectors_vocabulary must be >= 0 (words to add), "
                          f"got {m.word_vectors_vocabulary!r}.")


def parse_budget(text) -> float:
    """A duration such as ``90s``, ``15m``, ``2h`` or ``1h30m`` (or a number of seconds) in
    seconds.

    Raises:
        ConfigError: for a duration that is not one, or not above 0.

    Examples:
        >>> parse_budget("15m"), parse_budget("1h30m"), parse_budget(90)
        (900.0, 5400.0, 90.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) or \
            re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", str(text)):
        seconds = float(text)
    else:
        match = DURATION.fullmatch(str(text).strip().lower())
        if not match or not any(match.groups()):
            raise ConfigError(f"tune.budget must be a duration such as 90s, 15m, 2h or 1h30m; "
                              f"got {excerpt(text)}.")
        hours, minutes, secs = (float(g or 0) for g in match.groups())
        seconds = 3600 * hours + 60 * minutes + secs
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"tune.budget must be above 0 seconds; got {excerpt(text)}.")
    return seconds



def space_entry(key: str, spec) -> dict:
    """One ``tune.space`` entry: ``[values]`` -> ``{"values"}``; ``{min, max, sampling}`` ->
    ``{"low", "high", "log"}``.

    Raises:
        ConfigError: naming the key and what is allowed.

    Examples:
        >>> space_entry("train.learning_rate", {"min": 1e-4, "max": 1e-2, "sampling": "log"})
        {'low': 0.0001, 'high': 0.01, 'log': True}
    """
    where = f"tune.space.{key}"
    if isinstance(spec, list) and spec and all(
            isinstance(v, (str, int, float, bool)) for v in spec):
        return {"values": list(spec)}
    if isinstance(spec, dict) and set(spec) <= {"min", "max", "sampling"} and \
            {"min", "max"} <= set(spec):
        low, high, sampling = spec["min"], spec["max"], spec.get("sampling", "linear")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high or sampling not in ("log", "linear") or (
                sampling == "log" and low <= 0):
            raise ConfigError(f"{where}: a range needs numbers min < max (min > 0 for "
                              f"sampling: log) and sampling log or linear; got {excerpt(spec)}.")
        return {"low": low, "high": high, "log": sampling == "log"}
    raise ConfigError(f"{where} must be a list of values ([16, 32]) or a range "
                      f"({{min: 0.0001, max: 0.01, sampling: log}}); got {excerpt(spec)}.")


def _validate_tune(config: Config) -> None:
    """The ``tune`` section's own values (the search space against the models and the data
    is checked by ``tfkit tune``, before its first trial)."""
    t = config.tune
    if t.algorithm not in ALGORITHMS:
        raise ConfigError(f"tune.algorithm must be one of {', '.join(ALGORITHMS)}; "
                          f"got {excerpt(t.algorithm)}.")
    if t.max_trials < 1:
        raise ConfigError(f"tune.max_trials must be >= 1, got {t.max_trials!r}.")
    parse_budget(t.budget)
    if t.space is not None and not isinstance(t.space, dict):
        raise ConfigError(f"tune.space must be a mapping {{config key: values}}, got {excerpt(t.space)}.")
    for key, spec in (t.space or {}).items():
        space_entry(key, spec)


def _validate_ranges(config: Config) -> None:
    """Numbers and lists whose values cannot work: fractions, counts, the learning rate..."""
    d, t = config.data, config.train
    if not 0.0 <= d.validation_fraction < 1.0:
        raise ConfigError("data.validation_fraction must be in [0, 1) (0: no validation "
                          f"split), got {d.validation_fraction!r}.")
    if not 0.0 < d.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction must be in (0, 1), got {d.test_fraction!r}.")
    if d.validation_fraction + d.test_fraction >= 1.0:
        raise ConfigError(f"data.validation_fraction ({d.validation_fraction}) + "
                          f"data.test_fraction ({d.test_fraction}) must be below 1: no "
                          "training examples would be left.")
    if t.learning_rate == "auto":
        for key, refused in (("train.strategy", t.strategy in ("multi_worker", "tpu")),
                             ("train.scale_learning_rate", t.scale_learning_rate)):
            if refused:
                raise ConfigError(f"train.learning_rate: auto is not offered with {key} "
                                  f"{getattr(t, key[6:])!r} (the range test runs on one process "
                                  "and finds the rate of the global batch); set a number.")
    elif isinstance(t.learning_rate, str) or not (math.isfinite(t.learning_rate)
                                                  and t.learning_rate > 0):
        raise ConfigError(f"train.learning_rate must be a finite number > 0 or auto, got "
                          f"{excerpt(t.learning_rate)}.")
    if t.warmup_epochs != "auto" and (isinstance(t.warmup_epochs, str) or not (
            math.isfinite(t.warmup_epochs) and t.warmup_epochs >= 0)):
        raise ConfigError("train.warmup_epochs must be a finite number >= 0 (0: no warm-up) "
                          f"or auto, got {excerpt(t.warmup_epochs)}.")
    if t.monitor != "val_loss" and d.heads:
        raise ConfigError(f"train.monitor '{t.monitor}': a multi-task model has per-head "
                          "metrics; use val_loss (the weighted sum of the heads' losses).")
    if t.monitor != "val_loss" and d.validation_fraction == 0:
        raise ConfigError(f"train.monitor '{t.monitor}' needs a validation split "
                          "(data.validation_fraction > 0); val_loss falls back to the "
                          "training loss.")
    e = config.export
    if not (math.isfinite(e.max_regression) and 0.0 <= e.max_regression <= 1.0):
        raise ConfigError("export.max_regression must be in [0, 1] (accuracy a new version may "
                          f"lose against the served one), got {e.max_regression!r}.")
    if e.max_image_pixels < 1:
        raise ConfigError(f"export.max_image_pixels must be >= 1, got {e.max_image_pixels!r}.")
    if isinstance(d.max_len, str) and d.max_len != "auto":
        raise ConfigError(f"data.max_len must be a number of tokens >= 1 or auto, got "
                          f"{excerpt(d.max_len)}.")
    for key, value in (("train.epochs", t.epochs), ("train.batch_size", t.batch_size),
                       ("train.steps_per_execution", t.steps_per_execution),
                       ("data.max_tokens", d.max_tokens),
                       ("data.max_len", 1 if d.max_len == "auto" else d.max_len),
                       ("data.max_sentences", d.max_sentences), ("data.max_words", d.max_words)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value!r}.")
    if d.image_size is not None and (len(d.image_size) != 2 or not all(
            isinstance(v, int) and v >= 1 for v in d.image_size)):
        raise ConfigError(f"data.image_size must be [height, width] in pixels, got {d.image_size!r}.")
    if d.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels must be 1, 3 or null, got {d.channels!r}.")
    if d.limit is not None and d.limit < 1:
        raise ConfigError(f"data.limit must be >= 1 or null, got {d.limit!r}.")
    _validate_train_ranges(config)


def _validate_train_ranges(config: Config) -> None:
    """``train`` numbers that cannot work: backups, distillation, fine-tuning, logging."""
    t = config.train
    if not (math.isfinite(t.backup_seconds) and t.backup_seconds >= 0):
        raise ConfigError("train.backup_seconds must be 0 (a backup every epoch) or more, "
                          f"got {t.backup_seconds!r}.")
    if not (math.isfinite(t.distill_temperature)
            and 0 < t.distill_temperature <= MAX_DISTILL_TEMPERATURE):
        raise ConfigError("train.distill_temperature must be a finite number > 0 and at most "
                          f"{MAX_DISTILL_TEMPERATURE:g} (1: the teacher's probabilities as they "
                          "are; higher: softer; beyond that both are uniform to float precision "
                          "and temperature² multiplies rounding noise), got "
                          f"{t.distill_temperature!r}.")
    if not (math.isfinite(t.distill_alpha) and 0.0 <= t.distill_alpha <= 1.0):
        raise ConfigError("train.distill_alpha must be in [0, 1] (the teacher's share of the "
                          f"loss), got {t.distill_alpha!r}.")
    if t.unfreeze_layers < -1:
        raise ConfigError(f"train.unfreeze_layers must be -1 (all), 0 (none) or a number of "
                          f"layers, got {t.unfreeze_layers!r}.")
    if t.fine_tune_epochs < 0:
        raise ConfigError(f"train.fine_tune_epochs must be >= 0, got {t.fine_tune_epochs!r}.")
    if not (math.isfinite(t.fine_tune_learning_rate) and t.fine_tune_learning_rate > 0):
        raise ConfigError("train.fine_tune_learning_rate must be a finite number > 0, got "
                          f"{t.fine_tune_learning_rate!r}.")
    if t.fine_tune_epochs and t.init_from:
        raise ConfigError("train.fine_tune_epochs runs the second stage from this run; with "
                          "train.init_from this run is already one: set one of them.")
    if t.histogram_freq < 0:
        raise ConfigError(f"train.histogram_freq must be >= 0 (0: no histograms), "
                          f"got {t.histogram_freq!r}.")
    root = config.export.serving_root
    if not (root.startswith("/") or re.match(r"[a-z][a-z0-9+.-]*://", root)):
        raise ConfigError("export.serving_root must be the absolute path (or a URL such as "
                          "gs://bucket/models) at which TF Serving sees export.base_dir; "
                          f"got {root!r}.")
    if t.verbose not in ("auto", "0", "1", "2"):
        raise ConfigError(f"train.verbose must be one of auto, 0, 1, 2; got {t.verbose!r}.")
    if t.profile_batch is not None and not (
            len(t.profile_batch) == 2
            and all(type(v) is int for v in t.profile_batch)
            and 1 <= t.profile_batch[0] <= t.profile_batch[1]):
        raise ConfigError("train.profile_batch must be [start, stop], training batches counted "
                          f"from 1 over the run with start <= stop, or null; got {t.profile_batch!r}.")


def _validate_inputs(config: Config) -> None:
    """The source gives what the model reads: text models need a text source, image and
    sequence models an array source (tfds may give either: checked when its data is read)."""
    source = config.data.source
    if source in TEXT_SOURCES + ARRAY_SOURCES:
        problem = input_kind_problem(config.model.name, config.model.params, source,
                                     source in TEXT_SOURCES)
        if problem:
            raise ConfigError(problem)


def input_kind_problem(name: str, params: dict, source: str, gives_text: bool,
                       given: str | None = None) -> str | None:
    """What is wrong when model ``name`` reads text and the source gives arrays (``given``
    describes them) or the reverse; None when they fit."""
    from tfkit.data.kinds import TEXT_INPUTS
    from tfkit.models import MODELS, model_inputs

    inputs = model_inputs(name, params)
    if (inputs in TEXT_INPUTS) == gives_text:
        return None
    fits = [n for n, entry in MODELS.items()
            if entry.inputs != "encoder" and (entry.inputs in TEXT_INPUTS) == gives_text]
    kind = "text" if gives_text else "arrays"
    return (f"model '{name}' takes {'text' if inputs in TEXT_INPUTS else inputs} inputs, but "
            f"data.source '{source}' gives {given or kind}. Models that take {kind}: "
            f"{', '.join(fits)} (model.name).")


def _validate_heads(config: Config) -> None:
    """data.heads, train.loss_weights and the multitask model go together; train.class_weight
    is for single-task classifiers (its labels are checked against the data in training)."""
    heads, weights = config.data.heads, config.train.loss_weights
    multitask = config.model.name == "multitask"
    if multitask and not heads:
        raise ConfigError("model 'multitask' needs data.heads, e.g. "
                          "{medium_family: classification, year: regression}.")
    if heads and not multitask:
        raise ConfigError(f"data.heads is set, but model '{config.model.name}' has one output; "
                          "use model.name: multitask (or drop data.heads).")
    for head, kind in (heads or {}).items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(head)):
            raise ConfigError(f"data.heads: head name {head!r} must be letters, digits and _ "
                              "(it names a model output and a serving output).")
        if kind not in HEAD_KINDS:
            raise ConfigError(f"data.heads.{head} must be one of {', '.join(HEAD_KINDS)}; "
                              f"got {kind!r}.")
    class_weight = config.train.class_weight
    if class_weight is not None:
        if heads:
            raise ConfigError("train.class_weight is for single-task classifiers; with "
                              "data.heads weigh the heads with train.loss_weights.")
        if isinstance(class_weight, str) and class_weight != "balanced":
            raise ConfigError("train.class_weight must be 'balanced', a mapping "
                              f"{{label: weight}} or null; got {class_weight!r}.")
        for label, weight in (class_weight if isinstance(class_weight, dict) else {}).items():
            _check_weight(f"train.class_weight.{label}", weight)
    for head, weight in (weights or {}).items():
        if head not in (heads or {}):
            raise ConfigError(f"train.loss_weights.{head}: no such head{_suggest(head, heads or {})}")
        _check_weight(f"train.loss_weights.{head}", weight)


MULTI_LABEL_SOURCES = ("tate", "csv", "tfrecord")  # sources whose label column is free text
# data.features kinds: keras.utils.FeatureSpace's own names
FEATURE_KINDS = ("float", "float_normalized", "float_discretized", "string_categorical",
                 "integer_categorical", "string_hashed", "integer_hashed")
CROSSABLE_KINDS = ("float_discretized", "string_categorical", "integer_categorical",
                   "string_hashed", "integer_hashed")  # integer ids a hashed cross combines
TABLE_SOURCES = ("csv", "tate")  # sources that read table columns (data.features)


def _validate_features(config: Config) -> None:
    """data.features / data.feature_crosses and the text_table model go together."""
    d = config.data
    table_model = config.model.name == "text_table"
    if table_model and not d.features:
        raise ConfigError("model 'text_table' needs data.features, the table columns beside the "
                          "text, e.g. {price: float_normalized, category: string_categorical}.")
    if not d.features:
        if d.feature_crosses:
            raise ConfigError("data.feature_crosses needs data.features.")
        return
    if not table_model:
        raise ConfigError(f"data.features is set, but model '{config.model.name}' reads only "
                          "the text; use model.name: text_table (or drop data.features).")
    if d.source not in TABLE_SOURCES:
        raise ConfigError(f"data.features: data.source '{d.source}' has no table columns; "
                          f"use {' or '.join(TABLE_SOURCES)}.")
    if str(d.stream).lower() == "true":
        raise ConfigError("data.features: text with table columns is read into memory; set "
                          "data.stream: auto or false.")
    for key, value in (("train.teacher", config.train.teacher),
                       ("export.quantize", config.export.quantize != "none")):
        if value:
            raise ConfigError(f"{key} is not offered with data.features (text with table "
                              "columns) yet; drop one of them.")
    if not isinstance(d.features, dict):
        raise ConfigError(f"data.features must be a mapping {{column: kind}}, got {excerpt(d.features)}.")
    reserved = {"text", "examples", "inputs", d.text_column, d.label_column}
    for column, kind in d.features.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(column)) or column in reserved:
            raise ConfigError(f"data.features: column name {excerpt(column)} must be letters, "
                              "digits and _ (it names a serving input), and not the text or "
                              "label column.")
        if kind not in FEATURE_KINDS:
            close = difflib.get_close_matches(str(kind), FEATURE_KINDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"data.features.{column} must be one of {', '.join(FEATURE_KINDS)}; "
                              f"got {excerpt(kind)}.{hint}")
    for cross in d.feature_crosses or []:
        if not isinstance(cross, list) or len(cross) < 2:
            raise ConfigError(f"data.feature_crosses: each cross is a list of 2 or more "
                              f"columns, got {excerpt(cross)}.")
        for column in cross:
            if d.features.get(column) not in CROSSABLE_KINDS:
                raise ConfigError(f"data.feature_crosses: {excerpt(column)} must be a column of "
                                  f"data.features of kind {', '.join(CROSSABLE_KINDS)}.")


def _validate_multi_label(config: Config) -> None:
    """data.multi_label: a source with a free-text label column, one output, and none of the
    settings that need one label per example."""
    d, t = config.data, config.train
    if not isinstance(d.label_separator, str) or not d.label_separator:
        raise ConfigError("data.label_separator must be a non-empty string such as '|' or ','; "
                          f"got {d.label_separator!r}.")
    if not d.multi_label:
        if t.monitor == "val_micro_f1":
            raise ConfigError("train.monitor 'val_micro_f1' is for several labels per example "
                              "(data.multi_label); use val_loss, val_accuracy or val_macro_f1.")
        return
    if d.source not in MULTI_LABEL_SOURCES:
        raise ConfigError(f"data.multi_label: data.source '{d.source}' has one label per "
                          f"example; multi-label data comes from {', '.join(MULTI_LABEL_SOURCES)}.")
    refused = {"data.heads": d.heads, "train.class_weight": t.class_weight,
               "train.teacher": t.teacher,
               "export.quantize": None if config.export.quantize == "none" else "int8"}
    for key, value in refused.items():
        if value:
            raise ConfigError(f"{key} is not offered with data.multi_label (several labels per "
                              "example); drop one of them.")
    if t.monitor == "val_accuracy":
        raise ConfigError("train.monitor 'val_accuracy': a multi-label model has no accuracy "
                          "per epoch; use val_loss, val_micro_f1 or val_macro_f1.")


def _check_weight(key: str, weight: Any) -> None:
    """A loss or class weight: a number >= 0 (0 switches its part of the loss off)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"{key} must be a number >= 0, got {weight!r}.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits ``section.key=value`` into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}.")
    key, raw = text.split("=", 1)
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: {exc}") from None
    return key.strip().split("."), value


def resolve_config_path(path: str | os.PathLike | None) -> Path:
    """Returns the YAML file for ``path``: a file, a preset name, or the default preset."""
    if path is None:
        path = DEFAULT_PRESET
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    preset = CONFIGS_DIR / f"{path}.yaml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
    raise ConfigError(
        f"Config file '{path}' does not exist and is not a preset. Presets: {', '.join(presets)}."
    )


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Loads a YAML config (``yaml.safe_load``, plus ``1e-4`` as a number) and applies ``--set`` style overrides.

    Args:
        path: a YAML file, the name of a preset in ``tfkit/configs`` (``fine_foods_han``),
            or None for the default preset (``fine_foods_fasttext``).
        overrides: strings like ``"train.epochs=2"`` or ``"model.params.units=32"``.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: for a missing file, bad YAML, unknown keys or bad values.

    Examples:
        >>> load_config(overrides=["train.epochs=1"]).train.epochs
        1
    """
    file = resolve_config_path(path)
    try:
        values = safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections.")
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{'.'.join(keys[:depth + 1])}' is not a section.")
            node = child
        node[keys[-1]] = value
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        # name what the user typed: a value from --set is not in the file the message would name
        for text in reversed(overrides):
            key, _, value = (part.strip() for part in text.partition("="))
            if (re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", str(exc))
                    or f"'{value}'" in str(exc)):
                raise ConfigError(f"--set {text}: {exc}") from None
        raise ConfigError(f"{file}: {exc}") from None


def check_search(config: Config, command: str) -> None:
    """What ``tfkit sweep`` and ``tfkit tune`` (``command``) need of their config: a validation
    split to rank trials on, and one process (not a multi-worker cluster).

    Raises:
        ConfigError: naming what is missing.
    """
    if config.data.validation_fraction == 0:
        raise ConfigError(f"tfkit {command} ranks its trials on the validation split: "
                          "data.validation_fraction must be > 0.")
    if config.train.strategy == "multi_worker" or "TF_CONFIG" in os.environ:
        raise ConfigError(f"tfkit {command} trains its trials one after another in one "
                          "process, which multi-worker training cannot do (its collectives are "
                          "set up once per process): run each trial as its own tfkit train.")


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (readable back with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
