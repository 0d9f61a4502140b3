"""MirroredStrategy over two logical CPU devices gives the same training as one device.

Runs in a subprocess: logical devices must be configured before TensorFlow starts.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfkit.models import build_model
    from tfkit.optimizers import LazyAdam

    rng = np.random.default_rng(0)
    n = 24
    tokens = rng.integers(1, 50, size=(n, 7)).astype("int32")
    tokens[::3, 4:] = 0  # right padding, masked
    documents = rng.integers(1, 50, size=(n, 3, 5)).astype("int32")
    documents[::2, 2] = 0  # padding sentences
    documents[::3, :, 3:] = 0  # padding words
    images = rng.integers(0, 256, size=(n, 8, 8, 1)).astype("float32")
    sequences = rng.normal(size=(n, 6, 3)).astype("float32")
    classes = (np.arange(n) % 3).astype("int32")
    FAMILIES = {
        "text_lstm": (dict(vocab_size=50, units=4, embedding_dim=8), tokens, classes),
        # the sparse embedding update, with rows repeated within and across replicas
        "fasttext_lazy_adam": (dict(vocab_size=50, embedding_dim=8, buckets=64, head_dropout=0.0),
                               tokens, classes),
        "text_cnn": (dict(vocab_size=50, filters=4, embedding_dim=8, dropout=0.0), tokens, classes),
        "stacked_lstm": (dict(vocab_size=50, units=[4, 4], embedding_dim=8), tokens, classes),
        "text_transformer": (dict(vocab_size=50, embedding_dim=8, num_heads=2, ff_dim=8,
                                  num_layers=1, dropout=0.0), tokens, classes),
        "han": (dict(vocab_size=50, word_units=3, sentence_units=3, attention_units=4,
                     embedding_dim=8), documents, classes),
        "image_cnn": (dict(input_shape=(8, 8, 1), filters=[4, 8], dense_units=8, dropout=0.0),
                      images, classes),
        "sequence_lstm": (dict(input_shape=(6, 3), hidden_size=4, num_layers=2), sequences,
                          classes),
        # a keras.applications backbone, frozen (its BatchNormalization in inference mode)
        "image_backbone": (dict(input_shape=(8, 8, 1), dropout=0.0, backbone_params=dict(
            alpha=0.75, minimalistic=True)), images, classes),
        "multitask": (dict(vocab_size=50, heads={"a": {"num_classes": 3},
                                                  "b": {"mean": 1.0, "std": 2.0}},
                           encoder="text_gru", encoder_params={"units": 4, "embedding_dim": 8}),
                      tokens, {"a": classes, "b": np.linspace(-1, 3, n).astype("float32")}),
    }

    def run(name, strategy, initial):
        kwargs, x, y = FAMILIES[name]
        lazy = name == "fasttext_lazy_adam"
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_model("text_fasttext" if lazy else name, num_classes=3, **kwargs)
            if initial is not None:
                model.set_weights(initial)
            weights = model.get_weights()
            loss = ({"a": "sparse_categorical_crossentropy", "b": "mse"} if isinstance(y, dict)
                    else "sparse_categorical_crossentropy")
            model.compile(LazyAdam(0.01) if lazy else keras.optimizers.SGD(0.1), loss)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 3 global batches of 8
        history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
        return weights, history.history["loss"], model.get_weights()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    report = {}
    for name in FAMILIES:
        initial, loss_one, weights_one = run(name, tf.distribute.get_strategy(), None)
        _, loss_two, weights_two = run(name, mirrored, initial)
        report[name] = {
            "loss_one": loss_one, "loss_two": loss_two,
            "max_weight_diff": max(float(np.max(np.abs(a - b)))
                                   for a, b in zip(weights_one, weights_two)),
            "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(initial, weights_one)),
        }
    print("REPORT" + json.dumps(report))
""")


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={"PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2",
                               "PATH": "/usr/bin:/bin"})
    line = next((x for x in done.stdout.splitlines() if x.startswith("REPORT")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(line[len("REPORT"):])
    assert set(report) == {"text_lstm", "fasttext_lazy_adam", "text_cnn", "stacked_lstm", "han",
                           "text_transformer", "image_cnn", "sequence_lstm", "multitask",
                           "image_backbone"}
    for name, result in report.items():
        assert result["moved"] > 1e-4, name  # training really changed the weights
        assert result["loss_one"] == pytest.approx(result["loss_two"], abs=1e-5), name
        assert result["max_weight_diff"] <= 1e-5, (name, result)


TWO_RUNS = textwrap.dedent("""
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfkit

    settings = ["train.strategy=mirrored", "train.batch_size=16", "train.epochs=2",
                "train.verbose=0", "export.enabled=false", "data.limit=64"]
    first = tfkit.train("fine_foods_text_lstm", settings + ["name=first"])
    second = tfkit.train("fine_foods_text_lstm", settings + ["name=second", "train.seed=43",
                                                             f"train.teacher={first.run_dir}"])
    assert second.metrics["distillation"]["teacher"] == str(first.run_dir)
    print(first.metrics["replicas"], second.metrics["replicas"])
""")


@pytest.mark.slow
def test_two_mirrored_runs_in_one_process(tmp_path):
    """A notebook trains a mirrored model, then another: the second reuses the process's
    MirroredStrategy (a new one over the same devices restarts TensorFlow's collective
    numbering, and the embedding's sparse all-gather then fails on a shape mismatch). The
    second is distilled from the first: the teacher's targets go through the mirrored
    pipeline. 64 reviews per split: the validation split's first batch divides unequally
    over the two replicas, where Keras's own build of the model failed."""
    script = tmp_path / "two_runs.py"
    script.write_text(TWO_RUNS)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "2 2"
