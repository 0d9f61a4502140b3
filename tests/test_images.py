"""Images end to end: sources, encoded-bytes serving, bad bytes, channel and size handling."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import summaries

import tfkit
from tfkit.config import DataConfig
from tfkit.data import DataError, load_data
from tfkit.data.sources import default_image_format
from tfkit.export import make_examples


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny digits CNN trained through tfkit.train (few epochs; accuracy is not the point)."""
    root = tmp_path_factory.mktemp("digits")
    return tfkit.train("digits_cnn", ["train.epochs=2", "train.verbose=0",
                                      f"train.runs_dir={root}/runs",
                                      f"export.base_dir={root}/saved_models",
                                      "model.params.filters=[8, 16]"])


def encode(images, fmt):
    pixels = tf.cast(images, tf.uint8)
    if fmt == "png":
        return [tf.io.encode_png(p).numpy() for p in pixels]
    return [tf.io.encode_jpeg(p, quality=100).numpy() for p in pixels]


def test_digits_source():
    data = load_data(DataConfig(source="digits"))
    assert data.train.x.shape[1:] == (8, 8, 1) and data.train.x.dtype == np.uint8
    assert data.label_names == [str(i) for i in range(10)]
    assert len(data.train) + len(data.validation) + len(data.test) == 1797


def test_png_and_jpeg_bytes_match_the_keras_model(digits_run):
    loaded = tf.saved_model.load(str(digits_run.export_path))
    images = load_data(DataConfig(source="digits")).test.x[:12]
    keras_probs = digits_run.model(tf.cast(images, tf.float32), training=False).numpy()
    png = loaded.signatures["serving_default"](image_bytes=tf.constant(encode(images, "png")))
    np.testing.assert_allclose(png["probabilities"].numpy(), keras_probs, atol=1e-5)
    examples = loaded.signatures["serving_examples"](
        examples=tf.constant(make_examples(encode(images, "png"), "image_bytes")))
    np.testing.assert_allclose(examples["probabilities"].numpy(), keras_probs, atol=1e-5)
    jpeg = loaded.signatures["serving_default"](image_bytes=tf.constant(encode(images, "jpeg")))
    # JPEG is lossy: the same class, probabilities close
    jpeg_pixels = tf.stack([tf.io.decode_jpeg(b, channels=1) for b in encode(images, "jpeg")])
    keras_jpeg = digits_run.model(tf.cast(jpeg_pixels, tf.float32), training=False).numpy()
    assert jpeg["class_id"].numpy().tolist() == keras_jpeg.argmax(axis=1).tolist()
    tensor = loaded.signatures["serving_tensor"](images=tf.cast(images, tf.float32))
    np.testing.assert_allclose(tensor["probabilities"].numpy(), keras_probs, atol=1e-5)
    assert {s.decode() for s in png["label"].numpy()} <= {str(i) for i in range(10)}


def test_warmup_requests_cover_both_endpoints(digits_run):
    """PNG bytes for serving_default, float pixels for serving_tensor: one and many each."""
    from tensorflow_serving.apis import prediction_log_pb2

    warmup = digits_run.export_path / "assets.extra" / "tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(warmup))]
    requests = [r.predict_log.request for r in records if r.HasField("predict_log")]
    assert [r.classify_log.request.model_spec.signature_name for r in records
            if r.HasField("classify_log")] == ["classification"] * 2
    inputs = [(r.model_spec.signature_name, name, tf.make_ndarray(proto).shape)
              for r in requests for name, proto in r.inputs.items()]
    batch = inputs[1][2][0]
    assert inputs == [("serving_default", "image_bytes", (1,)),
                      ("serving_default", "image_bytes", (batch,)),
                      ("serving_tensor", "images", (1, 8, 8, 1)),
                      ("serving_tensor", "images", (batch, 8, 8, 1)),
                      ("serving_examples", "examples", (1,)),
                      ("serving_examples", "examples", (batch,))] and batch > 1
    png = tf.make_ndarray(requests[0].inputs["image_bytes"])[0]
    assert tf.io.decode_png(png).shape == (8, 8, 1)


def test_misclassified_validation_images_in_tensorboard(digits_run):
    """The table names the validation rows; the Images tab shows the same images, in order."""
    logged = summaries(digits_run.run_dir / "logs" / "validation", "misclassified")
    ((step, table),) = logged["misclassified"]
    table = tf.make_ndarray(table.tensor).item().decode()
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[4:]]
    data = load_data(tfkit.load_config(digits_run.run_dir / "config.yaml").data)
    probabilities = digits_run.model(tf.cast(data.validation.x, tf.float32)).numpy()
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != data.validation.y)
    assert table.startswith(f"{len(wrong)} of {len(data.validation)} validation examples")
    assert 0 < len(rows) <= 20 and {int(r) for r in rows} <= set(wrong.tolist())
    ((step_images, images),) = logged["misclassified_images"]
    encoded = tf.make_ndarray(images.tensor)[2:]  # width, height, then one PNG per image
    assert step == step_images == 1 and len(encoded) == len(rows)
    np.testing.assert_array_equal(tf.io.decode_png(encoded[0]).numpy(),
                                  data.validation.x[int(rows[0])])


def test_rgb_and_larger_images_are_converted(digits_run):
    loaded = tf.saved_model.load(str(digits_run.export_path))
    grey = load_data(DataConfig(source="digits")).test.x[:4]
    rgb_big = tf.image.resize(tf.image.grayscale_to_rgb(tf.cast(grey, tf.float32)), (32, 32),
                              method="nearest")
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(encode(rgb_big, "png")))
    assert out["probabilities"].shape == (4, 10)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    pre = digits_run.preprocessor
    assert pre(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="images have 2 channels"):
        pre(np.zeros((1, 8, 8, 2)))


def test_bad_bytes_give_a_clear_error(digits_run):
    loaded = tf.saved_model.load(str(digits_run.export_path))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a PNG, JPEG, GIF or BMP"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([b"definitely not an image"]))
    # the process is fine afterwards
    good = encode(load_data(DataConfig(source="digits")).test.x[:1], "png")
    assert loaded.signatures["serving_default"](image_bytes=tf.constant(good))["label"].shape == (1,)


def test_predict_cli_on_image_files(digits_run, workdir, capsys):
    from tfkit.cli import main

    images = load_data(DataConfig(source="digits")).test.x[:2]
    for i, data in enumerate(encode(images, "png")):
        Path(f"{i}.png").write_bytes(data)
    Path("bad.png").write_bytes(b"oops")
    assert main(["predict", str(digits_run.export_path), "0.png", "1.png"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and set(lines[0]["probabilities"]) == {str(i) for i in range(10)}
    assert main(["predict", str(digits_run.export_path), "bad.png"]) == 2
    assert "not a PNG, JPEG, GIF or BMP" in capsys.readouterr().err


def test_image_directory_source(workdir, monkeypatch):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        folder = workdir / "pets" / label
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    data = load_data(DataConfig(source="image_directory", path="pets", image_size=[8, 8],
                                test_fraction=0.25, validation_fraction=0.2))
    assert data.label_names == ["cat", "dog"]
    assert data.train.x.shape[1:] == (8, 8, 3)
    assert len(data.train) + len(data.validation) + len(data.test) == 12
    # no image_size / channels: the images' own (Keras alone would read them at 256 x 256)
    data = load_data(DataConfig(source="image_directory", path="pets"))
    assert data.train.x.shape[1:] == (12, 10, 3)
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(source="image_directory", path="nowhere"))
    # size and channels both given: no image is decoded to guess them
    from tfkit.data import sources

    def guess(path):
        raise AssertionError("decoded an image to guess a format the config gives")

    monkeypatch.setattr(sources, "default_image_format", guess)
    data = load_data(DataConfig(source="image_directory", path="pets", image_size=[6, 5],
                                channels=1))
    assert data.train.x.shape[1:] == (6, 5, 1)
    with pytest.raises(AssertionError, match="decoded an image"):
        load_data(DataConfig(source="image_directory", path="pets", image_size=[6, 5]))


@pytest.mark.parametrize("shape, expected", [
    ((8, 8, 1), ([8, 8], 1)),            # grey digits: read as they are, one channel
    ((8, 8, 2), ([8, 8], 1)),            # grey + alpha
    ((600, 300, 3), ([256, 128], 3)),    # large photos: shrunk to fit 256, aspect kept
    ((30, 40, 4), ([30, 40], 3)),        # RGBA: RGB
])
def test_image_folder_default_format_is_the_first_images(shape, expected, workdir):
    folder = workdir / "shapes" / "a"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not an image")
    (folder / "1.png").write_bytes(tf.io.encode_png(np.zeros(shape, np.uint8)).numpy())
    assert default_image_format("shapes") == expected
    (folder / "0.png").write_bytes(b"oops")  # now the first image in sorted order
    with pytest.raises(DataError, match=r"image '.*0\.png' cannot be decoded"):
        default_image_format("shapes")


def test_tfds_images_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        data = load_data(DataConfig(source="tfds", name="mnist"))
    assert data.train.x.shape[1:] == (28, 28, 1) and data.label_names[0] == "0"
    assert len(data.test) == 20


def test_numpy_source_and_no_pickle(workdir):
    x = np.random.default_rng(0).integers(0, 256, (30, 8, 8)).astype(np.uint8)
    np.savez("arrays.npz", x_train=x, y_train=np.arange(30) % 3)
    data = load_data(DataConfig(source="numpy", path="arrays.npz"))
    assert data.label_names == ["0", "1", "2"]
    np.savez("objects.npz", x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.arange(4))
    with pytest.raises(DataError, match="without pickle"):
        load_data(DataConfig(source="numpy", path="objects.npz"))
    np.savez("partial.npz", x_train=x)
    with pytest.raises(DataError, match="no array 'y_train'"):
        load_data(DataConfig(source="numpy", path="partial.npz"))


def test_text_model_on_image_data_is_a_clear_error(workdir, capsys):
    from tfkit.cli import main

    assert main(["train", "digits_cnn", "--set", "model.name=text_lstm",
                 "--set", "model.params={}"]) == 2
    err = capsys.readouterr().err
    assert "model 'text_lstm' takes text inputs, but data.source 'digits' gives arrays" in err
    assert "Models that take arrays: image_backbone, image_cnn, sequence_lstm (model.name)" in err
    assert main(["train", "--set", "model.name=image_cnn", "--set", "model.params={}"]) == 2
    assert "Models that take text: text_lstm, text_bilstm, text_gru" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_sequence_lstm_reads_digits_row_by_row(tmp_path):
    result = tfkit.train("digits_sequence_lstm", [
        "train.epochs=1", "train.verbose=0", "data.limit=64", f"train.runs_dir={tmp_path}/runs",
        f"export.base_dir={tmp_path}/sm", "model.params.hidden_size=8"])
    assert result.preprocessor.input_shape == (8, 8)
    loaded = tf.saved_model.load(str(result.export_path))
    out = loaded.signatures["serving_default"](sequence=tf.zeros([3, 8, 8]))
    assert out["probabilities"].shape == (3, 10)
    rows = load_data(DataConfig(source="digits")).test.x[:5].reshape(5, 8, 8).astype("float32")
    direct = loaded.signatures["serving_default"](sequence=tf.constant(rows))["probabilities"]
    # the same rows flattened row-major into one float feature 'sequence' per Example
    served = loaded.signatures["serving_examples"](
        examples=tf.constant(make_examples(rows, "sequence")))["probabilities"]
    np.testing.assert_allclose(served.numpy(), direct.numpy(), atol=1e-6)
    assert not np.allclose(direct.numpy()[0], direct.numpy()[1])  # different rows, different outputs


def test_evaluating_the_image_export_scores_what_is_served(digits_run):
    """The test images sent as PNG bytes to the served signature score as the run did."""
    served = tfkit.evaluate(digits_run.export_path)
    expected = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert served["test_examples"] == expected["test_examples"]
    assert served["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-6)
    assert served["test_loss"] == pytest.approx(expected["test_loss"], abs=1e-4)
    assert served["test_confusion_matrix"] == expected["test_confusion_matrix"]


def test_an_image_model_as_a_litert_file(digits_run, workdir, capsys):
    from conftest import run_cli

    from tfkit.litert import SIGNATURE, export_litert, litert_interpreter

    code, out, err = run_cli(capsys, "export", str(digits_run.run_dir), "--format", "litert",
                             "--base-dir", "edge", "--name", "digits", "--force")
    assert code == 0, err
    path = Path(json.loads(out)["export_path"])
    assert path == Path("edge/digits.tflite") and not Path("edge/digits").exists()
    pixels = digits_run.preprocessor(load_data(DataConfig(source="digits")).test.x[:16])
    runner = litert_interpreter(path.read_bytes()).get_signature_runner(SIGNATURE)
    got = runner(images=pixels.numpy())
    served = tf.saved_model.load(str(digits_run.export_path)).signatures[SIGNATURE](images=pixels)
    np.testing.assert_allclose(got["probabilities"], served["probabilities"].numpy(), atol=1e-5)
    assert got["label"].tolist() == served["label"].numpy().tolist()
    # a LiteRT file has no versions: a second export refuses to replace it without --force
    before = path.read_bytes()
    code, out, err = run_cli(capsys, "export", str(digits_run.run_dir), "--format", "litert",
                             "--base-dir", "edge", "--name", "digits")
    assert code == 2 and "already exists (an earlier LiteRT export)" in err
    assert path.read_bytes() == before
    # a text model is refused, and says why
    text = tfkit.TextPreprocessor(max_tokens=20, max_len=4)
    text.adapt(["tasty", "stale"])
    model = tfkit.build_model("text_fasttext", vocab_size=text.vocab_size, num_classes=2,
                              buckets=8)
    with pytest.raises(tfkit.export.ExportError, match="LiteRT files are for image models"):
        export_litert(model, text, ["a", "b"], "edge/text.tflite", np.array(["tasty"]))
    assert not Path("edge/text.tflite").exists()


def test_an_int8_litert_file_is_smaller_and_answers_as_the_float_one(digits_run, workdir, capsys):
    """LiteRT's post-training int8 quantization, calibrated on training images: a smaller
    file whose answers on the test images match the float SavedModel's (nearly all), and a
    model that loses too much is not written."""
    from conftest import run_cli

    from tfkit.litert import SIGNATURE, check_int8, litert_interpreter

    files = {}
    for mode in ("none", "int8"):
        code, out, err = run_cli(capsys, "export", str(digits_run.run_dir), "--format", "litert",
                                 "--base-dir", mode, "--name", "digits", "--force",
                                 "--quantize", mode)
        assert code == 0, err
        files[mode] = Path(json.loads(out)["export_path"])
    assert files["int8"].stat().st_size < 0.5 * files["none"].stat().st_size
    interpreter = litert_interpreter(files["int8"].read_bytes())
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in kinds  # int8 tensors inside, float pixels in and probabilities out
    images = load_data(DataConfig(source="digits")).test.x[:64]
    pixels = digits_run.preprocessor(images).numpy().astype(np.float32)
    got = interpreter.get_signature_runner(SIGNATURE)(images=pixels)["probabilities"]
    served = tf.saved_model.load(str(digits_run.export_path)).signatures[SIGNATURE](
        images=tf.constant(pixels))["probabilities"].numpy()
    assert np.mean(got.argmax(1) == served.argmax(1)) >= 0.9
    labels = served.argmax(1)
    with pytest.raises(tfkit.export.ExportError, match="test accuracy is 1.0000 below"):
        check_int8(np.roll(served, 1, axis=1), served, labels, 0.02)
