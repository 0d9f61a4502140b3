"""The CLI end to end on a tiny config, through the same entry point as `tfkit`."""

import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, sets, summaries, tiny_overrides

from tfkit.config import DEFAULT_PRESET
from tfkit.training import fit_verbosity


def finished_runs(root="runs"):
    return [p.parent for p in Path(root).glob("*/*/status.json")
            if json.loads(p.read_text())["state"] == "finished"]


def test_train_export_predict_evaluate(tiny_csv, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "train",
                             *sets(tiny_overrides(tiny_csv, extra=["train.verbose=auto",
                                                                  "export.enabled=true"])))
    assert code == 0, err
    (line,) = out.strip().splitlines()  # stdout: the result alone; Keras's progress: stderr
    summary = json.loads(line)
    # verbose=auto with stderr not a terminal: one plain line per epoch, not Keras's live bar
    # (backspaces, carriage returns, colour codes) written into a log file
    assert len(re.findall(r"\n\d+/\d+ - .* - loss: ", err)) == 1, err  # train.epochs=1
    assert not re.search("[\b\r\x1b]", err), repr(err)
    run_dir = Path(summary["run_dir"])
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["epochs"] == summary["best_epoch"] == 1
    for name in ("config.yaml", "preprocessor.json", "model.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    # the best weights are in model.keras, the optimizer's state is not (a finished run needs
    # neither: it is evaluated and exported from model.keras)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "backup").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loads without a warning, uncompiled
        reloaded = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    assert not reloaded.compiled and not hasattr(reloaded, "optimizer")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["label_names"] == ["bad", "good"]
    # per-class test scores from the test confusion matrix, which agrees with Keras's own
    # test accuracy (two independent passes); on stdout only the scalar macro F1
    matrix = np.array(metrics["test_confusion_matrix"])
    assert matrix.sum() == metrics["test_examples"]
    assert abs(np.trace(matrix) / matrix.sum() - summary["test_accuracy"]) < 1e-6
    assert [c["support"] for c in metrics["test_per_class"].values()] == matrix.sum(1).tolist()
    assert summary["test_macro_f1"] == metrics["test_macro_f1"] and "test_per_class" not in summary
    logged = summaries(run_dir / "logs" / "test")
    assert {"classification_report", "confusion_matrix", "epoch_macro_f1"} <= set(logged)
    # the epoch's training speed, next to Keras's own scalars (and in the epoch's line)
    (speed,) = summaries(run_dir / "logs" / "train", "epoch_examples_per_second").values()
    assert len(speed) == 1 and tf.make_ndarray(speed[0][1].tensor) > 0
    assert re.search(r" - examples_per_second: \d", err), err
    assert Path(summary["export_path"]).resolve() == Path(f"saved_models/{DEFAULT_PRESET}/1").resolve()
    # tfkit's progress lines, and no TensorFlow log record passed off as tfkit's
    assert f"tfkit: run directory: {run_dir}" in err
    finished = next(line for line in err.splitlines() if line.startswith("tfkit: finished: "))
    assert f"test accuracy {summary['test_accuracy']:.4g}" in finished
    assert "best epoch 1 of 1" in finished and finished.endswith(f"; tensorboard --logdir {run_dir}")
    assert "tfkit: Assets written" not in err and "INFO:tensorflow" not in err

    code, out, err = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}",
                             "delicious and fresh", "")
    assert code == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert [line["input"] for line in lines] == ["delicious and fresh", ""]
    for line in lines:
        assert set(line["probabilities"]) == {"bad", "good"}
        assert abs(sum(line["probabilities"].values()) - 1) < 1e-4
        assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)

    Path("in.jsonl").write_text('{"text": "stale"}\n{"text": "love it"}\n')
    code, out, _ = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}/1",
                           "--input", "in.jsonl")
    assert code == 0 and len(out.strip().splitlines()) == 2
    Path("in.csv").write_text("review\nstale\n", encoding="utf-8-sig")  # as Excel saves it
    code, out, _ = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}",
                           "--input", "in.csv", "--column", "review")
    assert code == 0 and json.loads(out)["input"] == "stale"
    Path("in.tsv").write_text("id\treview\n1\tstale, awful\n")
    code, out, _ = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}",
                           "--input", "in.tsv", "--column", "review")
    assert code == 0 and json.loads(out)["input"] == "stale, awful"
    monkeypatch.setattr(sys, "stdin", io.StringIO("tasty\r\nawful\n"))
    code, out, _ = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}", "--input", "-")
    assert code == 0
    assert [json.loads(line)["input"] for line in out.splitlines()] == ["tasty", "awful"]
    # a long input is read, answered and printed a batch at a time, with progress lines
    from tfkit import cli
    from tfkit.data import streams
    from tfkit.served import ServedModel

    calls = []
    answer = ServedModel.predict
    monkeypatch.setattr(ServedModel, "predict",
                        lambda self, batch: calls.append(len(batch)) or answer(self, batch))
    monkeypatch.setattr(streams, "PROGRESS_SECONDS", 0)
    texts = [f"review {i} {'tasty' if i % 3 else 'stale'}" for i in range(2500)]
    Path("long.txt").write_text("\n".join(texts) + "\n")
    code, out, err = run_cli(capsys, "predict", f"saved_models/{DEFAULT_PRESET}", "--input", "long.txt")
    assert code == 0 and calls == [cli.PREDICT_BATCH, cli.PREDICT_BATCH, 2500 - 2 * cli.PREDICT_BATCH]
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["input"] for a in answers] == texts
    assert answers[:5] == [{"input": t, **r} for t, r in zip(texts, answer(
        ServedModel(f"saved_models/{DEFAULT_PRESET}"), texts[:5]))]
    assert "tfkit: predict (2,500 inputs): 2,500 inputs (" in err and err.rstrip().endswith(", done")

    code, out, err = run_cli(capsys, "export", str(run_dir))
    assert code == 0, err
    assert json.loads(out)["export_path"].endswith(os.path.join(DEFAULT_PRESET, "2"))

    code, out, err = run_cli(capsys, "evaluate", str(run_dir))
    assert code == 0, err
    evaluated = json.loads(out)
    assert abs(evaluated["test_accuracy"] - summary["test_accuracy"]) < 1e-6
    assert evaluated["test_confusion_matrix"] == metrics["test_confusion_matrix"]
    # the same model scored on newly labelled data; only the data section may change
    Path("fresh.csv").write_text("review,sentiment\nstale and awful,bad\ntasty,good\n"
                                 "really good value,good\n")
    code, out, err = run_cli(capsys, "evaluate", str(run_dir), "--set", "data.test_path=fresh.csv")
    assert code == 0, err
    fresh = json.loads(out)
    assert fresh["test_examples"] == 3 and np.sum(fresh["test_confusion_matrix"]) == 3
    assert np.sum(np.array(fresh["test_confusion_matrix"]), axis=1).tolist() == [1, 2]
    code, out, err = run_cli(capsys, "evaluate", str(run_dir), "--set", "train.epochs=3")
    assert code == 2 and "only data.* keys can change" in err and not out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_auto_is_the_live_bar_only_where_someone_watches(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert fit_verbosity("auto") == 2  # a file or a pipe: one line per epoch
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert fit_verbosity("auto") == 1  # a terminal: Keras's live progress bar
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    assert fit_verbosity("auto") == 1  # a notebook (not a terminal, but it draws the bar)
    assert [fit_verbosity(v) for v in ("0", "1", "2")] == [0, 1, 2]


def test_other_labels_under_an_existing_export_name_stop_before_training(tiny_csv, capsys):
    exported = ["export.enabled=true"]
    assert run_cli(capsys, "train", *sets(tiny_overrides(tiny_csv, extra=exported)))[0] == 0
    other = tiny_csv.with_name("stars.csv")  # other data, other labels, the same preset name
    other.write_text(tiny_csv.read_text().replace(",good", ",5 stars").replace(",bad", ",1 star"))
    code, out, err = run_cli(capsys, "train", *sets(tiny_overrides(other, extra=exported)))
    assert code == 2 and out == ""
    assert "serves labels ['bad', 'good']" in err and "labels ['1 star', '5 stars']" in err, err
    assert "config 'name'" in err
    assert len(finished_runs()) == 1 and len(list(Path("runs").glob("*/*"))) == 1  # no new run
    code, out, err = run_cli(capsys, "train", *sets(tiny_overrides(other, extra=exported)),
                             "--set", "name=stars")
    assert code == 0, err
    assert Path(json.loads(out)["export_path"]).parts[-2:] == ("stars", "1")


def test_run_directories_are_never_reused(tiny_csv, capsys):
    for _ in range(2):
        code, _, err = run_cli(capsys, "train", *sets(tiny_overrides(
            tiny_csv, extra=["export.enabled=false"])))
        assert code == 0, err
    assert len(finished_runs()) == 2


@pytest.mark.parametrize("override, message", [
    ("train.epocs=1", "Did you mean 'epochs'"),
    ("data.text_column=body", "has no column 'body'"),
    ("data.path=nowhere.csv", "'nowhere.csv' does not exist"),
    ("model.params.unit=4", "Did you mean 'units'"),
    ("model.params.units=0", "model.params of model 'text_lstm' {'units': 0}: units must be"),
    ("model.params.pooling=max", "pooling must be one of"),
    ("train.class_weight={meh: 2}", "train.class_weight: no label 'meh' in the data"),
    ("train.class_weight=heavy", "train.class_weight must be 'balanced', a mapping"),
    ("train.class_weight={bad: -1}", "train.class_weight.bad must be a number >= 0"),
])
def test_bad_input_exits_nonzero_and_leaves_no_run(tiny_csv, capsys, override, message):
    code, out, err = run_cli(capsys, "train", *sets(tiny_overrides(tiny_csv) + [override]))
    assert code == 2
    last = err.strip().splitlines()[-1]  # after tfkit's progress lines, if any
    assert message in last and last.startswith("tfkit: error:")
    assert not Path("runs").exists()  # not even a failed run: nothing was written
    assert not Path("saved_models").exists()


def test_one_class_label_column(workdir, capsys):
    Path("one.csv").write_text("text,label\n" + "\n".join(f"w{i},same" for i in range(20)))
    code, _, err = run_cli(capsys, "train", "--set", "data.source=csv", "--set",
                           "data.path=one.csv")
    assert code == 2 and "at least 2 classes" in err
    assert not Path("runs").exists()


def test_export_refuses_an_unfinished_run(workdir, capsys):
    run = Path("runs/x/1")
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "running"}')
    code, _, err = run_cli(capsys, "export", str(run))
    assert code == 2 and "not a finished tfkit run (state: running)" in err


def test_predict_errors(workdir, capsys):
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "text")
    assert code == 2 and "No SavedModel" in err
    Path("in.jsonl").write_text('{"text": "fine"}\n\n{"text": "oops\n')
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "--input", "in.jsonl")
    assert code == 2 and "input file 'in.jsonl' line 3: not valid JSON" in err, err
    Path("in.jsonl").write_text('{"text": "fine"}\n{"review": "other key"}\n')
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "--input", "in.jsonl")
    assert code == 2 and "'in.jsonl' line 2: no key 'text'" in err, err
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "--input", "in.xlsx")
    assert code == 2 and "does not exist" in err


def test_config_prints_every_key_resolved(workdir, capsys):
    import yaml

    from tfkit.config import load_config

    code, out, err = run_cli(capsys, "config", "fine_foods_text_lstm", "--set", "train.epochs=9")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed == load_config("fine_foods_text_lstm", ["train.epochs=9"]).to_dict()
    assert printed["train"]["epochs"] == 9 and printed["train"]["optimizer"] == "lazy_adam"
    Path("mine.yaml").write_text(out)  # a starting point that loads back as it is
    assert load_config("mine.yaml").to_dict() == printed
    code, out, err = run_cli(capsys, "config", "--set", "train.epoch=2")
    assert code == 2 and out == "" and "Unknown config key 'train.epoch'" in err


def test_models_lists_registry(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name in ("text_lstm", "text_bilstm", "text_gru", "text_cnn", "stacked_lstm"):
        assert name in out


def test_console_script_is_installed(workdir):
    """The installed `tfkit` entry point runs and exits non-zero on a bad config."""
    exe = Path(sys.executable).with_name("tfkit")
    assert exe.exists(), "pip install did not create the tfkit console script"
    result = subprocess.run([str(exe), "train", "--set", "train.bogus=1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Unknown config key 'train.bogus'" in result.stderr


@pytest.mark.parametrize("ignored", ["bad", "good"])
def test_a_class_weighing_nothing_is_never_learned(tiny_csv, capsys, ignored):
    """With one label's weight 0 its examples give no gradient: the model ends up predicting
    the other label for every test review (and metrics.json records the weights)."""
    code, out, err = run_cli(capsys, "train", *sets(tiny_overrides(tiny_csv, extra=[
        f"train.class_weight={{{ignored}: 0}}", "train.epochs=2", "train.learning_rate=0.05",
        "export.enabled=false"])))
    assert code == 0, err
    metrics = json.loads((Path(json.loads(out)["run_dir"]) / "metrics.json").read_text())
    assert metrics["class_weights"] == {"bad": 1.0, "good": 1.0, ignored: 0.0}
    column = metrics["label_names"].index(ignored)
    assert np.array(metrics["test_confusion_matrix"])[:, column].sum() == 0  # never predicted


def test_help_and_usage_errors_do_not_wait_for_tensorflow():
    """`import tfkit`, `tfkit --help` and argparse's errors run without importing TensorFlow
    (~5 s); the public names import it on first use, and `tfkit.train` stays the function
    when the `tfkit.training` module is imported first."""
    script = (
        "import sys, tfkit\n"
        "from tfkit.cli import main\n"
        "for argv in (['--help'], ['trian'], ['train', '--sett']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        print('exit', exc.code)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
        "from tfkit.evaluation import evaluate\n"
        "print(callable(tfkit.train), tfkit.evaluate is evaluate, 'tensorflow' in sys.modules)\n"
        "print(sorted(set(tfkit.__all__) - set(dir(tfkit))))\n"
        "print(all(getattr(tfkit, name) is not None for name in tfkit.__all__))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("usage: tfkit")
    assert lines[-7:] == ["exit 0", "exit 2", "exit 2", "False False", "True True True", "[]",
                          "True"]
    assert "invalid choice: 'trian'" in done.stderr
    assert "unrecognized arguments: --sett" in done.stderr


def test_config_and_models_answer_without_tensorflow(workdir):
    """`tfkit config` (every key checked, the builders' parameters included) and `tfkit
    models` read the registry and the builders' signatures from the source: no TensorFlow,
    no Keras. A bad config is still refused with the builder's parameters named."""
    script = (
        "import sys\n"
        "from tfkit.cli import main\n"
        "print(main(['config', 'fine_foods_han']), main(['models']),\n"
        "      main(['config', '--set', 'model.params.unitz=3']))\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-2:] == ["0 0 2", "False False"]
    assert "  name: han" in done.stdout and "sentence_units=" in done.stdout
    assert "Unknown argument model.params.unitz for model 'text_fasttext'" in done.stderr


def test_commands_that_import_tensorflow_print_none_of_its_start_up_lines(workdir):
    """TensorFlow's banner (the absl notice, oneDNN, the CPU features, the CUDA probe) is
    filtered from standard error; tfkit's own lines and TensorFlow's real ones still come."""
    from tfkit.cli import without_banner

    done = subprocess.run([sys.executable, "-m", "tfkit.cli", "predict", "saved_models/none", "x"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tfkit: error: No SavedModel at 'saved_models/none' (expected saved_model.pb, or version "
        "folders 1/, 2/, ... inside it)."], done.stderr
    # what is not part of the banner still reaches the user
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nI0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your "
             "machine, GPU will not be used.\nE0000 00:00:1.0 1 cuda_platform.cc:52] failed call "
             "to cuInit: INTERNAL: CUDA error\n")
    real = "W0000 00:00:1.0 1 op_kernel.cc:1] something a user should see\n"
    assert without_banner(noise + real + noise) == real


def test_tensorflow_info_lines_are_off_unless_the_user_asks_for_them(tmp_path):
    """After the CLI imports TensorFlow, its C++ INFO lines (here: reading a TFRecord file
    logs its buffer size) are not printed; a TF_CPP_MIN_LOG_LEVEL the user set wins. oneDNN's
    error line about boolean and int64 tensors, logged the first time a graph transposes
    one (a masked LSTM's mask), never reaches the user."""
    script = (
        "from tfkit.cli import import_tensorflow\n"
        "import_tensorflow()\n"
        "import tensorflow as tf\n"
        "with tf.io.TFRecordWriter('r.tfrecord') as writer:\n"
        "    writer.write(b'record')\n"
        "print(len(list(tf.data.TFRecordDataset('r.tfrecord'))))\n"
        "tf.function(tf.transpose)(tf.constant([[1, 0]], tf.int64))\n"
        "tf.function(lambda x: tf.transpose(x > 0))(tf.constant([[1.0]]))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for level, shown in ((None, False), ("0", True)):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path,
                              env=env if level is None else {**env, "TF_CPP_MIN_LOG_LEVEL": level})
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
        assert ("tf_record_dataset_op" in done.stderr) == shown, done.stderr
        assert "oneDNN supports" not in done.stderr, done.stderr


def test_the_config_checks_name_the_tables_they_check_against():
    from tfkit import config
    from tfkit.compiling import OPTIMIZERS
    from tfkit.data.text import SPLITS

    assert config.OPTIMIZERS == tuple(OPTIMIZERS) and config.SPLITS == tuple(SPLITS)
