"""Everything a run needs before its model trains: :func:`prepare` (the strategy, the run to
resume, the data, the preprocessor adapted on the training split, the tf.data pipelines) and
:func:`build` (the model, word vectors, the learning rate, ``compile``). Every check of the
config and the data runs here, before a run folder exists; :mod:`tfkit.training` then fits,
scores and exports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfkit.callbacks import monitored
from tfkit.compiling import compile_model, epoch_steps, head_specs, jit_setting
from tfkit.config import Config, ConfigError, load_config, warmup_epochs
from tfkit.data import LabeledData, load_data, load_preprocessor, load_word_vectors
from tfkit.datasets import (
    class_weights,
    make_dataset,
    make_preprocessor,
    resolve_max_len,
    resolve_model,
    shard_policy,
    warn_small_splits,
)
from tfkit.distillation import teach
from tfkit.distribute import (
    is_chief,
    is_multi_worker,
    pipeline_index,
    resolve_strategy,
    task_id,
    worker_count,
)
from tfkit.export import check_next_version
from tfkit.lr_range import find_learning_rate
from tfkit.models import build_model
from tfkit.models.pretrained import unfreeze
from tfkit.owners import owned_by_another
from tfkit.quantization import check_quantizable
from tfkit.runs import config_differences, export_dir, read_status, run_path

log = logging.getLogger("tfkit")


@dataclass
class Prepared:
    """What :func:`prepare` found: everything a run needs before its model exists."""

    config: Config
    strategy: tf.distribute.Strategy
    chief: bool
    worker: int
    resume_dir: Path | None  # the run folder to continue, or None for a new run
    data: LabeledData
    preprocessor: object
    batch_size: int  # global: per replica x replicas
    weights: np.ndarray | None  # train.class_weight per label id
    heads: dict | None  # multi-task: head_specs
    monitor: str  # what picks the best epoch
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None
    test_ds: tf.data.Dataset
    steps_per_epoch: int | None  # train.steps_per_epoch; streamed data: examples / batch
    distillation: dict | None  # train.teacher: what tfkit.distillation.teach reports
    chosen: dict  # what was chosen from the data (data.max_len: auto...), for metrics.json


def prepare(config: Config | str | None, overrides=(), resume: str | Path | None = None
            ) -> Prepared:
    """The strategy (first: multi-worker collectives must be set up before TensorFlow starts),
    the run to resume (``resume``, or an unfinished ``train.run_name``), the data, the
    preprocessor (adapted on the training split, or the resumed run's) and the datasets.

    Raises:
        ConfigError, DataError: for anything that cannot work, before any folder exists.
    """
    if resume is None and not isinstance(config, Config):
        config = load_config(config, overrides)
    settings = (config if resume is None else load_config(Path(resume) / "config.yaml")).train
    strategy = resolve_strategy(settings.strategy, tpu=settings.tpu, devices=settings.devices,
                                tf_config=settings.tf_config)
    chief, worker = is_chief(strategy), task_id(strategy)
    config, resume = run_to_resume(config, resume, run_path(config, chief, worker)
                                   if resume is None and config.train.run_name else None)
    keras.utils.set_random_seed(config.train.seed)
    if config.train.learning_rate == "auto" and is_multi_worker(strategy):
        raise ConfigError("train.learning_rate: auto is not offered under a multi-worker "
                          "strategy (each worker would test its own rate); set a number, e.g. "
                          "the one a single-machine run chose (its metrics.json, chosen).")
    if config.train.fine_tune_epochs and is_multi_worker(strategy):
        raise ConfigError("train.fine_tune_epochs is not offered under a multi-worker strategy "
                          "(the second stage starts from the first's run folder, on the chief); "
                          "run the second stage with train.init_from.")
    data = load_data(config.data)
    warn_small_splits(data)
    config = resolve_model(config, data)  # model.name: auto, from the data
    config, max_len = resolve_max_len(config, data)  # data.max_len: auto, from the texts
    chosen = {"max_len": max_len} if max_len else {}
    start = config.train.init_from
    if start and not resume:
        check_start(start, data)
    preprocessor = load_preprocessor(resume or start) if resume or start else \
        make_preprocessor(config, data)
    replicas = strategy.num_replicas_in_sync
    batch_size = config.train.batch_size * replicas
    log.info("batch size %d per replica x %d replica(s) = %d global",
             config.train.batch_size, replicas, batch_size)
    jit_setting(config, replicas)  # a refused combination fails here, before any folder exists
    if exports(config):  # and an export that would replace another model's answers
        check_next_version(export_dir(config), data.label_names, preprocessor, data.multi_label)
    weights = class_weights(config, data)
    if weights is not None:
        log.info("class weights: %s", ", ".join(
            f"{name} {w:.3g}" for name, w in zip(data.label_names, weights)))
    train_split, distillation = data.train, None
    if config.train.teacher:  # targets [label id, the teacher's probabilities...]
        train_split, distillation = teach(config, data, preprocessor)
    workers = worker_count(strategy)
    train_ds = make_dataset(train_split, preprocessor, config, batch_size, training=True,
                            weights=weights, workers=workers, worker=pipeline_index(strategy))
    val_ds = (make_dataset(data.validation, preprocessor, config, batch_size, training=False,
                           workers=workers) if len(data.validation) else None)
    test_ds = make_dataset(data.test, preprocessor, config, batch_size, training=False,
                           workers=workers)
    if workers > 1:
        policy = shard_policy(data.train, workers).name
        log.info("data: %d workers, training data sharded by %s%s", workers,
                 "file" if policy == "FILE" else "element",
                 f" ({len(data.train.files)} files)" if data.streamed else "")
    heads = head_specs(data)
    monitor = monitored(config, val_ds is not None, heads, is_multi_worker(strategy))
    steps = config.train.steps_per_epoch
    if data.streamed and not steps:  # the training stream repeats: an epoch is a step count
        steps = epoch_steps(config, train_ds, len(data.train), batch_size)
    return Prepared(config, strategy, chief, worker, resume, data, preprocessor, batch_size,
                    weights, heads, monitor, train_ds, val_ds, test_ds, steps, distillation,
                    chosen)


def run_to_resume(config: Config, resume: str | Path | None, named: Path | None
                  ) -> tuple[Config, Path | None]:
    """The config and folder of the run to continue: ``resume``, or the folder of
    ``train.run_name`` (``named``) when it exists (an interrupted run: carry on); else
    ``(config, None)``.

    Raises:
        ConfigError: for a run that is finished, owned by a live process, or (named) set up
            with other settings.
    """
    if resume is None and named is not None and named.exists():
        resume = named
    else:
        named = None
    if resume is None:
        return config, None
    resume = Path(resume).resolve()
    state = read_status(resume)["state"]
    if state not in ("running", "failed"):
        raise ConfigError(f"cannot resume '{resume}': its state is '{state}' "
                          "(only an interrupted or failed run can be resumed; "
                          "choose another train.run_name for a new run).")
    owner = owned_by_another(resume)
    if owner is not None:
        raise ConfigError(f"run folder '{resume}' is in use by process {owner['pid']} on "
                          f"{owner['host']} (since {owner.get('since', '?')}): wait for it "
                          "to end, or choose another train.run_name.")
    saved = load_config(resume / "config.yaml")
    differences = config_differences(config, saved) if named is not None else []
    if differences:
        raise ConfigError(f"train.run_name '{config.train.run_name}' is an interrupted run "
                          f"with other settings ({'; '.join(differences[:5])}): resume it as "
                          f"it was (tfkit train --resume {resume}), or choose another "
                          "train.run_name.")
    return saved, resume


def exports(config: Config) -> bool:
    """Whether the run exports its model: ``export.enabled``, unless it is the first of two
    stages (``train.fine_tune_epochs``: the second exports)."""
    return config.export.enabled and not config.train.fine_tune_epochs


def check_start(run_dir: str, data: LabeledData) -> None:
    """``train.init_from``: a finished run with this data's labels.

    Raises:
        ConfigError: naming the run and what is wrong.
    """
    state = read_status(Path(run_dir))["state"] if (Path(run_dir) / "status.json").is_file() \
        else "missing"
    if state != "finished":
        raise ConfigError(f"train.init_from '{run_dir}' is not a finished tfkit run (state: "
                          f"{state}).")
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    if metrics.get("label_names") != data.label_names:
        raise ConfigError(f"train.init_from '{run_dir}' was trained on other labels "
                          f"({metrics.get('label_names')}) than this data's ({data.label_names}).")


def build(run: Prepared) -> tuple[keras.Model, dict | None]:
    """The model (under the strategy's scope), its word vectors when the config names a file
    (``load_word_vectors``' report, else None), compiled.

    Raises:
        ConfigError: for builder arguments the builder refuses, before any folder exists.
    """
    config, preprocessor = run.config, run.preprocessor
    try:  # the builder checks its arguments' values: fail before any folder exists
        model = build_model(config.model.name, num_classes=run.data.num_classes, heads=run.heads,
                            multi_label=run.data.multi_label,
                            vocab_size=getattr(preprocessor, "vocab_size", None),
                            input_shape=getattr(preprocessor, "input_shape", None),
                            **config.model.params)
        if not model.built:  # a Sequential without keras.Input: fit would build it
            # after the run folder exists and after BackupAndRestore refused it
            model(next(iter(run.train_ds.take(1)))[0], training=False)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.params of model '{config.model.name}' "
                          f"{dict(config.model.params)}: {exc}") from exc
    if config.train.init_from:  # the first stage's weights (a resumed run: then its backup's)
        try:
            with warnings.catch_warnings():  # its optimizer state is not needed
                warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
                model.load_weights(Path(config.train.init_from) / "model.keras")
        except ValueError as exc:
            raise ConfigError(f"train.init_from '{config.train.init_from}': its model is not "
                              f"this one (same model.name and params needed): "
                              f"{str(exc).splitlines()[0][:200]}") from None
    if config.train.unfreeze_layers:
        try:
            count = unfreeze(model, config.train.unfreeze_layers)
        except ValueError as exc:
            raise ConfigError(f"train.unfreeze_layers: {exc}") from None
        log.info("fine-tuning: %d layers of the backbone trainable", count)
    if exports(config):
        check_quantizable(model, config.export.quantize, config.model.name)
    vectors = None
    if config.model.word_vectors is not None:  # before compile: a frozen embedding
        vectors = load_word_vectors(  # has no optimizer slots (a resumed run too)
            model, preprocessor.vocabulary(), config.model.word_vectors,
            config.model.freeze_word_vectors)
        log.info("word vectors: %d of %d words found in %s (%.1f%%)%s",
                 vectors["words_found"], vectors["vocabulary"], vectors["path"],
                 100 * vectors["coverage"], ", frozen" if vectors["frozen"] else "")
    replicas = run.strategy.num_replicas_in_sync
    steps = epoch_steps(config, run.train_ds, len(run.data.train), run.batch_size)
    if config.train.learning_rate == "auto":  # a range test on a copy: the rate from the data
        constant = dataclasses.replace(config, train=dataclasses.replace(
            config.train, learning_rate=1.0, lr_schedule="constant", warmup_epochs=0))
        try:
            found = find_learning_rate(model, lambda copy: compile_model(
                copy, constant, run.heads, replicas, steps), run.train_ds)
        except ValueError as exc:
            raise ConfigError(f"train.learning_rate: auto: {exc}") from None
        warmup = warmup_epochs(config.train)  # auto's choice, into config.yaml
        run.chosen.update(learning_rate=found, warmup_epochs={"value": warmup})
        run.config = config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, learning_rate=found["value"], warmup_epochs=warmup))
    compile_model(model, config, run.heads, replicas, steps)
    return model, vectors
