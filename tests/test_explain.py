"""Leave-one-out word importance: from an exported model's raw strings (tfkit explain) and
from any callable; the words that decide a prediction come out on top."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from test_cli import run_cli

import tfkit
from tfkit.explain import word_importance

FILLER = ["the", "food", "was", "really", "very", "quite", "this", "snack", "tea", "so"]


@pytest.fixture
def sentiment_export(workdir):
    """A text_lstm trained on five-word reviews whose one sentiment word decides the label."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        words = list(rng.choice(FILLER, size=4)) + ["good" if i % 2 else "bad"]
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if i % 2 else "neg"))
    with open("reviews.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("review", "sentiment"), *rows])
    result = tfkit.train(None, tiny_overrides(Path("reviews.csv"), extra=[
        "train.epochs=6", "train.learning_rate=0.01", "model.params={embedding_dim: 8, units: 8}",
        "name=sentiment", "export.enabled=true"]))
    assert result.metrics["test_accuracy"] == 1.0
    return result.export_path


def test_the_deciding_word_comes_first(sentiment_export, capsys):
    texts = ["the tea was really good", "this snack was so bad"]
    code, out, err = run_cli(capsys, "explain", str(sentiment_export), *texts, "--top", "2")
    assert code == 0, err
    answers = [json.loads(line) for line in out.strip().splitlines()]
    assert [a["input"] for a in answers] == texts
    assert [a["label"] for a in answers] == ["pos", "neg"]
    for answer, word in zip(answers, ["good", "bad"]):
        assert answer["top"][0] == word and len(answer["top"]) == 2
        importance = dict(answer["words"])
        assert [w for w, _ in answer["words"]] == answer["input"].split()  # text order
        # measured: good 0.137 (without it the model still leans positive: 0.86), bad 0.76;
        # every filler word under 0.008 either way
        assert importance[word] > 0.1
        assert all(abs(v) < importance[word] / 5 for w, v in importance.items() if w != word)
    # the probability is the SavedModel's own answer for the whole text
    predicted = tfkit.predict(sentiment_export, texts)
    assert answers[0]["probability"] == pytest.approx(predicted[0]["probabilities"]["pos"], abs=1e-5)
    assert tfkit.explain_predictions(sentiment_export, texts[:1], top=2)[0] == {
        k: v for k, v in answers[0].items() if k != "input"}


def test_importance_is_the_drop_without_the_word():
    calls = []

    def probabilities(texts):  # p(class 1) = 0.1 + 0.3 per "yes", class 0 the rest
        calls.append(len(texts))
        p = np.array([min(0.1 + 0.3 * t.split().count("yes"), 1.0) for t in texts])
        return np.stack([1 - p, p], axis=1)

    out = word_importance(probabilities, ["yes yes no", "no"], batch_size=3)
    assert out[0]["class_id"] == 1 and out[0]["probability"] == pytest.approx(0.7)
    assert out[0]["words"] == [("yes", pytest.approx(0.3)), ("yes", pytest.approx(0.3)),
                               ("no", pytest.approx(0.0))]
    assert out[1] == {"class_id": 0, "probability": pytest.approx(0.9),
                      "words": [("no", pytest.approx(0.0))]}
    assert calls == [3, 3]  # 4 + 2 variants in batches of 3
    # character models: the pieces are the characters, spaces dropped
    chars = word_importance(probabilities, ["美 味"], split="character")[0]["words"]
    assert [c for c, _ in chars] == ["美", "味"]


def test_explain_errors(workdir, capsys):
    code, _, err = run_cli(capsys, "explain", "saved_models/none")
    assert code == 2 and "nothing to explain: give texts or --input FILE" in err
    code, _, err = run_cli(capsys, "explain", "saved_models/none", "text")
    assert code == 2 and "No SavedModel" in err
