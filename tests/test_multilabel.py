"""Multi-label targets: label sets from a separator or JSON Lines lists, sigmoid outputs,
thresholds chosen on the validation split, served labels above them."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, sets, summaries

import tfkit
from tfkit.config import ConfigError, DataConfig
from tfkit.data import load_data
from tfkit.data.sources import DataError, label_set
from tfkit.metrics import choose_thresholds, label_set_baseline, multi_label_report

WORDS = {"tea": ["green tea", "black tea leaves"], "coffee": ["espresso beans", "ground coffee"],
         "organic": ["organic farm", "certified organic"], "gift": ["gift box", "a present"]}


def tagged_rows(n=120, seed=0):
    """Texts with 1-3 tags each; each tag's words appear in the text (a learnable signal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        tags = sorted(rng.choice(list(WORDS), size=rng.integers(1, 4), replace=False).tolist())
        text = " and ".join(str(rng.choice(WORDS[tag])) for tag in tags)
        rows.append((text, tags))
    return rows


def write_tags_csv(path, rows, separator="|"):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "tags"])
        writer.writerows((text, separator.join(tags)) for text, tags in rows)
    return path


def tag_overrides(path, *extra):
    return ["data.source=csv", f"data.path={path}", "data.label_column=tags",
            "data.multi_label=true", "model.name=text_fasttext", "model.params={buckets: 64}",
            "data.max_tokens=100", "data.max_len=12", "train.epochs=8", "train.batch_size=16",
            "train.learning_rate=0.02", "train.verbose=0", *extra]


def test_label_sets_from_separator_and_json_lists(workdir):
    rows = tagged_rows(60)
    data = load_data(DataConfig(source="csv", path=str(write_tags_csv(workdir / "t.csv", rows, ";")),
                                label_column="tags", multi_label=True, label_separator=";"))
    assert data.multi_label and data.label_names == ["coffee", "gift", "organic", "tea"]
    assert data.train.y.dtype == np.float32 and data.train.y.shape[1] == 4
    # JSON Lines: a list per row, separator not needed
    jsonl = workdir / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "tags": tags}) + "\n" for t, tags in rows),
                     encoding="utf-8")
    listed = load_data(DataConfig(source="csv", path=str(jsonl),
                                  label_column="tags", multi_label=True))
    assert listed.label_names == data.label_names
    both = np.concatenate([listed.train.y, listed.validation.y, listed.test.y])
    expected = [[float(name in tags) for name in data.label_names] for _, tags in rows]
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, expected))
    assert label_set(" a | b |", "|") == ["a", "b"]
    assert label_set('["x", "y"]', ",") == ['["x"', '"y"]']  # a CSV cell: text, split


def test_json_lines_label_lists_hold_strings_without_the_separator(workdir):
    """Elements that are not labels (null, true, numbers, nested lists, objects) or that hold
    the separator are refused, naming the file, line and element: stringified, 1 and "1"
    would merge and None would become a label."""
    from tfkit.data import DataError

    good = [json.dumps({"text": f"text {i}", "tags": ["tea", "gift"] if i % 2 else ["tea"]})
            for i in range(20)]
    for bad, message in (([None, "fruit"], "element None is not a label"),
                         ([True], "element True is not a label"),
                         ([1, "1"], "element 1 is not a label"),
                         ([["a"]], r"element \['a'\] is not a label"),
                         ([{"a": 1}], r"element \{'a': 1\} is not a label"),
                         (["tea|gift"], "element 'tea|gift' holds '|', the label separator")):
        path = workdir / "tags.jsonl"
        path.write_text("\n".join(good[:5] + [json.dumps({"text": "x", "tags": bad})] + good[5:]),
                        encoding="utf-8")
        with pytest.raises(DataError, match=rf"'{path}' line 6 column 'tags': the list {message}"):
            load_data(DataConfig(source="csv", path=str(path), label_column="tags",
                                 multi_label=True))


def test_tate_tags_are_several_per_work():
    data = load_data(DataConfig(source="tate", label_column="tags", multi_label=True))
    assert len(data.label_names) == 22 and {"paper", "etching", "oil paint"} <= set(data.label_names)
    per_work = data.train.y.sum(axis=1)
    assert per_work.min() >= 1 and 1.8 < per_work.mean() < 2.6


def test_bad_multi_label_data_is_named(workdir, caplog):
    rows = tagged_rows(40)
    single = write_tags_csv(workdir / "single.csv", [(t, tags[:1]) for t, tags in rows])
    with pytest.raises(DataError, match=r"data.label_separator '\|' never occurs"):
        load_data(DataConfig(source="csv", path=str(single), label_column="tags",
                             multi_label=True))
    train = write_tags_csv(workdir / "train.csv", [(t, [g for g in tags if g != "gift"] or ["tea"])
                                                   for t, tags in rows])
    test = write_tags_csv(workdir / "test.csv", [("a present", ["gift", "tea"])] * 3)
    with caplog.at_level("WARNING", logger="tfkit"):
        data = load_data(DataConfig(source="csv", path=str(train), test_path=str(test),
                                    label_column="tags", multi_label=True))
    assert "label(s) 'gift' occur in the validation or test split only" in caplog.text
    assert "gift" in data.label_names and data.train.y[:, data.label_names.index("gift")].sum() == 0
    # a label set the training split lacks is fine when each of its labels is known
    unseen_set = write_tags_csv(workdir / "test2.csv", [("green tea espresso beans organic farm",
                                                          ["coffee", "organic", "tea"])] * 3)
    data = load_data(DataConfig(source="csv", path=str(train), test_path=str(unseen_set),
                                label_column="tags", multi_label=True))
    assert data.test.y.sum(axis=1).tolist() == [3.0, 3.0, 3.0]
    for wrong, message in (("data.source=fine_foods", "has one label per example"),
                           ("train.class_weight=balanced", "train.class_weight is not offered"),
                           ("train.monitor=val_accuracy", "no accuracy per epoch"),
                           ("data.label_separator=", "label_separator must be a non-empty")):
        with pytest.raises(ConfigError, match=message):
            tfkit.load_config(None, ["data.source=tate", "data.label_column=tags",
                                     "data.multi_label=true", wrong])


def test_thresholds_and_scores():
    y = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    p = np.array([[0.9, 0.2, 0.4], [0.8, 0.45, 0.1], [0.3, 0.1, 0.35], [0.6, 0.3, 0.2]])
    assert multi_label_report(y, p, [0.5] * 3, list("abc"))["micro_f1"] == pytest.approx(2 * 3 / 9)
    chosen = choose_thresholds(y, p)
    tuned = multi_label_report(y, p, chosen, list("abc"))
    assert tuned["micro_f1"] == 1.0 and tuned["subset_accuracy"] == 1.0
    assert chosen[1] <= 0.45 < 0.5 and 0.2 < chosen[2] <= 0.35
    common_set = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    f1, common = label_set_baseline(common_set, common_set)
    assert common == (0,) and f1 == pytest.approx(2 * 2 / (3 + 4))


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tags")
    path = write_tags_csv(folder / "tags.csv", tagged_rows(240))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = tfkit.train(None, tag_overrides(path))
    return result, path, folder


def test_multi_label_run_exports_labels_above_thresholds(tag_run):
    result, _, _ = tag_run
    metrics = result.metrics
    names = result.label_names
    thresholds = metrics["multi_label"]["thresholds"]
    assert len(thresholds) == len(names) == 4 and metrics["multi_label"]["separator"] == "|"
    assert metrics["test_micro_f1"] > 0.8, metrics  # the tags' words are in the texts
    assert set(metrics["test_per_label"]) == set(names)
    assert [metrics["test_per_label"][n]["threshold"] for n in names] == thresholds
    assert metrics["blessing"]["blessed"] and result.export_path is not None
    facts = json.loads((result.export_path / "assets.extra" / "tfkit.json").read_text())
    assert facts["multi_label"] == metrics["multi_label"]

    texts = ["green tea and gift box", "espresso beans", "", "certified organic " * 400]
    loaded = tf.saved_model.load(str(result.export_path))
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    probabilities = out["probabilities"].numpy()
    keras_out = result.model(result.preprocessor(tf.constant(texts))).numpy()
    np.testing.assert_allclose(probabilities, keras_out, atol=1e-5)
    above = probabilities >= np.array(thresholds)
    assert out["predicted"].numpy().tolist() == above.astype(int).tolist()
    assert [s.decode() for s in out["labels"].numpy()] == [
        "|".join(n for n, hit in zip(names, row) if hit) for row in above]
    served = tfkit.predict(result.export_path, texts[:2])
    assert served[0]["labels"] == [n for n, hit in zip(names, above[0]) if hit]
    assert "tea" in served[0]["labels"] and served[1]["labels"] == ["coffee"]
    # TF Serving's Classify API: every label with its probability
    classify = loaded.signatures["classification"](
        inputs=tf.constant(tfkit.export.make_examples(texts[:2], "text")))
    np.testing.assert_allclose(classify["scores"].numpy(), probabilities[:2], atol=1e-6)


def test_multi_label_export_loads_like_tf_serving(tag_run):
    result = tag_run[0]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(result.export_path))
        sig = meta.signature_def["serving_default"]
        labels, predicted = sess.run([sig.outputs["labels"].name, sig.outputs["predicted"].name],
                                     feed_dict={sig.inputs["text"].name: ["gift box"]})
    assert labels[0].decode().split("|") == [n for n, hit in zip(result.label_names, predicted[0])
                                             if hit]


def test_multi_label_tensorboard_and_evaluate(tag_run, capsys):
    result, path, folder = tag_run
    test_logs = summaries(result.run_dir / "logs" / "test")
    assert {"epoch_micro_f1", "epoch_subset_accuracy", "classification_report"} <= set(test_logs)
    assert {f"{name}/pr_curves" for name in result.label_names} <= set(test_logs)
    table = tf.make_ndarray(test_logs["classification_report"][0][1].tensor).item().decode()
    assert "| threshold |" in table and "micro average" in table
    validation = summaries(result.run_dir / "logs" / "validation", "epoch_")
    assert {"epoch_micro_f1", "epoch_macro_f1", "epoch_loss"} <= set(validation)
    # evaluate the run and its export: the same scores at the same thresholds
    code, out, err = run_cli(capsys, "evaluate", str(result.run_dir))
    assert code == 0, err
    assert json.loads(out)["test_micro_f1"] == pytest.approx(result.metrics["test_micro_f1"])
    code, out, err = run_cli(capsys, "evaluate", str(result.export_path))
    assert code == 0, err
    assert json.loads(out)["test_micro_f1"] == pytest.approx(result.metrics["test_micro_f1"],
                                                              abs=1e-6)


def test_multi_label_cli_errors(workdir, capsys):
    rows = tagged_rows(30)
    single = write_tags_csv(workdir / "single.csv", [(t, tags[:1]) for t, tags in rows])
    code, _, err = run_cli(capsys, "train", "--set", "train.epochs=1",
                           *sets(tag_overrides(single)))
    assert code == 2 and "never occurs" in err and "Traceback" not in err
    assert not (workdir / "runs").exists()


def test_explain_refuses_a_multi_label_export(tag_run, capsys):
    result = tag_run[0]
    code, _, err = run_cli(capsys, "explain", str(result.export_path), "green tea")
    assert code == 2 and "answers several" in err
