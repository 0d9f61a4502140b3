"""Where the time of ``tfkit train``'s ``fit`` goes: each of tfkit's extras against a bare
``fit`` of the same model on the same batches.

    python -m benchmarks.overhead            # default preset and fine_foods_text_lstm, 5 rounds
    python -m benchmarks.overhead --quick    # default preset, 1 round (smoke test)
    python -m benchmarks.overhead --preset fine_foods_fasttext   # one preset

For each preset the datasets come from tfkit's own ``prepare`` (the preset's preprocessor,
batches, buckets, validation split), and each setting fits a freshly built and compiled
model (same seeds) for the preset's epochs in this process, Keras's validation pass every
epoch in all of them:

- ``bare``: ``model.fit(train, validation_data=validation)``, compiled with accuracy
  alone (tfkit compiles a macro-F1 metric too), nothing else;
- ``+ <extra>``: bare with one of tfkit's callbacks: ``throughput``, ``tensorboard``
  (scalars every epoch), ``confusion matrix`` (the compiled macro-F1 metric that keeps the
  counts, and the callback that draws the validation confusion matrix and PR curves), ``best weights`` (the best epoch's weights, kept in memory), ``backup``
  (BackupAndRestore at tfkit's default frequency, ``train.backup_seconds``), ``backup
  every epoch`` (as Keras's own BackupAndRestore does), ``progress`` (the run's progress file);
- ``all``: every callback ``tfkit train`` adds, as it adds them; ``all, hooks timed``: the
  same, each callback behind a proxy that times its hooks (the cost of each extra inside one
  fit, apart from the noise of the training steps).

Settings alternate within each round, each round starting with the next setting; the results are the median seconds per setting and
their ratio to ``bare``, in ``benchmarks/results/overhead-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_test_batch_begin", "on_test_batch_end")


def timed(callback, seconds: dict):
    """``callback`` behind a proxy that adds the time spent in its hooks to
    ``seconds[its class name]``: what each extra costs inside one fit, apart from noise in
    the training steps."""
    import keras

    name = type(callback).__name__

    class Timed(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            callback.set_model(model)

        def set_params(self, params):
            super().set_params(params)
            callback.set_params(params)

    def hook(method):
        def run(self, *args, **kwargs):
            started = time.perf_counter()
            getattr(callback, method)(*args, **kwargs)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return run

    for method in HOOKS:
        setattr(Timed, method, hook(method))
    return Timed()


def settings(run, work: Path) -> dict:
    """``{name: function(round folder) -> callbacks}``."""
    import keras

    from tfkit.callbacks import Backup, BestWeights, backup_callback
    from tfkit.monitor import ConfusionMatrix, Throughput
    from tfkit.runs import RunProgress

    config = run.config

    def confusion(folder):
        return [ConfusionMatrix(folder / "logs", run.data.label_names)]

    def all_timed(folder):
        HOOK_SECONDS.append({})
        return [timed(c, HOOK_SECONDS[-1]) for c in all_callbacks(run, folder)]

    return {
        "bare": lambda folder: [],
        "+ throughput": lambda folder: [Throughput(run.batch_size)],
        "+ tensorboard": lambda folder: [keras.callbacks.TensorBoard(str(folder / "logs"))],
        "+ confusion matrix": confusion,
        "+ best weights": lambda folder: [BestWeights(folder / "best.weights.h5", "val_loss", "min")],
        "+ backup": lambda folder: [backup_callback(folder, config)],
        "+ backup every epoch": lambda folder: [Backup(str(folder / "backup"), every=0)],
        "+ progress": lambda folder: [RunProgress(folder)],
        "all": lambda folder: all_callbacks(run, folder),
        "all, hooks timed": all_timed,
    }


def all_callbacks(run, folder: Path) -> list:
    from tfkit.callbacks import make_callbacks
    from tfkit.monitor import ConfusionMatrix
    from tfkit.runs import RunProgress

    confusion = ConfusionMatrix(folder / "logs", run.data.label_names)
    return [RunProgress(folder)] + make_callbacks(folder, folder, run.config, run.monitor,
                                                  extra=[confusion], batch_size=run.batch_size)


COUNTED = ("+ confusion matrix", "all", "all, hooks timed")  # compiled with ClassCounts
HOOK_SECONDS: list[dict] = []  # one {callback: seconds in its hooks} per timed fit


def measure(preset: str, rounds: int, work: Path) -> dict:
    import keras

    from tfkit.config import load_config
    from tfkit.preparing import build, prepare

    # a fixed number of epochs for every setting: a preset that stops early (its epochs a
    # maximum) trains 3
    stops_early = load_config(preset).train.early_stopping_patience is not None
    run = prepare(preset, ["train.verbose=0", "export.enabled=false"] + (
        ["train.epochs=3", "train.early_stopping_patience=null"] if stops_early else []))
    seconds: dict[str, list[float]] = {}
    for round_ in range(rounds):
        order = list(settings(run, work).items())
        shift = round_ % len(order)  # each round starts with another setting
        for name, callbacks in order[shift:] + order[:shift]:
            folder = Path(tempfile.mkdtemp(dir=work))
            keras.utils.set_random_seed(run.config.train.seed)
            with run.strategy.scope():
                model, _ = build(run)  # compiled as tfkit compiles: macro F1 counts included
                if name not in COUNTED:  # as a Keras user compiles it: accuracy alone
                    model.compile(optimizer=type(model.optimizer).from_config(
                        model.optimizer.get_config()), loss=model.loss,
                        weighted_metrics=["accuracy"], jit_compile=model.jit_compile,
                        steps_per_execution=run.config.train.steps_per_execution)
            started = time.perf_counter()
            model.fit(run.train_ds, validation_data=run.val_ds, epochs=run.config.train.epochs,
                      steps_per_epoch=run.steps_per_epoch, callbacks=callbacks(folder),
                      shuffle=False, verbose=0)
            seconds.setdefault(name, []).append(time.perf_counter() - started)
            print(json.dumps({"preset": preset, "round": round_, "setting": name,
                              "seconds": round(seconds[name][-1], 3)}), flush=True)
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    hooks = {name: round(float(np.median([h.get(name, 0.0) for h in HOOK_SECONDS])), 3)
             for name in HOOK_SECONDS[0]}
    HOOK_SECONDS.clear()
    return {"epochs": run.config.train.epochs, "seconds": seconds, "median_seconds": medians,
            "ratio_to_bare": {name: round(m / medians["bare"], 3) for name, m in medians.items()},
            "median_hook_seconds_per_callback": hooks,
            "hooks_share_of_bare": {name: round(v / medians["bare"], 3) for name, v in hooks.items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--preset", action="append", help="only these presets (repeatable)")
    args = parser.parse_args(argv)
    presets = args.preset or ["fine_foods_fasttext"] + ([] if args.quick else ["fine_foods_text_lstm"])
    with tempfile.TemporaryDirectory() as tmp:
        result = {preset: measure(preset, 1 if args.quick else args.rounds, Path(tmp))
                  for preset in presets}
    for preset, found in result.items():
        print(preset, json.dumps(found["ratio_to_bare"]), json.dumps(found["hooks_share_of_bare"]))
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / f"overhead-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
