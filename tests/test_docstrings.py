"""Every ``Examples:`` block in tfkit's docstrings runs, and prints what it shows.

Each example runs in its own empty folder (what it exports or trains lands there) with the
names a notebook has: ``np``, ``tf``, ``keras`` and ``tfkit``, plus its module's globals.
``tfkit.training.train``'s trains the default preset on the real data (~10 s).
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkit

PACKAGE = Path(tfkit.__file__).parent


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
    expected = {"tfkit.training.train", "tfkit.export.export_for_serving", "tfkit.export.predict",
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
    runner.run(test, out=report.write, clear_globs=True)
    assert runner.failures == 0, report.getvalue()
