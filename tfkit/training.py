"""Training: config -> data and preprocessor -> model -> ``fit`` under a strategy -> test
scores, TensorBoard extras and the SavedModel.

:func:`train` reads top to bottom as four steps: :func:`tfkit.preparing.prepare` (the
strategy, the run to resume, the data, the preprocessor adapted on the training split, the
tf.data pipelines), :func:`tfkit.preparing.build` (the model, word vectors, ``compile``),
:func:`fit` (in the run folder, with
tfkit's callbacks) and :func:`finish` (test scores, TensorBoard extras, the checks before
serving, the export, ``metrics.json``). Every check of the config and the data runs in the
first two steps, before a run folder exists. The run folder itself: :mod:`tfkit.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tfkit.baseline import baseline_key, linear_baseline
from tfkit.callbacks import (
    BestWeights,
    best_weights_path,
    make_callbacks,
)
from tfkit.compiling import build_state, precision_policy
from tfkit.config import Config, ConfigError, load_config, save_config
from tfkit.distribute import (
    is_multi_worker,
)
from tfkit.evaluation import label_thresholds, log_test_metrics, score_test_split
from tfkit.explain import has_attention
from tfkit.export import export_for_serving, serving_function
from tfkit.monitor import (
    ConfusionMatrix,
    log_attention,
    log_embeddings,
    log_graph,
    log_hparams,
    log_misclassified,
)
from tfkit.multiworker import broadcast, distributed_fit_fixes
from tfkit.owners import claim, release
from tfkit.preparing import Prepared, build, exports, prepare
from tfkit.publishing import EXPORT_SAMPLES, bless, model_to_serve
from tfkit.runs import (
    RunProgress,
    create_run_dir,
    export_dir,
    run_summary,
    save_trained_model,
    write_status,
)

log = logging.getLogger("tfkit")

MISCLASSIFIED_POOL = 20_000  # validation examples searched for the most confident mistakes


@dataclass
class RunResult:
    """What :func:`train` produced."""

    run_dir: Path
    metrics: dict
    history: dict
    model: keras.Model
    preprocessor: object
    label_names: list[str]
    export_path: Path | None


@dataclass
class Trained:
    """What :func:`fit` left: the history of this attempt, the best epoch, the run's progress."""

    history: dict
    best_epoch: int | None
    progress: RunProgress


def fit_verbosity(verbose: str) -> int:
    """``train.verbose`` as ``fit`` takes it; ``auto``: the progress bar where someone watches.

    Keras's ``auto`` is always the live bar (1), and Keras redraws it with backspaces, carriage
    returns and colour codes even when the output is a file (its ``Progbar`` treats every POSIX
    system as a terminal), so a log file or CI log gets one unreadable line per epoch. tfkit's
    ``auto`` is 1 in a notebook or when the output (stdout, which the CLI points at stderr) is a
    terminal, and 2 (one plain line per epoch) otherwise.
    """
    if verbose != "auto":
        return int(verbose)
    interactive = "ipykernel" in sys.modules or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
    return 1 if interactive else 2


def train(config: Config | str | None = None, overrides=(), *, callbacks=(),
          resume: str | Path | None = None) -> RunResult:
    """Trains, evaluates and exports one model as the config says.

    Args:
        config: a :class:`Config`, a YAML path or preset name, or None for the default
            preset (``fine_foods_fasttext``: ``text_fasttext`` on the embedded fine-food reviews).
        overrides: ``"section.key=value"`` strings applied to a YAML config.
        callbacks: extra Keras callbacks, run after tfkit's own (TensorBoard, best
            checkpoint, BackupAndRestore, early stopping).
        resume: an interrupted run directory to continue (its config is used and
            BackupAndRestore picks up after the last finished epoch).

    Returns:
        A :class:`RunResult` with the run directory, test metrics and export path. With
        ``train.fine_tune_epochs`` (a pretrained backbone's two stages: frozen, then its top
        layers trainable at ``train.fine_tune_learning_rate``), the second run's; only the
        second stage is exported.

    Raises:
        ConfigError, DataError: before anything is written.

    Examples:
        >>> result = tfkit.train("fine_foods_fasttext", ["train.verbose=0"])  # ~20 s
        >>> result.metrics["test_accuracy"] > 0.78  # 0.814 with the preset's seeds
        True
        >>> result.export_path.parts[-2:]
        ('fine_foods_fasttext', '1')
    """
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume continues a run as it was set up: give no CONFIG or "
                              "--set with it (its settings are the run folder's config.yaml).")
        config = load_config(Path(resume) / "config.yaml")
    elif not isinstance(config, Config):
        config = load_config(config, overrides)
    result = train_run(config, callbacks, resume)
    if not config.train.fine_tune_epochs:
        return result
    # the usual second stage: a new run from the first one's weights (the backbone was
    # frozen there), the backbone's top layers trainable, a lower learning rate
    settings = config.train
    second = dataclasses.replace(config, train=dataclasses.replace(
        settings, init_from=str(result.run_dir), unfreeze_layers=settings.unfreeze_layers or -1,
        epochs=settings.fine_tune_epochs, learning_rate=settings.fine_tune_learning_rate,
        fine_tune_epochs=0,
        run_name=f"{settings.run_name}-fine-tune" if settings.run_name else None))
    log.info("second stage: %s of the backbone trainable, learning rate %g, %d epochs",
             "every layer" if second.train.unfreeze_layers < 0 else
             f"the top {second.train.unfreeze_layers} layers",
             second.train.learning_rate, second.train.epochs)
    return train_run(second, callbacks)


def train_run(config: Config, callbacks=(), resume: str | Path | None = None) -> RunResult:
    """One run: :func:`prepare`, :func:`build`, :func:`fit`, :func:`finish` (what
    :func:`train` runs once, or twice for ``train.fine_tune_epochs``)."""
    run = prepare(config, (), resume)
    with precision_policy(run.config.train.mixed_precision):
        with run.strategy.scope():
            model, vectors = build(run)
        run_dir, out_dir = open_run_dir(run)
        try:
            with distributed_fit_fixes(run.strategy), finite_streams(run.data.streamed):
                trained = fit(model, run, run_dir, out_dir, callbacks)
                test = model.evaluate(run.test_ds, return_dict=True, verbose=0)
            return finish(model, run, run_dir, trained, test, vectors)
        except BaseException as exc:
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            release(run_dir)
            if not run.chief:
                shutil.rmtree(out_dir, ignore_errors=True)


@contextlib.contextmanager
def finite_streams(streamed: bool):
    """Keras warns "Your input ran out of data" whenever a dataset of unknown length ends;
    a streamed validation or test split is meant to be read to its end, so there it is no
    warning (the training stream repeats, and fit counts its steps)."""
    with warnings.catch_warnings():
        if streamed:
            warnings.filterwarnings("ignore", "Your input ran out of data")
        yield


def open_run_dir(run: Prepared) -> tuple[Path, Path]:
    """The run folder (new, with its config and preprocessor, or the one resumed), marked
    running, and where TensorBoard writes: the run folder on the chief; on other workers a
    temporary folder removed at the end (they keep only their backup and best weights)."""
    run_dir = run.resume_dir
    if run_dir is None:
        run_dir = create_run_dir(run.config, run.chief, run.worker)
        claim(run_dir)
        save_config(run.config, run_dir / "config.yaml")
        run.preprocessor.save(run_dir)
    else:
        owner = claim(run_dir)  # one live process per run folder
        if owner is not None:
            raise ConfigError(f"run folder '{run_dir}' is in use by process {owner['pid']} on "
                              f"{owner['host']} (since {owner.get('since', '?')}).")
    write_status(run_dir, "running")
    out_dir = run_dir if run.chief else Path(tempfile.mkdtemp(prefix=f"tfkit-worker-{run.worker}-"))
    log.info("run directory: %s%s", run_dir,
             "" if run.chief else f" (worker {run.worker}, not the chief)")
    return run_dir, out_dir


def fit(model: keras.Model, run: Prepared, run_dir: Path, out_dir: Path, callbacks=()) -> Trained:
    """``model.fit`` with tfkit's callbacks (:func:`tfkit.callbacks.make_callbacks`, the
    run's progress, the chief's TensorBoard extras), then the best epoch's weights restored
    (the chief's everywhere under multi-worker training), and on the chief, in this order, the
    trained model saved as ``model.keras``, ``progress.json`` marked trained, the backup
    removed. A resumed run whose training had finished (killed while scoring or exporting,
    say) loads its trained model instead of training again; one killed after its last epoch
    but before ``model.keras`` resumes from the last epoch's backup, with nothing to train.
    """
    config, chief = run.config, run.chief
    progress = RunProgress(run_dir)  # epochs and seconds of every attempt at this run
    if progress.state["trained"] and (run_dir / "model.keras").is_file():
        log.info("resuming after training: the trained model is '%s'", run_dir / "model.keras")
        with warnings.catch_warnings():  # its optimizer state is not needed
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(run_dir / "model.keras")
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # killed before it was removed
        return Trained({}, progress.state.get("best_epoch"), progress)
    extra = []  # TensorBoard extras of classifiers with validation: read on every worker
    # (the metric's counts are summed over the workers as they are read), written by each to
    # its out_dir (a temporary one but on the chief)
    if run.val_ds is not None and not run.data.multi_label and (not run.heads or any(
            "num_classes" in spec for spec in run.heads.values())):
        extra.append(ConfusionMatrix(out_dir / "logs", run.data.label_names))
    if chief:
        log_hparams(out_dir / "logs", config.to_dict(), run_dir.name)
    multi_worker = is_multi_worker(run.strategy)
    tfkit_callbacks = make_callbacks(out_dir, run_dir, config, run.monitor, multi_worker, extra,
                                     run.batch_size)
    build_state(model, run.train_ds)
    history = model.fit(
        run.train_ds, validation_data=run.val_ds, epochs=config.train.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=[progress] + tfkit_callbacks + list(callbacks),
        shuffle=False, verbose=fit_verbosity(config.train.verbose))
    keeper = next(c for c in tfkit_callbacks if isinstance(c, BestWeights))
    best = keeper.restore()
    progress.state["best_epoch"] = best
    progress.state["best_value"] = float(keeper.best) if best and np.isfinite(keeper.best) else None
    if multi_worker:  # one model everywhere, the chief's: after a repaired restart the
        broadcast(run.strategy, model.variables)  # best-weights files may differ
    if chief:  # in this order: a kill between any two steps resumes without training again
        save_trained_model(model, run_dir / "model.keras")
        progress.finish_training()
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return Trained({k: [float(v) for v in values] for k, values in history.history.items()},
                   best, progress)


def finish(model: keras.Model, run: Prepared, run_dir: Path, trained: Trained, test: dict,
           vectors: dict | None) -> RunResult:
    """The run's metrics; on the chief: the model saved, per-class test scores, the TensorBoard
    extras, the checks before serving and the export, ``metrics.json``, the run marked
    finished. Another worker removes its folder (its backup is no longer needed)."""
    config, data = run.config, run.data
    epochs, seconds = trained.progress.state["epochs"], trained.progress.state["train_seconds"]
    metrics = {f"test_{k}": float(v) for k, v in test.items()}
    metrics.update({
        "train_seconds": round(seconds, 2), "epochs": epochs, "best_epoch": trained.best_epoch,
        "best_monitor": {"name": run.monitor, "value": trained.progress.state.get("best_value")},
        "resumes": trained.progress.state["attempts"] - 1,
        "train_examples_per_second": round(len(data.train) * epochs / seconds, 1)
        if epochs and seconds else 0.0,
        "train_examples": len(data.train), "validation_examples": len(data.validation),
        "test_examples": len(data.test), "label_names": data.label_names,
        "replicas": run.strategy.num_replicas_in_sync, "model": config.model.name,
        "heads": run.heads, "class_weights": None if run.weights is None else
        dict(zip(data.label_names, run.weights.tolist())),
        "word_vectors": vectors, "distillation": run.distillation, "chosen": run.chosen,
    })
    if not run.chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # the run folder, when only this worker used it
        return RunResult(None, metrics, trained.history, model, run.preprocessor,
                         data.label_names, None)
    multi_label = None  # several labels per example: a threshold per label, from validation
    if data.multi_label:
        thresholds = label_thresholds(model, run.val_ds, len(data.label_names))
        multi_label = {"thresholds": thresholds.tolist(), "separator": config.data.label_separator}
        metrics["multi_label"] = multi_label
        log.info("label thresholds (chosen on the validation split): %s", ", ".join(
            f"{name} {t:.2f}" for name, t in zip(data.label_names, thresholds)))
    # per-class scores on the test split (per classification head for multi-task; per label
    # at its threshold for multi-label)
    predicted, report = score_test_split(model, run.test_ds, data.label_names,
                                         multi_label and multi_label["thresholds"])
    metrics.update(report)
    step = max(epochs - 1, 0)
    scalars = {**test, **{k[5:]: v for k, v in report.items() if isinstance(v, float)}} \
        if multi_label else dict(test)
    metrics["baseline"] = None  # the linear model on the same split, beside this one
    if config.train.baseline:
        metrics["baseline"] = linear_baseline(data, config.data.split, config.train.seed)
        if metrics["baseline"]:
            key = baseline_key(metrics["baseline"])
            scalars[f"baseline_{key[5:]}"] = metrics["baseline"][key]
            log.info("linear baseline (%s, C=%g, %.1f s): %s %.4f on the same test split",
                     metrics["baseline"]["model"], metrics["baseline"]["C"],
                     metrics["baseline"]["seconds"], key, metrics["baseline"][key])
    log_test_metrics(run_dir, scalars, step, predicted, data.label_names,
                     report if multi_label else None)
    log_extras(model, run, run_dir / "logs", step, multi_label)
    export_path, published = publish(model, run, run_dir, metrics, predicted, multi_label)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    write_status(run_dir, "finished", test_accuracy=metrics.get("test_accuracy"), **published)
    shutil.rmtree(best_weights_path(run_dir).parent, ignore_errors=True)  # model.keras has them
    log.info("finished: %s", run_summary(metrics, run_dir))
    return RunResult(run_dir, metrics, trained.history, model, run.preprocessor,
                     data.label_names, export_path)


def log_extras(model: keras.Model, run: Prepared, log_dir: Path, step: int,
               multi_label: dict | None = None) -> None:
    """TensorBoard's views of the trained model: the served function's op graph, the word
    vectors (text models), the validation examples most confidently misclassified and, for
    models with attention, what they attended to (single-task text and image classifiers)."""
    preprocessor, data = run.preprocessor, run.data
    log_graph(log_dir, serving_function(model, preprocessor, data.label_names, multi_label))
    extras = preprocessor.tensorboard_extras
    if "embeddings" in extras:
        log_embeddings(log_dir, model, preprocessor.vocabulary())
    if "misclassified" in extras and len(data.validation) and not run.heads \
            and not multi_label:
        validation = data.validation.sample(MISCLASSIFIED_POOL)
        x = preprocessor.pixels(validation.x) if preprocessor.serving_input == "image_bytes" \
            else validation.x
        log_misclassified(log_dir, model, preprocessor, x, validation.y, data.label_names,
                          step=step)
        if has_attention(model):
            log_attention(log_dir, model, preprocessor, x, validation.y, data.label_names,
                          step=step)


def publish(model: keras.Model, run: Prepared, run_dir: Path, metrics: dict, predicted,
            multi_label: dict | None = None) -> tuple[Path | None, dict]:
    """Exports the model (quantized when ``export.quantize`` says so) as the next version when
    ``export.enabled`` and it passes the checks before serving
    (:func:`tfkit.publishing.bless`; recorded as ``metrics["blessing"]``). ``predicted``: the
    float model's test labels and probabilities (:func:`score_test_split`).
    Returns the version folder (or None) and what ``status.json`` says when not published."""
    config = run.config
    if not exports(config):
        return None, {}
    served, judged, reasons = model_to_serve(model, config, run.test_ds, predicted, metrics)
    blessing = (bless(judged, run.data, export_dir(config), config.export.max_regression,
                      reasons) if config.export.blessing else None)
    metrics["blessing"] = blessing
    if blessing is not None and not blessing["blessed"]:
        log.warning("not published for serving: %s. To publish it anyway: tfkit export %s "
                    "--force", "; ".join(blessing["reasons"]), run_dir)
        return None, {"published": False, "not_published": blessing["reasons"]}
    export_path = export_for_serving(
        served, run.preprocessor, run.data.label_names, export_dir(config),
        run.preprocessor.export_samples(run.data.test.sample(EXPORT_SAMPLES).x),
        serving_root=config.export.serving_root,
        metadata={"run_dir": str(run_dir), "metrics": metrics}, multi_label=multi_label)
    metrics["export_path"] = str(export_path)
    return export_path, {}
