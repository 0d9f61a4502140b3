"""The documentation's code runs: every ``Examples:`` block in tfkit's docstrings (and prints
what it shows), README's Python block, and README's config block is the preset it says it is.

Each docstring example runs in its own empty folder (what it exports or trains lands there) with the
names a notebook has: ``np``, ``tf``, ``keras`` and ``tfkit``, plus its module's globals.
``tfkit.training.train``'s trains the default preset on the real data (~10 s).
"""

from __future__ import annotations

import doctest
import importlib
import io
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import tfkit
from tfkit.config import load_config
from tfkit.models import MODELS

PACKAGE = Path(tfkit.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def module_names() -> list[str]:
    names = []
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def docstring_examples() -> list:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for name in module_names():
        for test in finder.find(importlib.import_module(name)):
            if test.examples:
                found[test.name] = test
    return [pytest.param(test, id=name) for name, test in sorted(found.items())]


EXAMPLES = docstring_examples()


def test_the_public_builders_and_entry_points_have_examples():
    names = {param.id for param in EXAMPLES}
    expected = {"tfkit.training.train", "tfkit.export.export_for_serving", "tfkit.served.predict",
                "tfkit.data.sources.load_data", "tfkit.data.text.TextPreprocessor",
                "tfkit.models.build_model", "tfkit.models.text.build_text_lstm",
                "tfkit.models.hierarchical.build_han", "tfkit.models.vision.build_image_cnn"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_example_runs(test, workdir):
    test.globs.update(np=np, tf=tf, keras=keras, tfkit=tfkit)
    keras.utils.set_random_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    registered = dict(MODELS)  # an example may register a model
    try:
        runner.run(test, out=report.write, clear_globs=True)
    finally:
        MODELS.clear()
        MODELS.update(registered)
    assert runner.failures == 0, report.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_blocks("python"))))
def test_readme_python_blocks_run(index, workdir):
    namespace = {}
    registered = dict(MODELS)  # "Your own model" registers one
    try:
        exec(compile(readme_blocks("python")[index], str(README), "exec"), namespace)
    finally:
        MODELS.clear()
        MODELS.update(registered)
    result = namespace["result"]
    assert result.metrics["test_accuracy"] > 0.7
    assert (result.export_path / "saved_model.pb").is_file()


def test_readme_config_block_is_the_preset_it_names(tmp_path):
    block = next(b for b in readme_blocks("yaml") if b.startswith("name: fine_foods_text_lstm"))
    (tmp_path / "readme.yaml").write_text(block, encoding="utf-8")
    shown = load_config(tmp_path / "readme.yaml").to_dict()
    assert shown == load_config("fine_foods_text_lstm").to_dict()
    # "every key shown": a key missing from README would have been filled by its default
    written = yaml.safe_load(block)
    assert {s: set(v) for s, v in written.items() if isinstance(v, dict)} == \
        {s: set(v) for s, v in shown.items() if isinstance(v, dict)}


def test_every_readme_config_block_loads(tmp_path):
    blocks = [b for b in readme_blocks("yaml")
              if set(yaml.safe_load(b)) <= {"name", "data", "model", "train", "export", "tune"}]
    assert len(blocks) >= 3  # the full preset, "Your own data", multi-task
    for number, block in enumerate(blocks):
        (tmp_path / f"block{number}.yaml").write_text(block, encoding="utf-8")
        load_config(tmp_path / f"block{number}.yaml")  # unknown keys, wrong types: ConfigError
