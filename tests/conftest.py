"""Shared fixtures: tiny configs, tiny data, and isolated run/export folders."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    # one TensorFlow op thread per test worker (and the processes it starts): the workers
    # share the cores, so each taking them all only adds switching between threads
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import numpy as np
import pytest

import tfkit

POSITIVE = ["great taste, will buy again", "delicious and fresh", "love it, my kids love it",
            "excellent coffee, rich flavour", "best snack ever", "wonderful tea, great price"]
NEGATIVE = ["stale and bland", "awful taste, do not buy", "arrived broken, waste of money",
            "too salty, not good", "terrible smell", "bad quality, never again"]


def tiny_texts(n=48, seed=0):
    """A small two-class text set with real signal (positive vs negative phrases)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        pool = POSITIVE if label == 0 else NEGATIVE
        # several sentences per text, for the hierarchical models
        texts.append(". ".join(rng.choice(pool, size=rng.integers(1, 4))))
        labels.append(["good", "bad"][label])
    return texts, labels


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Runs each test in its own folder, so runs/ and saved_models/ never leak."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tiny_csv(path, n=60):
    """Writes :func:`tiny_texts` as a CSV with columns ``review`` and ``sentiment``."""
    import csv

    texts, labels = tiny_texts(n)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows(zip(texts, labels))
    return Path(path)


@pytest.fixture
def tiny_csv(workdir):
    return write_tiny_csv(workdir / "reviews.csv")


def tiny_overrides(csv_path=None, model="text_lstm", extra=()):
    """--set overrides that make any preset train in a few seconds; without the export
    (~2 s) unless ``extra`` asks for it (``export.enabled=true``)."""
    sets = [f"model.name={model}", "model.params={}", "train.epochs=1", "train.batch_size=8",
            "train.early_stopping_patience=null", "train.monitor=val_loss",
            "data.max_tokens=200", "data.max_len=16", "train.verbose=0", "export.enabled=false"]
    if csv_path is not None:
        sets += ["data.source=csv", f"data.path={csv_path}", "data.text_column=review",
                 "data.label_column=sentiment"]
    else:
        sets += ["data.limit=64"]
    return sets + list(extra)


@pytest.fixture
def tiny_config(tiny_csv):
    return tfkit.load_config(None, tiny_overrides(tiny_csv))


def summaries(folder, prefix=""):
    """``{tag: [(step, value proto), ...]}`` of the TensorBoard event files in ``folder``,
    for tags starting with ``prefix``."""
    import tensorflow as tf

    found = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith(prefix):
                    found.setdefault(value.tag, []).append((event.step, value))
    return found


def sets(overrides):
    """``--set`` arguments for the CLI from override strings."""
    return [arg for value in overrides for arg in ("--set", value)]


def run_cli(capsys, *argv):
    """Runs ``tfkit`` in this process: ``(exit code, stdout, stderr)``."""
    from tfkit.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err



def make_hub_preset(folder, words):
    """A tiny, randomly initialised BERT (one layer, width 8, no dropout) and its WordPiece
    tokenizer over ``words``, saved as a local keras-hub preset folder: what a pretrained
    preset is, without downloading one."""
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words))
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32, dropout=0.0).save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary).save_to_preset(str(folder))
    return str(folder)


HUB_WORDS = " ".join(POSITIVE + NEGATIVE).replace(",", " ").split()


@pytest.fixture(scope="session")
def hub_preset(tmp_path_factory):
    """A tiny local keras-hub preset (:func:`make_hub_preset`) knowing the tiny texts' words."""
    return make_hub_preset(tmp_path_factory.mktemp("hub") / "tiny_bert", HUB_WORDS)
