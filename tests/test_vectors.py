"""Pre-trained word vectors: reading GloVe / fastText files, starting (and freezing) a text
model's embedding from them, and what they are for: polarity the labels never taught."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_overrides
from test_cli import run_cli, sets

import tfkit
from tfkit.data import DataError, read_word_vectors, word_embedding

VOCAB = ["", "[UNK]", "good", "tasty", "bad", "meh"]


def test_reads_glove_fasttext_and_gzip_files(workdir):
    Path("glove.txt").write_text("bad -1 -2\ngood 1 2\nunused 9 9\ntasty 0.5 0.25\n")
    vectors, found = read_word_vectors("glove.txt", VOCAB)
    assert found.tolist() == [False, False, True, True, True, False]
    assert vectors.tolist() == [[0, 0], [0, 0], [1, 2], [0.5, 0.25], [-1, -2], [0, 0]]

    # fastText .vec: a "<words> <dim>" header, cased words, a trailing space on each line;
    # an exact match wins over a word that only lower-cases to it, in either order
    Path("wiki.vec").write_text("4 2\nGood 7 7 \ngood 1 2 \nTasty 3 4 \ntasty 5 6 \n")
    vectors, found = read_word_vectors("wiki.vec", VOCAB)
    assert vectors[2].tolist() == [1, 2] and vectors[3].tolist() == [5, 6]
    Path("cased.vec").write_text("2 2\nTasty 3 4 \nBAD 8 9 \n")
    vectors, found = read_word_vectors("cased.vec", VOCAB)
    assert vectors[3].tolist() == [3, 4] and vectors[4].tolist() == [8, 9]
    assert found.sum() == 2

    with gzip.open("glove.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("bad -1 -2\ngood 1 2\n")
    vectors, found = read_word_vectors("glove.txt.gz", VOCAB)
    assert vectors[4].tolist() == [-1, -2] and found.sum() == 2

    # GloVe 840B: some words hold spaces; the last `dim` fields are the numbers
    Path("spaces.txt").write_text("good 1 2\nmeh . 3 4\n")
    vectors, found = read_word_vectors("spaces.txt", VOCAB + ["meh ."])
    assert vectors[6].tolist() == [3, 4] and not found[5]


@pytest.mark.parametrize("content, message", [
    ("good 1 2\nbad 1\n", "'vectors.txt', line 2 ('bad'): expected 2 numbers (as on the first line), got 1."),
    ("good 1 2\nbad x 1\n", "'vectors.txt', line 2 ('bad'): the values after the word must be numbers."),
    ("good\n", "'vectors.txt', line 1: expected a word and its numbers"),
    ("other 1 2\nwords 3 4\n", "none of the vocabulary's 6 words has a vector there (first words: good, tasty"),
    (b"\x80\x81binary word2vec", "binary word2vec (.bin) files must be converted to text first"),
])
def test_bad_files_are_errors_naming_file_line_and_word(workdir, content, message):
    path = Path("vectors.txt")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as error:
        read_word_vectors(path, VOCAB)
    assert message in str(error.value)
    with pytest.raises(DataError, match="word vectors file 'nowhere.txt' does not exist"):
        read_word_vectors("nowhere.txt", VOCAB)


def test_only_the_words_rows_change_and_freezing_keeps_them(workdir):
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=8)
    pre.adapt(["good food", "bad food", "tasty snack"])
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=2,
                              embedding_dim=2, units=4)
    before = keras.ops.convert_to_numpy(word_embedding(model, pre.vocab_size).embeddings)
    Path("v.txt").write_text("good 1 2\nsnack 3 4\nnot_in_vocab 5 6\n")
    facts = tfkit.load_word_vectors(model, pre.vocabulary(), "v.txt")
    assert facts == {"path": "v.txt", "words_found": 2, "vocabulary": pre.vocab_size,
                     "coverage": round(2 / pre.vocab_size, 4), "frozen": False}
    after = keras.ops.convert_to_numpy(word_embedding(model, pre.vocab_size).embeddings)
    rows = {word: i for i, word in enumerate(pre.vocabulary())}
    assert after[rows["good"]].tolist() == [1, 2] and after[rows["snack"]].tolist() == [3, 4]
    others = [i for word, i in rows.items() if word not in ("good", "snack")]
    np.testing.assert_array_equal(after[others], before[others])  # random start kept
    assert word_embedding(model, pre.vocab_size).trainable

    Path("wide.txt").write_text("good 1 2 3\n")
    with pytest.raises(DataError, match=r"have 3 numbers per word, the model's embedding 2: "
                                        r"set model.params.embedding_dim=3"):
        tfkit.load_word_vectors(model, pre.vocabulary(), "wide.txt")
    fasttext = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
                                 embedding_dim=2, buckets=16)
    with pytest.raises(DataError, match="also holds 16 hashed n-gram rows"):
        tfkit.load_word_vectors(fasttext, pre.vocabulary(), "v.txt", freeze=True)
    tfkit.load_word_vectors(fasttext, pre.vocabulary(), "v.txt")  # trainable: fine
    table = keras.ops.convert_to_numpy(word_embedding(fasttext, pre.vocab_size).embeddings)
    assert table[rows["good"]].tolist() == [1, 2]


@pytest.mark.parametrize("name, params", [
    ("han", {"embedding_dim": 2, "word_units": 2, "sentence_units": 2}),
    ("multitask", {"encoder": "text_gru", "encoder_params": {"embedding_dim": 2, "units": 2},
                   "heads": {"kind": {"num_classes": 2}}}),
    ("text_transformer", {"embedding_dim": 2, "num_heads": 1}),
])
def test_nested_and_hierarchical_embeddings_take_them(workdir, name, params):
    vocabulary = ["", "[UNK]", "good", "bad"]
    model = tfkit.build_model(name, vocab_size=4, **params,
                              **({} if "heads" in params else {"num_classes": 2}))
    Path("v.txt").write_text("bad 3 4\n")
    assert tfkit.load_word_vectors(model, vocabulary, "v.txt", freeze=True)["words_found"] == 1
    layer = word_embedding(model, 4)
    assert keras.ops.convert_to_numpy(layer.embeddings)[3].tolist() == [3, 4]
    assert not layer.trainable
    assert layer.embeddings.path not in {v.path for v in model.trainable_variables}


@pytest.mark.parametrize("name", ["words.vec", "words.vec.gz"])
def test_saved_vectors_read_back_row_for_row(workdir, name):
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=8)
    pre.adapt(["good food", "bad tea", "tasty snack"])
    vocabulary = pre.vocabulary()
    source = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size, num_classes=2,
                               embedding_dim=3, buckets=16)
    tfkit.data.save_word_vectors(source, vocabulary, name)
    target = tfkit.build_model("text_gru", vocab_size=pre.vocab_size, num_classes=2,
                               embedding_dim=3, units=2)
    assert tfkit.load_word_vectors(target, vocabulary, name)["words_found"] == len(vocabulary) - 2
    table = keras.ops.convert_to_numpy(word_embedding(source, len(vocabulary)).embeddings)
    copied = keras.ops.convert_to_numpy(word_embedding(target, len(vocabulary)).embeddings)
    np.testing.assert_allclose(copied[2:], table[2: len(vocabulary)], rtol=1e-5)


# Words whose polarity the training labels never give: each synonym appears in training
# once in a positive and once in a negative review, so only the vectors know which it is.
POSITIVE, NEGATIVE = "good", "bad"
POSITIVE_SYNONYMS = ["great", "tasty", "lovely", "superb", "yummy", "fresh", "nice", "fine"]
NEGATIVE_SYNONYMS = ["awful", "stale", "gross", "nasty", "rotten", "bland", "soggy", "vile"]
FILLER = ["the", "food", "was", "really", "very", "quite", "this", "snack", "tea", "so"]
# only in the vectors file and in unseen.csv: never in a training review
UNSEEN_POSITIVE = ["scrumptious", "delicious", "divine", "heavenly"]
UNSEEN_NEGATIVE = ["revolting", "disgusting", "inedible", "horrid"]


def write_synonym_data(rng):
    def review(word):
        words = list(rng.choice(FILLER, size=4)) + [word]
        rng.shuffle(words)
        return " ".join(words)

    train = [(review(POSITIVE), "pos") for _ in range(120)]
    train += [(review(NEGATIVE), "neg") for _ in range(120)]
    for word in POSITIVE_SYNONYMS + NEGATIVE_SYNONYMS:
        train += [(review(word), "pos"), (review(word), "neg")]
    test = [(review(word), "pos") for word in POSITIVE_SYNONYMS for _ in range(4)]
    test += [(review(word), "neg") for word in NEGATIVE_SYNONYMS for _ in range(4)]
    unseen = [(review(word), "pos") for word in UNSEEN_POSITIVE for _ in range(4)]
    unseen += [(review(word), "neg") for word in UNSEEN_NEGATIVE for _ in range(4)]
    for name, rows in (("train.csv", train), ("test.csv", test), ("unseen.csv", unseen)):
        with open(name, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("review", "sentiment"), *rows])
    # 8-dimensional vectors: polarity along the first axis, the rest noise
    lines = []
    positive = [POSITIVE, *POSITIVE_SYNONYMS, *UNSEEN_POSITIVE]
    negative = [NEGATIVE, *NEGATIVE_SYNONYMS, *UNSEEN_NEGATIVE]
    # words the preprocessor would never produce (capitals, punctuation) are never added
    for word in [*positive, *negative, *FILLER, "Hello", "e.g.", "u.s."]:
        sign = 1 if word in positive else -1 if word in negative else 0
        vector = np.concatenate([[sign * 0.5], rng.normal(0, 0.1, 7)])
        lines.append(" ".join([word, *(f"{v:.4f}" for v in vector)]))
    Path("vectors.txt").write_text("\n".join(lines) + "\n")


def test_vectors_carry_what_the_labels_never_taught(workdir):
    """Frozen, tuned and added vectors on reviews whose synonyms the labels never teach."""
    write_synonym_data(np.random.default_rng(0))
    base = tiny_overrides(Path("train.csv"), extra=[
        "data.test_path=test.csv", "model.params={embedding_dim: 8, units: 8}",
        "train.epochs=8", "train.learning_rate=0.01", "export.enabled=false"])
    without = tfkit.train(None, base)
    frozen = tfkit.train(None, base + ["model.word_vectors=vectors.txt",
                                       "model.freeze_word_vectors=true"])
    tuned = tfkit.train(None, base + ["model.word_vectors=vectors.txt"])
    # measured: 0.41 without vectors (the synonyms are coin flips), 1.0 frozen, 0.73 tuned
    # (training moves the synonyms' rows on reviews that pull both ways)
    assert without.metrics["test_accuracy"] <= 0.6
    assert frozen.metrics["test_accuracy"] >= 0.95
    assert tuned.metrics["test_accuracy"] >= without.metrics["test_accuracy"] + 0.2
    vocabulary = frozen.preprocessor.vocabulary()
    assert frozen.metrics["word_vectors"] == {
        "path": "vectors.txt", "words_found": 28, "vocabulary": len(vocabulary),
        "coverage": round(28 / len(vocabulary), 4), "frozen": True}
    metrics = json.loads((frozen.run_dir / "metrics.json").read_text())
    assert metrics["word_vectors"]["words_found"] == 28
    # frozen: the trained embedding is the file's, row for row
    file = dict(line.split(" ", 1) for line in Path("vectors.txt").read_text().splitlines())
    table = keras.ops.convert_to_numpy(word_embedding(frozen.model, len(vocabulary)).embeddings)
    for word in ("good", "stale", "tea"):
        np.testing.assert_allclose(table[vocabulary.index(word)],
                                   np.array(file[word].split(), np.float32))
    tuned_table = keras.ops.convert_to_numpy(
        word_embedding(tuned.model, len(vocabulary)).embeddings)
    assert np.abs(tuned_table[vocabulary.index("good")]
                  - np.array(file["good"].split(), np.float32)).max() > 1e-3  # it trained
    assert without.metrics["word_vectors"] is None

    # words training never saw get their vectors, in the run and in serving: the file's
    # words that training lacks, in file order, and only those it would produce
    added = tfkit.train(None, base + ["name=added", "model.word_vectors=vectors.txt",
                                      "model.freeze_word_vectors=true",
                                      "model.word_vectors_vocabulary=100", "export.enabled=true"])
    plain = frozen  # the same run without the added words
    vocabulary = added.preprocessor.vocabulary()
    assert vocabulary[len(plain.preprocessor.vocabulary()):] == UNSEEN_POSITIVE + UNSEEN_NEGATIVE
    assert added.metrics["word_vectors"]["words_found"] == 36
    saved = json.loads((added.run_dir / "preprocessor.json").read_text())
    assert saved["vocabulary"] == vocabulary and saved["max_tokens"] == len(vocabulary)
    unseen = ["data.test_path=unseen.csv"]
    assert tfkit.evaluate(plain.run_dir, unseen)["test_accuracy"] <= 0.6  # 0.41: OOV + filler
    assert tfkit.evaluate(added.run_dir, unseen)["test_accuracy"] >= 0.95
    answers = tfkit.predict(added.export_path, ["this snack was so scrumptious", "the tea was really horrid"])
    assert [answer["label"] for answer in answers] == ["pos", "neg"]


@pytest.mark.parametrize("override, message", [
    ("model.word_vectors=missing.txt", "word vectors file 'missing.txt' does not exist"),
    ("model.word_vectors=wide.txt", "set model.params.embedding_dim=3"),
    ("model.freeze_word_vectors=true", "model.freeze_word_vectors is set but model.word_vectors is not"),
])
def test_bad_vectors_exit_2_before_a_run_folder(tiny_csv, capsys, override, message):
    Path("wide.txt").write_text("great 1 2 3\n")
    code, _, err = run_cli(capsys, "train", *sets(tiny_overrides(tiny_csv) + [override]))
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert message in last and last.startswith("tfkit: error:")
    assert not Path("runs").exists()


def test_image_models_refuse_word_vectors(workdir):
    with pytest.raises(tfkit.ConfigError, match="model.word_vectors is for text models; "
                                                "model 'image_cnn' reads image"):
        tfkit.load_config("digits_cnn", ["model.word_vectors=v.txt"])


def test_added_words_need_whitespace_splitting(workdir):
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=8, split="character")
    pre.adapt(["美味しい"])
    Path("v.txt").write_text("美 1 2\n")
    with pytest.raises(DataError, match="data.split is 'character': use data.split: whitespace"):
        tfkit.data.add_vector_words(pre, "v.txt", 10)
    with pytest.raises(tfkit.ConfigError, match="model.word_vectors_vocabulary is set but "
                                                "model.word_vectors is not"):
        tfkit.load_config(None, ["model.word_vectors_vocabulary=10"])
