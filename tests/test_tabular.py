"""Text plus table columns: FeatureSpace adapted on the training split, every column inside
the SavedModel, raw rows and tf.Examples served, missing and unseen values defined."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, sets, tiny_texts

import tfkit
from tfkit.config import ConfigError, DataConfig
from tfkit.convert import convert
from tfkit.data import load_data, load_preprocessor
from tfkit.data.sources import DataError
from tfkit.data.table import table_inputs
from tfkit.export import make_examples

FEATURES = {"price": "float_normalized", "shop": "string_categorical",
            "units": "integer_categorical"}


def write_rows(path, n=160, seed=0):
    """Reviews whose label follows the text and also the shop (a table-only signal); some
    prices missing."""
    texts, labels = tiny_texts(n, seed)
    rng = np.random.default_rng(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "price", "shop", "units", "sentiment"])
        for i, (text, label) in enumerate(zip(texts, labels)):
            shop = rng.choice(["north", "south"] if label == "good" else ["east", "west"])
            price = "" if i % 9 == 0 else f"{rng.normal(10 if label == 'good' else 20, 2):.2f}"
            writer.writerow([text, price, shop, int(rng.integers(1, 4)), label])
    return path


def table_overrides(path, *extra):
    return ["data.source=csv", f"data.path={path}", "data.text_column=review",
            "data.label_column=sentiment", "model.name=text_table",
            "model.params={encoder: text_fasttext, encoder_params: {embedding_dim: 8, "
            "buckets: 64}, table_units: 8, hidden_units: 8}",
            "data.features={price: float_normalized, shop: string_categorical, "
            "units: integer_categorical}", "data.feature_crosses=[[shop, units]]",
            "data.max_tokens=200", "data.max_len=16", "train.epochs=6", "train.batch_size=16",
            "train.learning_rate=0.01", "train.verbose=0", *extra]


def test_table_inputs_define_missing_values_and_refuse_text_in_numbers():
    x = table_inputs(np.array(["a", "b", "c"], object),
                     {"price": ["1.5", "", "NA"], "shop": ["x", None, 42],
                      "units": [3, "", "2"]}, FEATURES, "f.csv")
    assert np.isnan(x["price"][1:]).all() and x["price"][0] == np.float32(1.5)
    assert x["shop"].tolist() == ["x", "", "42"]  # a number in a string column is its text
    assert x["units"].tolist() == [3, -1, 2]  # -1: a missing integer, the unseen slot
    with pytest.raises(ValueError, match=r"f.csv column 'price' row 2 is 'cheap', not a number"):
        table_inputs(np.array(["a", "b"], object), {"price": ["1", "cheap"], "shop": ["x", "y"],
                                                    "units": [1, 2]}, FEATURES, "f.csv")
    with pytest.raises(ValueError, match=r"column 'units' row 1 is '1.5', not an integer"):
        table_inputs(np.array(["a"], object), {"price": [1], "shop": ["x"], "units": ["1.5"]},
                     FEATURES, "f.csv")


def test_bad_table_configs_are_named(workdir):
    path = write_rows(workdir / "rows.csv", 20)
    for wrong, message in (
            (["model.name=text_fasttext", "model.params={}"], "reads only the text"),
            (["data.features={price: float_normalised}"], "Did you mean 'float_normalized'"),
            (["data.features={'the price': float}"], "must be letters, digits"),
            (["data.feature_crosses=[[price, shop]]"], "'price' must be a column of"),
            (["data.stream=true"], "read into memory")):
        with pytest.raises(ConfigError, match=message):
            tfkit.load_config(None, table_overrides(path, *wrong))
    with pytest.raises(ConfigError, match="model 'text_table' needs data.features"):
        tfkit.load_config(None, ["model.name=text_table", "model.params={}"])
    config = tfkit.load_config(None, table_overrides(path, "data.features={colour: string_categorical}",
                                                    "data.feature_crosses=null"))
    with pytest.raises(DataError, match="has no column 'colour'"):
        load_data(config.data)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    path = write_rows(folder / "rows.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = tfkit.train(None, table_overrides(path))
    return result, folder


def rows_of(texts, price, shop, units):
    return {"text": texts, "price": price, "shop": shop, "units": units}


def test_text_table_run_serves_raw_rows(table_run):
    result, _ = table_run
    assert result.metrics["test_accuracy"] > 0.9, result.metrics
    assert result.export_path is not None
    pre = result.preprocessor
    raw = rows_of(["delicious and fresh", "stale and bland", "", "great " * 3000],
                  [10.0, np.nan, 12.0, np.nan], ["north", "east", "a shop never seen", ""],
                  [1, 2, 99, -1])
    loaded = tf.saved_model.load(str(result.export_path))
    signature = loaded.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["price", "shop", "text", "units"]
    feeds = {"text": tf.constant(raw["text"]), "price": tf.constant(raw["price"], tf.float32),
             "shop": tf.constant(raw["shop"]), "units": tf.constant(raw["units"], tf.int64)}
    served = signature(**feeds)["probabilities"].numpy()
    np.testing.assert_allclose(served, result.model(pre(feeds)).numpy(), atol=1e-5)
    assert np.isfinite(served).all()
    # a missing price is the training mean; an unseen shop is any other unseen shop
    mean = pre.means["price"]
    same = signature(**{**feeds, "price": tf.constant([10.0, mean, 12.0, mean])})
    np.testing.assert_allclose(same["probabilities"].numpy(), served, atol=1e-6)
    other = signature(**{**feeds, "shop": tf.constant(["north", "east", "elsewhere", ""])})
    np.testing.assert_allclose(other["probabilities"].numpy()[2], served[2], atol=1e-6)
    # tf.Example protos with the same features answer the same
    examples = loaded.signatures["serving_examples"](examples=tf.constant(make_examples(raw)))
    np.testing.assert_allclose(examples["probabilities"].numpy(), served, atol=1e-6)
    # the run's preprocessor.json restores the same FeatureSpace, without adapting again
    again = load_preprocessor(result.run_dir)
    np.testing.assert_array_equal(again(feeds)["table"].numpy(), pre(feeds)["table"].numpy())


def test_text_table_missing_column_is_named(table_run):
    result, _ = table_run
    loaded = tf.saved_model.load(str(result.export_path))
    lacking = make_examples({"text": ["tasty"], "shop": ["north"], "units": [1]})
    with pytest.raises(tf.errors.InvalidArgumentError, match="Feature: price .* is required"):
        loaded.signatures["serving_examples"](examples=tf.constant(lacking))
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:  # as TF Serving loads it
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(result.export_path))
        sig = meta.signature_def["serving_default"]
        feed = {sig.inputs["text"].name: ["delicious"], sig.inputs["price"].name: [9.5],
                sig.inputs["shop"].name: ["south"], sig.inputs["units"].name: [2]}
        labels = sess.run(sig.outputs["label"].name, feed_dict=feed)
        assert labels.tolist() == [b"good"]
        del feed[sig.inputs["price"].name]
        with pytest.raises(tf.errors.InvalidArgumentError, match="price"):
            sess.run(sig.outputs["label"].name, feed_dict=feed)
    with pytest.raises(ValueError, match="input 1 has no 'price'"):
        tfkit.predict(result.export_path, [{"text": "tasty", "shop": "north", "units": 1}])


def test_text_table_predict_evaluate_from_the_command_line(table_run, capsys):
    result, folder = table_run
    rows = folder / "new.jsonl"
    rows.write_text(json.dumps({"text": "delicious and fresh", "price": 9.0, "shop": "north",
                                "units": 2}) + "\n" + json.dumps(
        {"text": "awful taste", "price": "", "shop": "west", "units": 1}) + "\n",
                    encoding="utf-8")
    code, out, err = run_cli(capsys, "predict", str(result.export_path), "--input", str(rows))
    assert code == 0, err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["good", "bad"]
    code, _, err = run_cli(capsys, "predict", str(result.export_path), "tasty")
    assert code == 2 and "several inputs per example" in err
    code, out, err = run_cli(capsys, "evaluate", str(result.export_path))
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"],
                                                             abs=1e-6)
    code, out, err = run_cli(capsys, "rest", str(result.export_path), "--input", str(rows),
                             "--api", "classify")
    assert code == 0, err
    body = json.loads(out)
    assert body["examples"][0] == {"text": "delicious and fresh", "price": 9.0, "shop": "north",
                                   "units": 2}


def test_a_finished_text_table_run_is_evaluated_and_exported_from_its_folder(table_run, capsys):
    """The run folder's preprocessor, read back from its JSON (a string and an integer
    lookup among its columns), scores the test split as the run did and exports; a failed
    export leaves no folder behind."""
    result, folder = table_run
    code, out, err = run_cli(capsys, "evaluate", str(result.run_dir))
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"],
                                                             abs=1e-6)
    base = folder / "exported"
    code, out, err = run_cli(capsys, "export", str(result.run_dir), "--base-dir", str(base),
                             "--name", "again")
    assert code == 0, err
    assert json.loads(out)["export_path"] == str(base / "again" / "1")
    code, _, err = run_cli(capsys, "export", str(result.run_dir), "--base-dir", str(base),
                           "--name", "int8", "--quantize", "int8")
    assert code == 2 and "--quantize none" in err
    assert not (base / "int8").exists()


def test_tate_titles_with_artist_and_year():
    config = tfkit.load_config(None, ["data.source=tate", "data.label_column=medium_family",
                                      "model.name=text_table", "model.params={}",
                                      "data.features={year: float_normalized, "
                                      "artist: string_categorical}"])
    data = load_data(config.data)
    assert data.train.x.dtype.names == ("text", "year", "artist")
    assert 1990 <= data.train.x["year"].min() and data.label_names[0] == "drawing"
    assert DataConfig().features is None


def test_text_table_cli_bad_number_exits_2(workdir, capsys):
    path = write_rows(workdir / "rows.csv", 30)
    text = path.read_text(encoding="utf-8").splitlines()
    cells = text[3].split(",")
    cells[-4] = "cheap"  # the price of the third row
    text[3] = ",".join(cells)
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", *sets(table_overrides(path)))
    assert code == 2 and "column 'price' row 3 is 'cheap', not a number" in err
    assert "Traceback" not in err and not (workdir / "runs").exists()


def test_what_text_table_does_not_take_is_refused(table_run, workdir, capsys):
    result, folder = table_run
    path = folder / "rows.csv"
    for wrong, message in (("export.quantize=int8", "export.quantize is not offered"),
                           ("train.teacher=runs", "train.teacher is not offered")):
        with pytest.raises(ConfigError, match=message):
            tfkit.load_config(None, table_overrides(path, wrong))
    code, _, err = run_cli(capsys, "export", str(result.run_dir), "--quantize", "int8")
    assert code == 2 and "int8 export does not take yet" in err
    config = tfkit.load_config(None, table_overrides(path))
    with pytest.raises(ConfigError, match="data.features data is not converted"):
        convert(config, workdir / "records")


def test_serving_input_is_held_to_the_rules_of_training(table_run, capsys):
    """An infinite or out-of-range number is refused in predict and rest (naming the input
    and the column) and inside the SavedModel, raw rows and tf.Examples alike, as training
    refuses it; standard output stays JSON a strict parser reads."""
    result, folder = table_run
    for bad, message in (({"price": "inf"}, "'price' is 'inf', not a finite number"),
                         ({"price": 1e400}, "'price' is 'inf', not a finite number"),
                         ({"units": 2**70}, f"'units' is '{2**70}', not an integer within int64")):
        rows = folder / "bad.jsonl"
        good = {"text": "tasty", "price": 9.0, "shop": "north", "units": 2}
        rows.write_text(json.dumps(good) + "\n" + json.dumps({**good, **bad}) + "\n")
        for command in ("predict", "rest"):
            code, out, err = run_cli(capsys, command, str(result.export_path), "--input", str(rows))
            assert code == 2 and f"input 2: {message}" in err, (command, err)
            assert "Traceback" not in err and "Infinity" not in out
    loaded = tf.saved_model.load(str(result.export_path))
    feeds = {"text": tf.constant(["tasty"]), "price": tf.constant([np.inf]),
             "shop": tf.constant(["north"]), "units": tf.constant([2], tf.int64)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="column 'price' holds an infinite"):
        loaded.signatures["serving_default"](**feeds)
    examples = make_examples({"text": ["tasty"], "price": [np.inf], "shop": ["north"],
                              "units": [2]})
    with pytest.raises(tf.errors.InvalidArgumentError, match="column 'price' holds an infinite"):
        loaded.signatures["serving_examples"](examples=tf.constant(examples))
    rows.write_text(json.dumps({"text": "tasty", "price": "", "shop": "north", "units": 2}) + "\n")
    code, out, err = run_cli(capsys, "predict", str(result.export_path), "--input", str(rows))
    assert code == 0, err

    def strict(constant):
        raise ValueError(f"not JSON: {constant}")

    for line in out.splitlines():  # a missing number echoed as null, never NaN
        json.loads(line, parse_constant=strict)


def test_request_bodies_and_errors_list_the_inputs_in_the_training_order(table_run, capsys):
    from tfkit.served import ServedModel

    result, folder = table_run
    served = ServedModel(result.export_path)
    assert list(served.input_specs()) == ["text", "price", "shop", "units"]
    row = {"units": 2, "shop": "north", "price": 9.0, "text": "tasty"}
    body = served.rest_requests([row])["predict"]["instances"][0]
    assert list(body) == ["text", "price", "shop", "units"]
    served.facts["preprocessor"]["features"] = {"units": "integer_categorical",
                                                "shop": "string_categorical",
                                                "price": "float_normalized"}
    assert list(served.input_specs()) == ["text", "units", "shop", "price"]  # its own order
    with pytest.raises(ValueError, match="takes the inputs text, units, shop, price; 'price' is "
                                         "missing"):
        served.columns({"text": ["a"], "units": [1], "shop": ["x"]})
