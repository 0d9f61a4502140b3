"""The tfkit command line: train, sweep, tune, convert, config, evaluate, export, label, predict, rest,
explain, models.

The only module that reads ``sys.argv``. Every user error (bad config, data, file or
value) prints one ``tfkit: error: ...`` line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from tfkit.errors import rejection_reason

# commands that do not need TensorFlow (they answer in a fraction of a second)
LIGHT_COMMANDS = ("config", "models")
# commands that start from a config (and --set): checked before TensorFlow is imported
CONFIG_COMMANDS = ("train", "sweep", "tune", "convert")
RUN_COMMANDS = ("evaluate", "export")  # a run folder's config.yaml, checked the same way
# TensorFlow's start-up lines, printed by every process that imports it (C++ log lines from
# before logging is set up, the CPU and CUDA probes of a machine without a GPU): nothing a
# user can act on, and they bury tfkit's own first lines
BANNER = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
          "Could not find cuda drivers on your machine", "cpu_feature_guard.cc",
          "To enable the following instructions:", "failed call to cuInit",
          "Unable to register cuDNN factory", "Unable to register cuFFT factory",
          "Unable to register cuBLAS factory", "TF-TRT Warning: Could not find TensorRT",
          "computation placer already registered", "oneDNN supports DT_")
PREDICT_BATCH = 1024  # tfkit predict: inputs read, answered and printed at a time


def _read_inputs(path: str, column: str | None, encoding: str | None = None, rows: bool = False):
    """Texts, one at a time, from a .txt (one per line), .csv or .tsv (``column``) or .jsonl
    (``column`` key) file, or from standard input (``-``: one text per line). A UTF-8
    byte-order mark (spreadsheet exports) is skipped; ``encoding`` names another text
    encoding. A text that cannot be read is a ValueError naming its line (or object).
    ``rows``: whole rows (dicts) of a .csv, .tsv or .jsonl file, for a model of several inputs."""
    if rows and (path == "-" or Path(path).suffix.lower() == ".txt"):
        raise ValueError(f"--input {path}: this model takes several inputs per example: give a "
                         ".jsonl, .csv or .tsv file with one column per input.")
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # a text stream (tests, notebooks)
        yield from (line.rstrip("\r\n") for line in sys.stdin)
        return
    if path == "-":  # bytes, decoded line by line: an error names the line
        for number, line in enumerate(sys.stdin.buffer, 1):
            try:
                yield line.decode(encoding or "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise ValueError(f"standard input line {number} is not "
                                 f"{encoding or 'UTF-8'} (byte 0x{line[exc.start]:02x}): give "
                                 "its encoding with --encoding, e.g. --encoding cp1252.") from None
            except LookupError:
                raise ValueError(f"--encoding {encoding!r} is not a text encoding Python knows "
                                 "(e.g. utf-8, latin-1, cp1252, utf-16).") from None
        return
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"input file '{path}' does not exist.")
    try:
        yield from _read_input_file(file, column, encoding, rows)
    except LookupError:
        raise ValueError(f"--encoding {encoding!r} is not a text encoding Python knows "
                         "(e.g. utf-8, latin-1, cp1252, utf-16).") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"input file '{path}' is not {encoding or 'UTF-8'} (byte "
                         f"0x{exc.object[exc.start]:02x}): give its encoding with --encoding, "
                         "e.g. --encoding cp1252.") from None


def _read_input_file(file: Path, column: str | None, encoding: str | None, rows: bool = False):
    path = str(file)
    suffix = file.suffix.lower()
    key = column or "text"
    if suffix == ".jsonl":
        from tfkit.data.streams import StreamError, json_objects

        try:
            for number, row in json_objects(file, "input", encoding):
                if rows:
                    yield row
                    continue
                if key not in row:
                    raise ValueError(f"input file '{path}' line {number}: no key {key!r}.")
                yield row[key]
        except StreamError as exc:
            raise ValueError(str(exc)) from None
        return
    if suffix not in (".txt", ".csv", ".tsv", ".tab"):
        raise ValueError(f"input file '{path}': expected .txt, .csv, .tsv or .jsonl, got '{suffix}'.")
    with file.open(encoding=encoding or "utf-8-sig", newline="") as handle:
        if suffix == ".txt":
            yield from (line.rstrip("\r\n") for line in handle)
            return
        reader = csv.DictReader(handle, delimiter="," if suffix == ".csv" else "\t")
        if rows:
            yield from reader
            return
        if key not in (reader.fieldnames or []):
            raise ValueError(f"input file '{path}' has no column {key!r}; "
                             f"its columns are {reader.fieldnames}. Use --column.")
        yield from (row[key] for row in reader)


def _inputs(args, rows: bool = False):
    """``predict`` / ``explain`` / ``rest``: the texts on the command line, then those of
    ``--input``, one at a time (``rows``: the rows of ``--input``, for a model of several
    inputs)."""
    if rows and args.texts:
        raise ValueError("this model takes several inputs per example (a text and table "
                         "columns): give them as rows of --input FILE (.jsonl or .csv).")
    yield from args.texts
    if args.input:
        yield from _read_inputs(args.input, args.column, args.encoding, rows)


def _texts(args) -> list[str]:
    """:func:`_inputs` as a list, refusing none."""
    texts = list(_inputs(args))
    if not texts:
        raise ValueError(f"nothing to {args.command}: give texts or --input FILE.")
    return texts


def _cmd_train(args) -> int:
    import tfkit

    # stdout carries the result alone (one JSON line, for scripts and jq); Keras prints its
    # progress bar to stdout, so it goes to stderr, with tfkit's own progress lines
    with contextlib.redirect_stdout(sys.stderr):
        result = tfkit.train(args.config, args.set, resume=args.resume)
    # one line: the scalar test metrics (per-class scores and the matrix: metrics.json)
    summary = {"run_dir": str(result.run_dir), **{
        k: v for k, v in result.metrics.items()
        if (k.startswith("test_") and not isinstance(v, (dict, list)))
        or k in ("train_seconds", "epochs", "best_epoch", "export_path")}}
    print(json.dumps(summary))
    return 0


def _cmd_sweep(args) -> int:
    from tfkit.sweeps import parse_grid, sweep

    grid = parse_grid(args.grid)
    with contextlib.redirect_stdout(sys.stderr):  # Keras's progress: see _cmd_train
        result = sweep(args.config, grid, args.set)
    # one JSON line per trial, best first (ranked on the validation split)
    for rank, trial in enumerate(result.ranked, 1):
        line = {"rank": rank, **trial, "run_dir": str(trial["run_dir"])}
        if rank == 1 and result.export_path is not None:
            line["export_path"] = str(result.export_path)
        print(json.dumps(line))
    return 0


def _cmd_tune(args) -> int:
    from tfkit.tuning import tune

    if args.resume and (args.config or args.set):
        raise ValueError("tune --resume continues a search as it was set up: give no CONFIG "
                         "or --set with it (--budget gives it more time).")
    with contextlib.redirect_stdout(sys.stderr):  # Keras's progress: see _cmd_train
        result = tune(args.config, args.set, budget=args.budget, resume=args.resume)
    # one JSON line per finished trial, best first (ranked on the validation split)
    for rank, trial in enumerate(result.ranked, 1):
        line = {"rank": rank, **trial}
        if rank == 1 and result.export_path is not None:
            line["export_path"] = str(result.export_path)
        print(json.dumps(line, default=str))
    return 0


def _cmd_evaluate(args) -> int:
    from tfkit.evaluation import evaluate

    print(json.dumps(evaluate(args.run_dir, args.set)))
    return 0


def _cmd_export(args) -> int:
    from tfkit.publishing import export_run

    print(json.dumps({"export_path": str(export_run(args.run_dir, args.base_dir, args.name,
                                                    force=args.force, label=args.label,
                                                    format=args.format,
                                                    quantize=args.quantize))}))
    return 0


def _cmd_label(args) -> int:
    from tfkit.serving_config import LabelError, set_version_label

    if (args.version is None) == (args.remove is None) or (args.version is None) != (
            args.label is None):
        raise LabelError("give VERSION LABEL to point a label at a version, or --remove LABEL.")
    label = args.remove if args.remove is not None else args.label
    labels = set_version_label(args.model_dir, label, args.version)
    print(json.dumps({"model_dir": args.model_dir, "version_labels": labels}))
    return 0


def _cmd_predict(args) -> int:
    """Answers in batches of :data:`PREDICT_BATCH` as the inputs are read, so memory stays
    flat however long the input file is. A file is read once first, to count its inputs and
    refuse a bad line before any answer is printed; standard input is read once."""
    import itertools

    from tfkit.data.streams import Progress
    from tfkit.served import ServedModel

    total = len(args.texts) + (sum(1 for _ in _read_inputs(args.input, args.column, args.encoding))
                               if args.input and args.input != "-" else 0)
    if not total and args.input != "-":
        raise ValueError(f"nothing to {args.command}: give texts or --input FILE.")
    served = ServedModel(args.saved_model)
    rows = served.several_inputs  # a text and table columns: whole rows of --input
    progress = Progress(f"predict ({total:,} inputs)" if total else "predict", "inputs")
    inputs = _inputs(args, rows)
    while batch := list(itertools.islice(inputs, PREDICT_BATCH)):
        for text, result in zip(batch, served.predict(batch)):
            print(json.dumps({"input": text, **result}, ensure_ascii=False))
        progress.add(len(batch))
    if progress.logged:
        progress.done()
    return 0


def _cmd_rest(args) -> int:
    from tfkit.served import ServedModel

    served = ServedModel(args.saved_model)
    if served.several_inputs:  # rows of --input: a text and table columns
        rows = list(_inputs(args, rows=True))
        if not rows:
            raise ValueError(f"nothing to {args.command}: give --input FILE.")
        bodies = served.rest_requests(rows)
    else:
        inputs = served.prepare(_texts(args))  # refuses text that is not UTF-8, reads images
        if served.input_key == "text":
            inputs = [text.decode("utf-8") for text in inputs]
        bodies = served.rest_requests(inputs)
    if args.api not in bodies:
        raise ValueError(f"'{served.version}' has no {args.api!r} API; it takes "
                         f"{', '.join(bodies)} requests.")
    model = served.version.parent.name
    method = args.api.split("_", 1)[0]
    print(json.dumps(bodies[args.api], ensure_ascii=False))
    print(f"POST http://localhost:8501/v1/models/{model}:{method}", file=sys.stderr)
    return 0


def _cmd_explain(args) -> int:
    from tfkit.explain import explain_predictions

    texts = _texts(args)
    for text, result in zip(texts, explain_predictions(args.saved_model, texts, args.top,
                                                       args.head)):
        print(json.dumps({"input": text, **result}, ensure_ascii=False))
    return 0


def _cmd_convert(args) -> int:
    import yaml

    from tfkit.config import load_config
    from tfkit.convert import convert

    config = load_config(args.config, args.set)
    with contextlib.redirect_stdout(sys.stderr):
        result = convert(config, args.to, args.shards, args.compression)
    print(f"tfkit: train from these files with this data section:\n"
          f"{yaml.safe_dump({'data': result['data']}, sort_keys=False)}", end="", file=sys.stderr)
    print(json.dumps({k: result[k] for k in ("train", "test", "data")}))
    return 0


def _cmd_config(args) -> int:
    import yaml

    from tfkit.config import load_config

    # what the run's config.yaml would hold: every key, checked as `train` checks it
    print(yaml.safe_dump(load_config(args.config, args.set).to_dict(), sort_keys=False), end="")
    return 0


def _cmd_models(args) -> int:
    from tfkit.models import load_plugins, model_params

    for name, entry in load_plugins().items():  # built-ins, then installed packages' models
        summary = entry.summary()
        params = ", ".join(f"{k}={v!r}" for k, v in model_params(name).items())
        print(f"{name:14s} [{entry.inputs}] {summary}\n{'':14s} params: {params}")
    return 0


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes: a handler that kept the
    stream it was made with would write to a closed one once pytest's capture or a notebook
    has swapped ``sys.stderr`` ("--- Logging error ---")."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it: sys.stderr is read on each write
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _training_commands(sub)
    _run_commands(sub)
    _input_commands(sub)
    return parser


def _config_arguments(p) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file or preset name (default: fine_foods_fasttext)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")


def _training_commands(sub) -> None:
    """``train``, ``sweep``, ``tune``, ``convert``, ``config``: a config and ``--set``."""
    p = sub.add_parser("train", help="train, evaluate and export a model")
    _config_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="train one run per combination of --grid values, rank "
                                     "them on the validation split, export the best")
    _config_arguments(p)
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=[V1,V2,...]",
                   help="values to try, e.g. --grid train.learning_rate=[0.003,0.01] "
                        "(repeatable: every combination is one trial)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("tune", help="search models and hyperparameters with KerasTuner "
                                    "(every trial a run), rank them on the validation split, "
                                    "export the best")
    _config_arguments(p)
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="wall time for the search, e.g. 90s, 15m, 2h (default: tune.budget, 15m)")
    p.add_argument("--resume", metavar="TUNE_DIR",
                   help="continue an interrupted search (runs/<name>/<tune folder>)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("convert", help="write a config's data as sharded TFRecord files of "
                                       "tf.Example (data.source: tfrecord trains from them)")
    _config_arguments(p)
    p.add_argument("--to", required=True, help="the folder to write (new or empty)")
    p.add_argument("--shards", type=int, default=4,
                   help="files per split (default 4; at least one per worker that will read them)")
    p.add_argument("--compression", default="GZIP", choices=["GZIP", "none"],
                   help="GZIP (default, .tfrecord.gz) or none")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("config", help="print a config with every key resolved (YAML), "
                                      "e.g. to start your own: tfkit config > mine.yaml")
    _config_arguments(p)
    p.set_defaults(func=_cmd_config)


def _run_commands(sub) -> None:
    """``evaluate``, ``export``, ``label``: a finished run or a published model."""
    from tfkit.config import QUANTIZE_MODES  # no TensorFlow

    p = sub.add_parser("evaluate", help="evaluate a finished run (or the SavedModel it "
                                        "exported, as served) on its test split")
    p.add_argument("run_dir", help="a run folder, or saved_models/<name> (latest version) or "
                                   "a version folder: scores the served signature")
    p.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                   help="change the data, e.g. --set data.test_path=new.csv (repeatable)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a finished run as the next SavedModel version")
    p.add_argument("run_dir")
    p.add_argument("--base-dir", help="TF Serving base folder (default: the run's export.base_dir)")
    p.add_argument("--name", help="model name under the base folder (one folder name: "
                                  "letters, digits, '.', '_', '-')")
    p.add_argument("--label", help="point this version label (e.g. canary) at the new version "
                                   "in models.config")
    p.add_argument("--format", default="saved_model", choices=["saved_model", "litert"],
                   help="saved_model (TF Serving, the default) or litert: an image model as "
                        "<base dir>/<name>.tflite, pixels in")
    p.add_argument("--quantize", choices=QUANTIZE_MODES,
                   help="int8: serve a copy whose Dense/Embedding weights are int8 (checked "
                        "against the float model on the test split); default: the run's "
                        "export.quantize")
    p.add_argument("--force", action="store_true",
                   help="publish even a model that fails the checks before publishing (finite "
                        "loss, above the majority label, not worse than the served version); "
                        "with --format litert, replace an existing .tflite file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("label", help="point a TF Serving version label (stable, canary...) at "
                                     "a version, e.g. to roll back; rewrites models.config")
    p.add_argument("model_dir", help="saved_models/<name>")
    p.add_argument("version", nargs="?", type=int, help="a published version")
    p.add_argument("label", nargs="?", help="the label: a letter, then letters, digits, _ or -")
    p.add_argument("--remove", metavar="LABEL", help="remove this label instead")
    p.set_defaults(func=_cmd_label)


def _input_arguments(p) -> None:
    p.add_argument("saved_model", help="saved_models/<name> (latest version) or a version folder")
    p.add_argument("texts", nargs="*", help="raw texts")
    p.add_argument("--input", help="a .txt (one per line), .csv or .jsonl file of inputs; "
                                   "- reads one text per line from standard input")
    p.add_argument("--column", help="the .csv column / .jsonl key holding the text (default: text)")
    p.add_argument("--encoding", help="the --input file's text encoding, e.g. cp1252 (default: UTF-8)")


def _input_commands(sub) -> None:
    """``predict``, ``explain``, ``rest`` (an export and inputs), and ``models``."""
    p = sub.add_parser("predict", help="run an exported SavedModel on raw inputs, JSON lines out")
    _input_arguments(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("explain", help="which words decided an exported text model's answers "
                                       "(leave-one-out), JSON lines out")
    _input_arguments(p)
    p.add_argument("--top", type=int, default=3, help="most important words listed apart (default 3)")
    p.add_argument("--head", help="multi-task models: the classification head to explain")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("rest", help="the JSON body TF Serving's REST API takes for these "
                                    "inputs (predict, classify, regress)")
    _input_arguments(p)
    p.add_argument("--api", default="predict",
                   help="predict (default), classify, or for multi-task models "
                        "classify_<head> / regress_<head>")
    p.set_defaults(func=_cmd_rest)

    p = sub.add_parser("models", help="list the registered model builders")
    p.set_defaults(func=_cmd_models)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # tfkit's own progress lines only: a root handler would also print (and prefix with
    # "tfkit:") every record TensorFlow's Python logger emits
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("tfkit: %(message)s"))
    log = logging.getLogger("tfkit")
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.INFO)
    try:
        check_config(args)
        if args.command not in LIGHT_COMMANDS:
            import_tensorflow()
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # ConfigError, DataError, StrategyError and ExportError are ValueError/RuntimeError
        print(f"tfkit: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(exc, tf.errors.InvalidArgumentError):
            raise
        # e.g. bytes that are not an image
        print(f"tfkit: error: the model rejected the input: {rejection_reason(exc.message)}",
              file=sys.stderr)
        return 2


def check_config(args) -> None:
    """Refuses a bad config before TensorFlow is imported (~5 s): the config and ``--set``
    of ``train``, ``sweep``, ``tune`` and ``convert``; the ``config.yaml`` of a run folder
    given to ``evaluate`` or ``export`` (a model whose package is not installed, say)."""
    from tfkit.config import load_config

    if args.command in CONFIG_COMMANDS and not getattr(args, "resume", None):
        load_config(args.config, args.set)
    elif args.command in RUN_COMMANDS and Path(args.run_dir, "config.yaml").is_file():
        load_config(Path(args.run_dir, "config.yaml"))


def import_tensorflow() -> None:
    """Imports TensorFlow and lists its devices (which probes CUDA) with standard error
    captured at the file descriptor, then writes back every line but TensorFlow's start-up
    banner (:data:`BANNER`): real warnings and errors still reach the user."""
    if "tensorflow" in sys.modules:
        return
    # TensorFlow's C++ INFO lines (a TFRecord file's read buffer...) are nothing a user acts
    # on; its warnings and errors still print. A value set by the user wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            # oneDNN's graph rewrite logs one error line per process ("oneDNN supports DT_BOOL
            # only on platforms with AVX-512...") the first time a graph transposes a boolean
            # or int64 tensor, as every masked Keras RNN does: that first time is here. Not in
            # a cluster's process (TF_CONFIG, a TPU): its runtime must be set up by the
            # strategy before any op runs
            if not (os.environ.get("TF_CONFIG") or os.environ.get("TPU_NAME")):
                tf.function(tf.transpose)(tf.constant([[True, False]]))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        sys.stderr.write(without_banner(captured.read().decode("utf-8", errors="replace")))


def without_banner(text: str) -> str:
    """``text`` without the lines of TensorFlow's start-up banner (:data:`BANNER`)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(b in line for b in BANNER))


if __name__ == "__main__":
    sys.exit(main())
