"""Your own model in tfkit's pipeline: registered in Python, or installed as an entry point."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest
from conftest import tiny_overrides

from tfkit.cli import main
from tfkit.models import MODELS, Entry, model_params

PLUGIN = '''
import keras
from tfkit.models import Entry


@keras.saving.register_keras_serializable(package="tfkit_demo")
class Scale(keras.layers.Layer):  # a custom layer: model.keras only loads where it is registered
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def build_demo_gru(*, vocab_size, num_classes, units=6):
    """A GRU with a custom layer, from outside tfkit."""
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 8, mask_zero=True)(ids)
    x = Scale()(keras.layers.GRU(units)(x))
    return keras.Model(ids, keras.layers.Dense(num_classes, activation="softmax")(x))


DEMO_GRU = Entry(build_demo_gru, "tokens")
NOT_AN_ENTRY = build_demo_gru
'''


@pytest.fixture
def registry():
    """Restores MODELS after the test (registering and loading plug-ins add to it)."""
    saved = dict(MODELS)
    yield MODELS
    MODELS.clear()
    MODELS.update(saved)


def install(site: Path, module: str, entry_points: str) -> Path:
    """What `pip install` leaves for a package declaring entry points: its module and a
    .dist-info folder with METADATA and entry_points.txt."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(PLUGIN, encoding="utf-8")
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return site


def sets(overrides):
    return [arg for value in overrides for arg in ("--set", value)]


def tiny_builder(*, vocab_size, num_classes, units=4):
    return keras.Sequential([keras.layers.Embedding(vocab_size, units),
                             keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(num_classes, activation="softmax")])


def test_a_model_registered_in_python_trains_evaluates_and_exports(tiny_csv, capsys, registry):
    registry["tiny_mean"] = Entry(tiny_builder, "tokens")
    assert model_params("tiny_mean") == {"units": 4}
    assert main(["models"]) == 0  # a builder without a docstring is listed too
    assert "tiny_mean      [tokens] \n" in capsys.readouterr().out
    code = main(["train", *sets(tiny_overrides(tiny_csv, model="tiny_mean", extra=[
        "model.params={units: 3}", "export.blessing=false", "export.enabled=true"]))])  # the export, not the model's score
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert (Path(summary["export_path"]) / "saved_model.pb").is_file()
    assert main(["evaluate", summary["run_dir"]]) == 0, capsys.readouterr().err


def builder_positional(vocab_size, num_classes, units=4):
    return tiny_builder(vocab_size=vocab_size, num_classes=num_classes, units=units)


def builder_no_default(*, vocab_size, num_classes, units):
    return tiny_builder(vocab_size=vocab_size, num_classes=num_classes, units=units)


def builder_no_classes(*, vocab_size, units=4):
    return tiny_builder(vocab_size=vocab_size, num_classes=2, units=units)


@pytest.mark.parametrize("builder, inputs, message", [
    (tiny_builder, "text", "inputs must be one of tokens, documents, image, sequence, text_table, hub_text, tfidf, encoder"),
    (builder_positional, "tokens", "argument 'units' must be keyword-only with a default"),
    (builder_no_default, "tokens", "argument 'units' must be keyword-only with a default"),
    (builder_no_classes, "tokens", "must take num_classes (or heads)"),
    ("build_me", "tokens", "must be a function returning a keras.Model"),
])
def test_entry_refuses_a_builder_the_config_cannot_drive(builder, inputs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Entry(builder, inputs)


def test_an_installed_package_adds_models_through_entry_points(tiny_csv, capsys, registry,
                                                               monkeypatch, tmp_path):
    site = install(tmp_path / "site", "tfkit_demo_models",
                   "[tfkit.models]\ndemo_gru = tfkit_demo_models:DEMO_GRU\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "tfkit_demo_models", raising=False)

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "demo_gru" in listing and "units=6" in listing
    assert "A GRU with a custom layer" in listing

    code = main(["train", *sets(tiny_overrides(tiny_csv, model="demo_gru"))])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = json.loads(out)["run_dir"]

    # a fresh `tfkit evaluate`: the model name in the run's config.yaml loads the package,
    # which registers its custom layer, so model.keras loads with safe_mode=True
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "tfkit.cli", "evaluate", run_dir],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_examples"] > 0

    # without the package, the same run names the model it cannot find
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "tfkit.cli", "evaluate", run_dir],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "Unknown model 'demo_gru'" in result.stderr, result.stderr


@pytest.mark.parametrize("target, message", [
    ("tfkit_bad_models:NOT_AN_ENTRY", "must be a tfkit.models.Entry(builder, inputs)"),
    ("tfkit_missing_module:DEMO_GRU", "failed to load: ModuleNotFoundError"),
])
def test_a_broken_entry_point_is_an_error_naming_it(target, message, tiny_csv, capsys, registry,
                                                    monkeypatch, tmp_path):
    site = install(tmp_path / "site", "tfkit_bad_models", f"[tfkit.models]\nbad = {target}\n")
    monkeypatch.syspath_prepend(str(site))
    code = main(["train", *sets(tiny_overrides(tiny_csv, model="bad"))])
    err = capsys.readouterr().err
    assert code == 2
    assert f"model 'bad' = '{target}'" in err and "package tfkit_bad_models" in err
    assert message in err
    assert not Path("runs").exists()
