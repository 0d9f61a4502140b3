"""Defaults that adapt to the data: model.name auto, train.learning_rate auto (the range
test), data.max_len auto, epochs as a maximum; and one data-only run with its baseline."""

import json
import logging

import keras
import numpy as np
import pytest
from conftest import summaries, write_tiny_csv

import tfkit
from tfkit.config import ConfigError, config_from_dict, load_config
from tfkit.data import LabeledData, Split
from tfkit.datasets import resolve_max_len, resolve_model
from tfkit.lr_range import LOWEST, find_learning_rate


def test_model_auto_is_chosen_from_the_source_or_the_data():
    def model(data, **extra):
        return config_from_dict({"data": data, **extra}).model.name

    assert model({"source": "csv", "path": "r.csv"}) == "text_linear"
    assert model({"source": "tate"}) == "text_linear"
    assert model({"source": "digits"}) == "image_cnn"
    assert model({"source": "tate", "heads": {"medium_family": "classification"}}) == "multitask"
    assert model({"source": "tate", "features": {"year": "float"}}) == "text_table"
    assert model({"source": "numpy", "path": "a.npz"}) == "auto"  # decided by the arrays
    assert model({"source": "csv", "path": "r.csv"}, model={"name": "text_cnn"}) == "text_cnn"
    with pytest.raises(ConfigError, match="model.params and model.word_vectors need a model.name"):
        config_from_dict({"data": {"source": "numpy", "path": "a.npz"},
                          "model": {"params": {"units": 3}}})
    config = config_from_dict({"data": {"source": "numpy", "path": "a.npz"}})
    images = Split(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]))
    sequences = Split(np.zeros((4, 5, 3), np.float32), np.array([0, 1, 0, 1]))
    assert resolve_model(config, LabeledData(images, images, images, ["a", "b"], "")
                         ).model.name == "image_cnn"
    assert resolve_model(config, LabeledData(sequences, sequences, sequences, ["a", "b"], "")
                         ).model.name == "sequence_lstm"
    flat = Split(np.zeros((4, 7), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(ConfigError, match=r"no model takes arrays of shape \(7,\)"):
        resolve_model(config, LabeledData(flat, flat, flat, ["a", "b"], ""))


def test_auto_settings_and_their_refusals():
    config = config_from_dict({})
    assert (config.train.learning_rate, config.data.max_len, config.train.epochs,
            config.train.early_stopping_patience) == ("auto", "auto", 100, 3)
    for sets, message in (
            (["train.learning_rate=fast"], "train.learning_rate must be a finite number > 0 or auto"),
            (["train.learning_rate=auto", "train.strategy=multi_worker"],
             "auto is not offered with train.strategy 'multi_worker'"),
            (["train.learning_rate=auto", "train.scale_learning_rate=true"],
             "auto is not offered with train.scale_learning_rate"),
            (["train.warmup_epochs=-1"], "train.warmup_epochs must be a finite number >= 0"),
            (["train.warmup_epochs=soon"], "or auto, got 'soon'"),
            (["train.warmup_epochs=.nan"], "train.warmup_epochs must be a finite number"),
            (["data.max_len=long"], "data.max_len must be a number of tokens >= 1 or auto")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, sets)


def test_max_len_auto_is_the_95th_percentile_of_the_training_lengths():
    texts = ["word " * 10] * 90 + ["word " * 37] * 10  # the 95th percentile: 37 words
    split = Split(np.array(texts, object), np.zeros(100, np.int64))
    data = LabeledData(split, split, split, ["a"], "")
    config = load_config(None, ["model.name=text_cnn", "model.params={}", "data.max_len=auto"])
    resolved, chosen = resolve_max_len(config, data)
    assert resolved.data.max_len == 40 and chosen["value"] == 40  # a multiple of 8
    assert chosen["length_at_percentile"] == 37 and chosen["longest"] == 37
    long = Split(np.array(["w " * 5000] * 3, object), np.zeros(3, np.int64))
    assert resolve_max_len(config, LabeledData(long, long, long, ["a"], ""))[0].data.max_len == 1000
    # a model that does not cut texts: nothing chosen
    linear = load_config(None, ["model.name=text_linear", "model.params={}", "data.max_len=auto"])
    assert resolve_max_len(linear, data) == (
        load_config(None, ["model.name=text_linear", "model.params={}", "data.max_len=200"]), None)
    fixed = load_config(None, ["model.name=text_cnn", "model.params={}", "data.max_len=64"])
    assert resolve_max_len(fixed, data) == (fixed, None)


def test_the_range_test_leaves_the_model_alone_and_finds_a_rate_below_divergence():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    before = [w.copy() for w in model.get_weights()]
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    found = find_learning_rate(model, lambda copy: copy.compile(
        keras.optimizers.SGD(1.0), "sparse_categorical_crossentropy"), dataset)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert found["rates"][0] == pytest.approx(LOWEST) and found["steps"] == len(found["losses"])
    lowest = found["rates"][int(np.argmin(found["losses"][found["steps"] // 10:])) +
                            found["steps"] // 10]
    assert found["value"] == pytest.approx(lowest / 10, rel=0.01)
    assert 1e-4 < found["value"] < 10.0
    # trained at the chosen rate, the model learns the rule
    model.compile(keras.optimizers.SGD(found["value"]), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(dataset, epochs=20, verbose=0)
    assert model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"] > 0.9


def test_a_data_only_config_trains_the_linear_model_beside_its_baseline(workdir, caplog):
    path = write_tiny_csv(workdir / "reviews.csv", n=120)
    config = config_from_dict({"name": "mine", "data": {
        "source": "csv", "path": str(path), "text_column": "review",
        "label_column": "sentiment"}, "train": {"verbose": "0", "epochs": 12}})
    with caplog.at_level(logging.INFO, logger="tfkit"):
        result = tfkit.train(config)
    metrics = result.metrics
    assert metrics["model"] == "text_linear" and metrics["test_accuracy"] > 0.9
    assert metrics["best_epoch"] <= metrics["epochs"] <= 12
    rate = metrics["chosen"]["learning_rate"]
    assert LOWEST < rate["value"] < 1.0 and rate["steps"] >= 10
    saved = load_config(result.run_dir / "config.yaml")
    assert saved.train.learning_rate == rate["value"] and saved.model.name == "text_linear"
    # the range test's rate is reached over a first epoch: auto's choice, recorded
    assert saved.train.warmup_epochs == 1.0 == metrics["chosen"]["warmup_epochs"]["value"]
    assert metrics["baseline"]["model"] == "tfidf_logistic_regression"
    assert metrics["baseline"]["test_accuracy"] > 0.9
    assert json.loads((result.run_dir / "metrics.json").read_text())["baseline"] == \
        metrics["baseline"]
    closing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finished:")]
    assert "linear baseline" in closing[-1] and "on the same split" in closing[-1]
    scalars = summaries(result.run_dir / "logs" / "test", "epoch_baseline_accuracy")
    assert scalars["epoch_baseline_accuracy"]


def test_the_schedule_warms_up_then_decays_over_the_remaining_steps(workdir):
    from tfkit.compiling import learning_rate
    from tfkit.optimizers import WarmUp

    config = config_from_dict({"train": {"learning_rate": 0.1, "epochs": 4,
                                         "lr_schedule": "cosine", "warmup_epochs": 1}})
    schedule = learning_rate(config, steps_per_epoch=10)  # 10 warm-up steps, 30 of decay
    values = [float(schedule(step)) for step in (0, 4, 9, 10, 25, 40)]
    assert values == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.05, 0.0], abs=1e-6)
    constant = config_from_dict({"train": {"learning_rate": 0.1, "warmup_epochs": 0.5}})
    assert [float(learning_rate(constant, steps_per_epoch=4)(s)) for s in range(4)] == \
        pytest.approx([0.05, 0.1, 0.1, 0.1])
    # no warm-up: Keras's own schedules (or the number) as before
    assert learning_rate(config_from_dict({"train": {"learning_rate": 0.1}})) == 0.1
    # saved with the model and loaded in safe mode
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(WarmUp(schedule.after, 10)), "mse")
    model.optimizer.build(model.trainable_variables)  # saved with its slots, as after fit
    model.save("warm.keras")
    loaded = keras.models.load_model("warm.keras", safe_mode=True).optimizer
    assert loaded.get_config()["learning_rate"]["config"]["steps"] == 10
    assert float(loaded.learning_rate) == pytest.approx(0.01)  # step 0 of the warm-up
