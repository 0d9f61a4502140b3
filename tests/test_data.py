import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_overrides, tiny_texts

import tfkit
from tfkit.config import DataConfig
from tfkit.data import DataError, bucket_boundaries, load_data


def test_fine_foods_is_the_real_embedded_set():
    data = load_data(DataConfig(source="fine_foods"))
    assert data.label_names == ["great", "other"]
    assert len(data.train) + len(data.validation) == 4000 and len(data.test) == 1000
    assert len(data.validation) == 400
    assert isinstance(data.train.x[0], str) and len(data.train.x[0]) > 0
    again = load_data(DataConfig(source="fine_foods"))
    assert list(again.validation.x[:5]) == list(data.validation.x[:5])  # fixed seed


def test_csv_source_string_labels(tiny_csv):
    data = load_data(DataConfig(source="csv", path=str(tiny_csv), text_column="review",
                                label_column="sentiment", validation_fraction=0.25))
    assert data.label_names == ["bad", "good"]
    assert len(data.train) + len(data.validation) + len(data.test) == 60


def test_csv_int_labels_multiclass_with_test_file(workdir):
    (workdir / "a.csv").write_text("text,label\n" + "\n".join(f"t{i} word,{i % 3}" for i in range(30)))
    (workdir / "b.csv").write_text("text,label\nw,0\nx,2\n")
    data = load_data(DataConfig(source="csv", path="a.csv", test_path="b.csv"))
    assert data.label_names == ["0", "1", "2"]
    assert data.test.y.tolist() == [0, 2]


def test_csv_errors_name_the_problem(workdir, tiny_csv):
    with pytest.raises(DataError, match=r"no column 'text'.*\['review', 'sentiment'\]"):
        load_data(DataConfig(source="csv", path=str(tiny_csv)))
    with pytest.raises(DataError, match="'missing.csv' does not exist"):
        load_data(DataConfig(source="csv", path="missing.csv"))
    (workdir / "one.csv").write_text("text,label\na,x\nb,x\nc,x\n")
    with pytest.raises(DataError, match="at least 2 classes.*'x'"):
        load_data(DataConfig(source="csv", path="one.csv"))
    (workdir / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="has no rows"):
        load_data(DataConfig(source="csv", path="empty.csv"))
    (workdir / "nolabel.csv").write_text("text,label\na,x\nb,\nc,y\n")
    with pytest.raises(DataError, match="'nolabel.csv' row 2: column 'label' has no label"):
        load_data(DataConfig(source="csv", path="nolabel.csv"))
    (workdir / "t.csv").write_text("text,label\na,x\nb,z\n")
    (workdir / "train.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match=r"'t.csv' row 2: label 'z' in column 'label' does not "
                       r"occur in the training data \(known: \['x', 'y'\]\)"):
        load_data(DataConfig(source="csv", path="train.csv", test_path="t.csv"))


def test_tsv_and_json_lines_files_read_like_csv(workdir):
    """Same texts and labels from a CSV, a TSV and a JSON Lines file (commas and quotes in
    the texts, a blank line, extra keys); JSON Lines errors name the line."""
    import pandas as pd

    texts, labels = tiny_texts(20)
    texts = [f'{text}, said "someone"' for text in texts]
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv("r.csv", index=False)
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv("r.tsv", index=False, sep="\t")
    lines = [json.dumps({"review": t, "sentiment": y, "stars": 5}, ensure_ascii=False)
             for t, y in zip(texts, labels)]
    (workdir / "r.jsonl").write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n")
    loaded = {path: load_data(DataConfig(source="csv", path=path, text_column="review",
                                         label_column="sentiment", validation_fraction=0.0))
              for path in ("r.csv", "r.tsv", "r.jsonl")}
    for path, data in loaded.items():
        assert data.label_names == ["bad", "good"], path
        assert data.train.x.tolist() == loaded["r.csv"].train.x.tolist(), path
        assert data.test.y.tolist() == loaded["r.csv"].test.y.tolist(), path
    (workdir / "bad.jsonl").write_text(lines[0] + "\n" + '{"review": "x", "sentiment": ' + "\n")
    with pytest.raises(DataError, match=r"JSON Lines file 'bad.jsonl' line 2: not valid JSON"):
        load_data(DataConfig(source="csv", path="bad.jsonl", text_column="review"))
    (workdir / "list.jsonl").write_text('["a", "good"]\n')
    with pytest.raises(DataError, match=r"line 1: expected an object"):
        load_data(DataConfig(source="csv", path="list.jsonl"))
    (workdir / "gap.jsonl").write_text("\n".join(lines[:3] + ['{"review": "no label"}']))
    with pytest.raises(DataError, match="'gap.jsonl' line 4: column 'sentiment' has no label"):
        load_data(DataConfig(source="csv", path="gap.jsonl", text_column="review",
                             label_column="sentiment"))
    with pytest.raises(DataError, match=r"TSV file 'r.tsv' has no column 'text'"):
        load_data(DataConfig(source="csv", path="r.tsv"))


def test_files_in_other_encodings_need_data_encoding(workdir, capsys):
    rows = "text,label\n" + "".join(f"\u201ccaf\xe9\u201d {i},{'a' if i % 2 else 'b'}\n"
                                    for i in range(20))
    Path("windows.csv").write_bytes(rows.encode("cp1252"))  # Excel on Windows
    with pytest.raises(DataError, match=r"CSV file 'windows.csv' line 2 is not UTF-8 \(byte "
                                        r"0x93\): save the file as UTF-8, or set data.encoding"):
        load_data(DataConfig(source="csv", path="windows.csv"))
    data = load_data(DataConfig(source="csv", path="windows.csv", encoding="cp1252",
                                validation_fraction=0, test_fraction=0.5))
    assert sorted(data.train.x.tolist() + data.test.x.tolist())[0] == "\u201ccaf\xe9\u201d 0"
    Path("latin.jsonl").write_bytes("".join(
        json.dumps({"text": f"\xe9t\xe9 {i}", "label": i % 2}, ensure_ascii=False) + "\n"
        for i in range(20)).encode("latin-1"))
    with pytest.raises(DataError, match="JSON Lines file 'latin.jsonl' line 1 is not UTF-8"):
        load_data(DataConfig(source="csv", path="latin.jsonl"))
    data = load_data(DataConfig(source="csv", path="latin.jsonl", encoding="latin-1"))
    assert all(text.startswith("\xe9t\xe9 ") for text in data.train.x)
    with pytest.raises(DataError, match="data.encoding 'utf-9' is not a text encoding"):
        load_data(DataConfig(source="csv", path="windows.csv", encoding="utf-9"))
    # tfkit predict / explain --input: the same, with --encoding
    from test_cli import run_cli

    Path("more.txt").write_bytes("tr\xe8s bon\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "--input", "more.txt")
    assert code == 2 and "input file 'more.txt' is not UTF-8 (byte 0xe8): give its encoding" in err
    code, _, err = run_cli(capsys, "predict", "saved_models/none", "--input", "more.txt",
                           "--encoding", "latin-1")
    assert code == 2 and "No SavedModel" in err  # the file was read; only the model is missing
    code, _, err = run_cli(capsys, "explain", "saved_models/none", "--input", "more.txt",
                           "--encoding", "klingon")
    assert code == 2 and "--encoding 'klingon' is not a text encoding" in err


def test_directory_source(workdir):
    texts, labels = tiny_texts(20)
    for i, (text, label) in enumerate(zip(texts, labels)):
        folder = workdir / "docs" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(text)
    data = load_data(DataConfig(source="directory", path="docs", test_fraction=0.25,
                                validation_fraction=0.2))
    assert data.label_names == ["bad", "good"]
    assert len(data.train) + len(data.validation) + len(data.test) == 20
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(source="directory", path="nowhere"))


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        data = load_data(DataConfig(source="tfds", name="imdb_reviews", validation_fraction=0.25))
    assert data.label_names == ["neg", "pos"]
    assert len(data.train) == 18 and len(data.validation) == 6 and len(data.test) == 24
    assert all(isinstance(t, str) for t in data.train.x)


def test_tfds_errors():
    with pytest.raises(DataError, match="data.name must name"):
        load_data(DataConfig(source="tfds"))
    with pytest.raises(DataError, match="no dataset 'no_such_dataset'"):
        load_data(DataConfig(source="tfds", name="no_such_dataset"))


@pytest.mark.parametrize("source, key, value", [
    ("fine_foods", "test_path", "mine.csv"), ("digits", "path", "x.npz"),
    ("csv", "name", "imdb_reviews"), ("numpy", "test_path", "t.npz"),
    ("fine_foods", "encoding", "latin-1")])
def test_a_data_key_the_source_does_not_read_is_an_error(source, key, value):
    with pytest.raises(DataError, match=rf"data\.{key} is set \('{value}'\) but data\.source "
                                        rf"'{source}' does not read it; it is read by "):
        load_data(DataConfig(source=source, **{key: value}))


def test_unknown_source():
    with pytest.raises(DataError, match="Unknown data.source 'sql'"):
        load_data(DataConfig(source="sql"))


def test_preprocessor_right_pads_and_never_emits_empty_rows():
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=6)
    pre.adapt(["good food", "bad food", "good tea"])
    ids = pre(tf.constant(["good food", "", "!!! ...", "zzz qqq", "good " * 100,
                           "GOOD<br />food", "Très bon café 美味しい"])).numpy()
    assert ids.shape == (7, 6)
    for row in ids:
        length = int((row != 0).sum())
        assert length >= 1
        assert (row[:length] != 0).all() and (row[length:] == 0).all()  # right padded
    assert ids[1].tolist() == [1, 0, 0, 0, 0, 0]  # empty -> one OOV token
    assert ids[4].tolist() == [ids[0][0]] * 6  # truncated to max_len
    assert ids[5].tolist() == ids[0].tolist()  # lower-cased, <br /> removed


def test_preprocessor_save_load(tmp_path):
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=6)
    pre.adapt(["good food", "bad food"])
    pre.save(tmp_path)
    again = tfkit.load_preprocessor(tmp_path)
    probe = tf.constant(["good bad food", "new"])
    assert again.vocab_size == pre.vocab_size
    np.testing.assert_array_equal(again(probe).numpy(), pre(probe).numpy())


def test_character_split_reads_text_without_spaces(tmp_path):
    """Whitespace splitting makes a Japanese sentence one token; split="character" gives its
    characters (white space and punctuation dropped), keeps the no-empty-row rule, and
    survives the preprocessor's JSON (a flat and a hierarchical one)."""
    words = tfkit.TextPreprocessor(max_tokens=50, max_len=8)
    words.adapt(["とても美味しいです", "まずいです"])
    assert words.vocabulary()[2:] == ["まずいです", "とても美味しいです"]  # whole sentences
    chars = tfkit.TextPreprocessor(max_tokens=50, max_len=8, split="character")
    chars.adapt(["とても美味しいです", "まずいです"])
    assert sorted(chars.vocabulary()[2:]) == sorted(set("とても美味しいですまず"))
    ids = chars(tf.constant(["美味しい！ です", "", "。。。", "Ok"])).numpy()
    vocabulary = chars.vocabulary()
    assert ["".join(vocabulary[i] for i in row if i) for row in ids] == \
        ["美味しいです", "[UNK]", "[UNK]", "[UNK][UNK]"]
    chars.save(tmp_path)
    again = tfkit.load_preprocessor(tmp_path)
    assert again.split == "character"
    np.testing.assert_array_equal(again(tf.constant(["美味しい", "まずい"])).numpy(),
                                  chars(tf.constant(["美味しい", "まずい"])).numpy())
    documents = tfkit.HierarchicalTextPreprocessor(max_tokens=50, max_sentences=3, max_words=4,
                                                   split="character")
    documents.adapt(["美味しい。まずい！"])
    assert documents(tf.constant(["美味しい。まずい！"])).numpy().shape == (1, 2, 4)
    documents.save(tmp_path)
    assert tfkit.load_preprocessor(tmp_path).split == "character"
    with pytest.raises(ValueError, match="split must be one of whitespace, character"):
        tfkit.TextPreprocessor(split="characters")


JA_TRAIN = {"good": ["美味しいです", "大好きです", "最高の味", "新鮮でした", "とても良い", "また買います"],
            "bad": ["まずいです", "大嫌いです", "最悪の味", "古かったです", "とても悪い", "二度と買いません"]}
JA_TEST = {"good": ["美味しかった", "好きな味", "最高でした", "新鮮な野菜", "良い品", "また買う"],
           "bad": ["まずかった", "嫌いな味", "最悪でした", "古い野菜", "悪い品", "二度と買わない"]}


def test_character_split_trains_and_serves_japanese(workdir):
    """Japanese reviews, tested on phrasings the training set never has: with whitespace
    splitting every test review is one unknown token (accuracy 0.5, one answer for all);
    with data.split=character the default fastText model reads characters and their
    bigrams, and the SavedModel does the same on raw strings."""
    import csv

    from conftest import tiny_overrides

    from tfkit.served import predict

    rng = np.random.default_rng(0)
    with open("train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for i in range(80):
            label = ["good", "bad"][i % 2]
            writer.writerow(["。".join(rng.choice(JA_TRAIN[label], size=rng.integers(1, 3))), label])
    with open("test.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("review", "sentiment")] + [
            (text, label) for label, texts in JA_TEST.items() for text in texts])
    results = {}
    for split in ("whitespace", "character"):
        results[split] = tfkit.train(None, tiny_overrides("train.csv", model="text_fasttext", extra=[
            "data.test_path=test.csv", f"data.split={split}", "train.epochs=12",
            "data.max_len=32", f"name=ja_{split}",
            f"export.enabled={split == 'character'}"]))  # the one served below
    assert results["whitespace"].metrics["test_accuracy"] == 0.5
    assert results["character"].metrics["test_accuracy"] >= 0.8
    served = predict(results["character"].export_path, ["美味しかった", "まずかった", ""])
    assert [row["label"] for row in served[:2]] == ["good", "bad"]
    assert tfkit.load_config(results["character"].run_dir / "config.yaml").data.split == "character"


def test_the_config_takes_exactly_the_splits_the_preprocessor_knows():
    from tfkit.data.text import SPLITS

    for split in SPLITS:
        assert tfkit.load_config(None, [f"data.split={split}"]).data.split == split
    with pytest.raises(tfkit.ConfigError, match="data.split must be one of whitespace, character"):
        tfkit.load_config(None, ["data.split=words"])


@pytest.mark.parametrize("max_len", [20, 100, 400, 1000])
def test_bucket_edges_bound_the_padding(max_len):
    edges = bucket_boundaries(max_len)
    assert edges == sorted(set(edges)) and all(e % 8 == 0 and e < max_len for e in edges)
    for length in range(1, max_len + 1):
        edge = min([e for e in edges if e >= length] + [max_len])
        assert edge - length < max(8, 0.25 * length + 8), (length, edge)


def test_token_dataset_buckets_by_length():
    texts = ["a " * n for n in (1, 2, 3, 20, 21, 40, 60)] * 4
    pre = tfkit.TextPreprocessor(max_tokens=50, max_len=64)
    pre.adapt(texts)
    labels = np.zeros(len(texts), np.int32)
    widths = {x.shape[1] for x, _ in tfkit.token_dataset(texts, labels, pre, 4, bucket=True)}
    assert widths <= set(bucket_boundaries(64) + [64]) and len(widths) > 1
    fixed = {x.shape[1] for x, _ in tfkit.token_dataset(texts, labels, pre, 4, bucket=False)}
    assert fixed == {64}
    total = sum(len(y) for _, y in tfkit.token_dataset(texts, labels, pre, 4, bucket=True))
    assert total == len(texts)


@pytest.mark.parametrize("documents", [False, True])
@pytest.mark.parametrize("bucket", [False, True])
@pytest.mark.parametrize("drop_remainder", [False, True])
def test_token_dataset_knows_its_number_of_batches(documents, bucket, drop_remainder):
    """Keras reads the number of batches (progress bar, end of epoch) and tfkit the length
    of a learning-rate schedule from the dataset's cardinality: with length buckets it must
    be counted, and exact (assert_cardinality fails on a wrong count)."""
    # 1-7 sentences of 3 words: several length buckets and sentence-count buckets
    texts = [". ".join(["good tasty snack"] * (1 + n % 7)) for n in range(62)]
    pre = (tfkit.HierarchicalTextPreprocessor(max_tokens=50, max_sentences=8, max_words=16)
           if documents else tfkit.TextPreprocessor(max_tokens=50, max_len=48))
    pre.adapt(texts)
    ds = tfkit.token_dataset(texts, np.zeros(len(texts), np.int32), pre, 4, shuffle=True,
                             bucket=bucket, drop_remainder=drop_remainder)
    batches = [len(y) for _, y in ds]
    assert int(ds.cardinality()) == len(batches) == len([_ for _ in ds])
    # 62 texts in batches of 4: 16 (15 full); in three buckets, each ending partial: 17 (14)
    expected = {(False, False): 16, (False, True): 15, (True, False): 17, (True, True): 14}
    assert len(batches) == expected[bucket, drop_remainder]


@pytest.mark.parametrize("documents", [False, True])
def test_full_batches_fill_partial_batches_with_rows_that_weigh_nothing(documents):
    texts = ["good tasty snack. would buy again", "stale", "too sweet. not for me",
             "fresh and crunchy. kids love it. great value"] * 5 + ["ok"]
    pre = (tfkit.HierarchicalTextPreprocessor(max_tokens=50, max_sentences=4, max_words=8)
           if documents else tfkit.TextPreprocessor(max_tokens=50, max_len=8))
    pre.adapt(texts)
    labels = {"sentiment": np.arange(len(texts)) % 2, "stars": np.linspace(1, 5, len(texts))}
    ds = tfkit.token_dataset(texts, labels, pre, 4, bucket=True, full_batches=True)
    ids_spec, label_spec, weight_spec = ds.element_spec
    assert ids_spec.shape[0] == 4 and weight_spec.shape == (4,)
    assert {k: v.shape for k, v in label_spec.items()} == {"sentiment": (4,), "stars": (4,)}
    real, fillers = [], 0
    for ids, y, weights in ds:
        for row, sentiment, stars, weight in zip(ids.numpy(), y["sentiment"].numpy(),
                                                 y["stars"].numpy(), weights.numpy()):
            if weight == 1:
                real.append((tuple(row[row != 0]), sentiment, round(float(stars), 4)))
            else:  # one out-of-vocabulary token (never an all-padding row), label 0, weight 0
                assert weight == 0 and row.flat[0] == 1 and (row != 0).sum() == 1
                assert sentiment == 0 and stars == 0
                fillers += 1
    plain = [(tuple(row[row != 0]), sentiment, round(float(stars), 4))
             for ids, y in tfkit.token_dataset(texts, labels, pre, 4, bucket=True)
             for row, sentiment, stars in zip(ids.numpy(), y["sentiment"].numpy(),
                                              y["stars"].numpy())]
    assert sorted(real) == sorted(plain) and len(real) == len(texts)  # each example once
    assert fillers > 0 and (len(real) + fillers) % 4 == 0


def test_filler_rows_change_neither_the_loss_nor_the_gradients(tiny_config):
    """compile_model's loss over a filled batch = the plain mean over its real rows."""
    from tfkit.compiling import compile_model

    texts, y = ["tasty", "awful stale crackers", "good"], np.array([1, 0, 1])
    pre = tfkit.TextPreprocessor(max_tokens=20, max_len=6)
    pre.adapt(texts)
    (ids, labels, weights), = tfkit.token_dataset(texts, y, pre, 8, full_batches=True)
    assert float(tf.reduce_sum(weights)) == 3 and ids.shape[0] == 8
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=2,
                              embedding_dim=4, units=4)
    compile_model(model, tiny_config)

    def loss_and_gradients(*batch):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=batch[0], y=batch[1], y_pred=model(batch[0]),
                                      sample_weight=batch[2] if len(batch) > 2 else None)
        return loss, tape.gradient(loss, model.trainable_variables)

    filled, plain = loss_and_gradients(ids, labels, weights), loss_and_gradients(
        ids[:3], labels[:3])
    np.testing.assert_allclose(filled[0], plain[0], rtol=1e-6)
    for a, b in zip(filled[1], plain[1]):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), atol=1e-7)


@pytest.mark.parametrize("setting", ["balanced", {"bad": 3, "good": 0.5}])
def test_class_weights_weigh_each_training_example_by_its_label(tiny_csv, setting):
    """The weighted training set = the plain one, same order, with each sample weight times
    its label's weight (filler rows stay at 0); balanced = scikit-learn's definition."""
    from sklearn.utils.class_weight import compute_class_weight

    from tfkit.datasets import class_weights, make_dataset, make_preprocessor

    config = tfkit.load_config(None, tiny_overrides(tiny_csv))
    config.train.class_weight = setting
    data = tfkit.load_data(config.data)
    weights = class_weights(config, data)
    expected = (compute_class_weight("balanced", classes=np.arange(2), y=data.train.y)
                if setting == "balanced" else [3.0, 0.5])
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    pre = make_preprocessor(config, data)
    weighted = make_dataset(data.train, pre, config, 8, training=True, weights=weights)
    plain = make_dataset(data.train, pre, config, 8, training=True)
    rows = 0
    for (x, y, w), (x0, y0, w0) in zip(weighted, plain, strict=True):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_allclose(w, w0.numpy() * weights[y.numpy()])
        rows += int(np.sum(w0))
    assert rows == len(data.train)


def test_class_weights_on_images_add_the_sample_weights(workdir):
    from tfkit.datasets import class_weights, make_dataset, make_preprocessor

    config = tfkit.load_config("digits_cnn", ["data.limit=40", 'train.class_weight={"3": 2}'])
    data = tfkit.load_data(config.data)
    weights = class_weights(config, data)
    assert weights.tolist() == [2.0 if name == "3" else 1.0 for name in data.label_names]
    ds = make_dataset(data.train, make_preprocessor(config, data), config, 8, training=True,
                      weights=weights)
    for _, y, w in ds:
        np.testing.assert_array_equal(w, weights[y.numpy()])


def test_class_weight_names_labels_the_data_has(tiny_csv):
    from tfkit.datasets import class_weights

    config = tfkit.load_config(None, tiny_overrides(tiny_csv, extra=["train.class_weight={meh: 2}"]))
    with pytest.raises(tfkit.ConfigError, match=r"no label 'meh' in the data; its labels are "
                                                r"\['bad', 'good'\]"):
        class_weights(config, tfkit.load_data(config.data))
