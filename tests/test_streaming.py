"""Data larger than memory: streamed CSV and TFRecord sources, hash splits, tfkit convert,
bad records named by file and record, file sharding across two real workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, tiny_overrides, write_tiny_csv

import tfkit
from tfkit.config import ConfigError, DataConfig, load_config
from tfkit.convert import convert
from tfkit.data import DataError, load_data

CSV_SETS = ["data.source=csv", "data.text_column=review", "data.label_column=sentiment"]


def csv_config(path, **keys):
    return DataConfig(source="csv", path=str(path), text_column="review",
                      label_column="sentiment", **keys)


def split_texts(split):
    x = split.read_all().x if split.streamed else split.x
    return sorted(str(t) for t in x)


def test_streamed_and_in_memory_reading_give_the_same_splits_vocabulary_and_model(workdir):
    write_tiny_csv("reviews.csv", n=120)
    memory, streamed = (load_data(csv_config("reviews.csv", stream=s)) for s in ("false", "true"))
    assert not memory.streamed and streamed.streamed
    for name in ("train", "validation", "test"):
        a, b = getattr(memory, name), getattr(streamed, name)
        assert split_texts(a) == split_texts(b) and len(a) == len(b) > 0
        assert np.bincount(a.y).tolist() == np.bincount(b.y).tolist()
    # the streamed split's label ids (from the scan) are those its examples carry
    assert sorted(streamed.train.read_all().y.tolist()) == sorted(streamed.train.y.tolist())
    # the same batches: the streamed epoch is a number of steps (examples / batch size),
    # which length buckets' partial batches would make differ from a pass over the data
    results = {}
    for stream in ("false", "true"):
        results[stream] = tfkit.train(None, tiny_overrides("reviews.csv", extra=[
            f"data.stream={stream}", "train.epochs=1", f"name=s_{stream}", "data.shuffle_buffer=500",
            "data.bucket_by_length=false", "export.enabled=false"]))
    a, b = results["false"], results["true"]
    assert a.preprocessor.vocabulary() == b.preprocessor.vocabulary()
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    assert b.metrics["train_examples"] == len(streamed.train)


def test_convert_writes_records_that_train_and_serve(workdir, capsys):
    write_tiny_csv("reviews.csv", n=120)
    sets = [a for s in tiny_overrides("reviews.csv") for a in ("--set", s)]
    code, out, err = run_cli(capsys, "convert", *sets, "--to", "recs", "--shards", "3")
    assert code == 0, err
    summary = json.loads(out)
    files = sorted(p.name for p in Path("recs").iterdir())
    assert files == [f"{s}-{i:05d}-of-00003.tfrecord.gz" for s in ("test", "train") for i in range(3)]
    assert "converting the train split" in err and "source: tfrecord" in err
    memory = load_data(csv_config("reviews.csv"))
    assert summary["train"] == len(memory.train) + len(memory.validation)
    assert summary["test"] == len(memory.test)
    # every record holds the input as the served signature names it, and the label by name
    record = next(iter(tf.data.TFRecordDataset(str(Path("recs") / files[3]), "GZIP")))
    example = tf.train.Example.FromString(record.numpy())
    assert sorted(example.features.feature) == ["label", "text"]
    assert example.features.feature["label"].bytes_list.value[0] in (b"good", b"bad")
    # the records give the CSV's own splits: test files = test split, validation re-carved
    records = load_data(DataConfig(**summary["data"]))
    for name in ("train", "validation", "test"):
        assert split_texts(getattr(records, name)) == split_texts(getattr(memory, name))
    # a second conversion into the same folder is refused
    code, _, err = run_cli(capsys, "convert", *sets, "--to", "recs")
    assert code == 2 and "already holds TFRecord files" in err
    # train from the records; the export's serving_examples takes the same records
    data_sets = [f"data.{k}={v}" for k, v in summary["data"].items()] + ["data.stream=true"]
    base = [s for s in tiny_overrides() if not s.startswith("data.limit")]
    result = tfkit.train(None, base + data_sets + ["name=recs", "export.enabled=true"])
    loaded = tf.saved_model.load(str(result.export_path))
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        [str(Path("recs") / f) for f in files[:3]], "GZIP")]
    texts = [tf.train.Example.FromString(r).features.feature["text"].bytes_list.value[0]
             for r in records]
    from_examples = loaded.signatures["serving_examples"](examples=tf.constant(records))
    from_texts = loaded.signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(from_examples["probabilities"], from_texts["probabilities"], atol=1e-6)


def test_an_interrupted_conversion_leaves_no_file_a_glob_matches(workdir, monkeypatch):
    write_tiny_csv("reviews.csv", n=60)
    config = load_config(None, tiny_overrides("reviews.csv"))
    real = tf.io.TFRecordWriter.write
    written = []

    def fail_late(self, record):
        written.append(record)
        if len(written) == 30:
            raise KeyboardInterrupt
        real(self, record)

    monkeypatch.setattr(tf.io.TFRecordWriter, "write", fail_late)
    with pytest.raises(KeyboardInterrupt):
        convert(config, "recs", shards=2)
    assert list(Path("recs").iterdir()) == []  # nor a hidden partial file


def test_a_killed_conversions_partial_files_are_removed_and_a_live_one_is_refused(
        workdir, capsys):
    """What a killed ``tfkit convert`` leaves (its hidden partial files, its owner gone) is
    removed by the next conversion into that folder, which says so; a folder another live
    conversion writes is refused, naming it."""
    import json
    import subprocess

    from conftest import run_cli, sets

    from tfkit.owners import OWNER_FILE, process_start, this_process

    write_tiny_csv("reviews.csv", n=60)
    out = workdir / "recs"
    out.mkdir()
    stale = out / ".train-00000-of-00002.tfrecord.gz.partial"
    stale.write_bytes(b"half a record")
    other = subprocess.Popen(["sleep", "60"])
    try:
        (out / OWNER_FILE).write_text(json.dumps(
            {**this_process(), "pid": other.pid, "process_start": process_start(other.pid)}))
        code, out_text, err = run_cli(capsys, "convert", *sets(tiny_overrides("reviews.csv")),
                                      "--to", str(out), "--shards", "2")
        assert code == 2 and f"is being written by tfkit convert (process {other.pid}" in err
        assert stale.exists()
    finally:
        other.kill()
        other.wait()
    code, out_text, err = run_cli(capsys, "convert", *sets(tiny_overrides("reviews.csv")),
                                  "--to", str(out), "--shards", "2")
    assert code == 0, err
    assert "removed 1 partial file(s) a conversion that did not finish left" in err
    assert not stale.exists() and not (out / OWNER_FILE).exists()
    assert len(list(out.glob("train-*.tfrecord.gz"))) == 2


def write_records(path, examples, compression=None):
    with tf.io.TFRecordWriter(str(path), compression) as writer:
        for features in examples:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features))
                         .SerializeToString())


def text(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))


def good_records(n, start=0):
    return [{"text": text(f"review number {i} {'good' if i % 2 else 'bad'}"),
             "label": text("good" if i % 2 else "bad")} for i in range(start, start + n)]


def test_bad_records_are_named_by_file_and_record(workdir):
    def load(pattern, **keys):
        return load_data(DataConfig(source="tfrecord", path=pattern, **keys))

    with pytest.raises(DataError, match=r"data.path: TFRecord files 'nothing-\*' matches no file"):
        load("nothing-*")
    missing = good_records(6)
    del missing[3]["label"]
    write_records("missing.tfrecord", missing)
    with pytest.raises(DataError, match=r"'missing.tfrecord' record 4: it has no feature 'label'"):
        load("missing.tfrecord")
    typed = good_records(6)
    typed[4]["label"] = tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
    write_records("typed.tfrecord", typed)
    with pytest.raises(DataError, match=r"'typed.tfrecord' record 5: feature 'label' is a "
                                        r"float_list; the other records' is a bytes_list"):
        load("typed.tfrecord")
    # skipping up to N bad records: counted, and kept out of every split
    data = load("typed.tfrecord", skip_bad_records=1, validation_fraction=0.0, test_fraction=0.5)
    assert len(data.train) + len(data.test) == 5
    assert 4 not in [int(t.split()[2]) for t in split_texts(data.train) + split_texts(data.test)]
    # a truncated shard
    write_records("whole.tfrecord", good_records(50))
    raw = Path("whole.tfrecord").read_bytes()
    Path("cut.tfrecord").write_bytes(raw[: len(raw) - 20])
    with pytest.raises(DataError, match=r"'cut.tfrecord' is damaged within its first "
                                        r"[\d,]+ records \(truncated or corrupt\)") as caught:
        load("cut.tfrecord")
    assert "{{" not in str(caught.value) and "[[" not in str(caught.value)
    write_records("whole.tfrecord.gz", good_records(50), "GZIP")  # cut inside the compression
    packed = Path("whole.tfrecord.gz").read_bytes()
    Path("cut.tfrecord.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"'cut.tfrecord.gz' is damaged within its first") as caught:
        load("cut.tfrecord.gz")
    assert "function_node" not in str(caught.value) and len(str(caught.value)) < 300
    # a record that is no tf.Example at all
    with tf.io.TFRecordWriter("junk.tfrecord") as writer:
        for i, features in enumerate(good_records(4)):
            writer.write(b"\xff\xfe not a proto" if i == 2 else tf.train.Example(
                features=tf.train.Features(feature=features)).SerializeToString())
    with pytest.raises(DataError, match=r"'junk.tfrecord' record 3"):
        load("junk.tfrecord")


def test_a_bad_row_deep_in_a_csv_is_named_and_can_be_skipped(workdir, capsys):
    rows = ["review,sentiment"] + [f"text {i} {'good' if i % 2 else 'bad'},{'good' if i % 2 else 'bad'}"
                                   for i in range(1, 45001)]
    rows[42000] = "text 42000 with no label,"
    Path("big.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"CSV file 'big.csv' row 42,000: column 'sentiment' has no label"):
        load_data(csv_config("big.csv", stream="true"))
    data = load_data(csv_config("big.csv", stream="true", skip_bad_records=1))
    assert len(data.train) + len(data.validation) + len(data.test) == 44999
    # the command line: exit 2, the row named, and no run folder
    sets = [a for s in [*CSV_SETS, "data.path=big.csv", "data.stream=true"] for a in ("--set", s)]
    code, _, err = run_cli(capsys, "train", *sets)
    assert code == 2 and "tfkit: error: CSV file 'big.csv' row 42,000" in err
    assert "Traceback" not in err and not Path("runs").exists()


def test_streaming_settings_are_checked_with_the_config():
    with pytest.raises(ConfigError, match="data.stream is true but data.source 'fine_foods'"):
        load_config(None, ["data.stream=true"])
    with pytest.raises(ConfigError, match="data.stream must be one of auto, true, false"):
        load_config(None, ["data.stream=sometimes"])
    with pytest.raises(ConfigError, match="data.compression must be one of GZIP, ZLIB, none"):
        load_config(None, ["data.source=tfrecord", "data.path=x-*", "data.compression=zip"])
    with pytest.raises(ConfigError, match="data.compression is set"):
        load_config(None, ["data.compression=GZIP"])
    with pytest.raises(ConfigError, match="data.adapt_limit must be at least 1"):
        load_config(None, ["data.adapt_limit=0"])


def test_adapt_limit_cache_and_the_record_of_both(workdir):
    write_tiny_csv("reviews.csv", n=120)
    result = tfkit.train(None, tiny_overrides("reviews.csv", extra=[
        "data.stream=true", "data.adapt_limit=20", "data.cache_dir=cache", "train.epochs=2",
        "export.enabled=true"]))
    saved = json.loads((result.run_dir / "preprocessor.json").read_text())
    assert saved["adapt_examples"] == 20
    facts = json.loads((result.export_path / "assets.extra" / "tfkit.json").read_text())
    assert facts["preprocessor"]["adapt_examples"] == 20
    # the token ids of the training split were cached in files, not in memory
    assert any(p.suffix == ".index" for p in Path("cache").iterdir())
    unlimited = tfkit.train(None, tiny_overrides("reviews.csv", extra=[
        "name=all", "export.enabled=false"]))
    assert json.loads((unlimited.run_dir / "preprocessor.json").read_text())["adapt_examples"] == \
        unlimited.metrics["train_examples"]


def test_a_small_stream_is_read_once_and_a_large_one_every_epoch(workdir, capfd, monkeypatch):
    """Token ids of a streamed split under the in-memory bound are kept after one read (so a
    stream forced on small data trains at the in-memory speed); above it, each epoch reads
    the files again (each training file is named on standard error as it is opened)."""
    from tfkit.data import pipeline

    write_tiny_csv("reviews.csv", n=120)
    convert(load_config(None, tiny_overrides("reviews.csv")), "recs", shards=2)
    sets = ["data.source=tfrecord", "data.path=recs/train-*", "data.test_path=recs/test-*",
            "data.text_column=text", "data.label_column=label", "data.stream=true",
            "train.epochs=3", "export.enabled=false"]

    def openings(name):
        capfd.readouterr()
        tfkit.train(None, tiny_overrides("reviews.csv", extra=[*sets, f"name={name}"]))
        files = [Path(line.split('"')[1]).name for line in capfd.readouterr().err.splitlines()
                 if line.startswith('tfkit: reading "')]
        return {f: files.count(f) for f in files}

    small = openings("small")
    assert sorted(small) == [
        "train-00000-of-00002.tfrecord.gz", "train-00001-of-00002.tfrecord.gz"]
    assert set(small.values()) == {1}, small
    monkeypatch.setattr(pipeline, "IDS_IN_MEMORY_BYTES", 0)
    large = openings("large")
    assert large.keys() == small.keys() and min(large.values()) >= 3, large


@pytest.mark.slow
def test_two_workers_each_read_only_their_shards(workdir):
    """Two real workers on loopback train from 4 TFRecord shards: each opens only its 2
    files (the files each names as it opens them), both finish, and the result is close to
    one worker's on the same records."""
    from test_multiworker import finish, start_workers

    write_tiny_csv("reviews.csv", n=160)
    summary = convert(load_config(None, tiny_overrides("reviews.csv")), "recs", shards=4)
    recs = Path("recs").resolve()
    sets = ["data.source=tfrecord", f"data.path={recs}/train-*", f"data.test_path={recs}/test-*",
            "data.stream=true", "train.verbose=2", "train.epochs=3", "train.batch_size=8",
            "data.max_len=16", "data.max_tokens=200", "train.learning_rate=0.05",
            "export.enabled=false"]  # reading the shards is what this checks

    def argv(*extra):
        return [sys.executable, "-m", "tfkit.cli", "train"] + [
            a for s in [*sets, *extra] for a in ("--set", s)]

    processes = start_workers(lambda i: argv("train.strategy=multi_worker"), workdir)
    outputs = finish(processes)
    assert [p.returncode for p in processes] == [0, 0], outputs
    opened = [{line.split('"')[1] for line in out.splitlines() if line.startswith("tfkit: reading \"")}
              for out in outputs]
    assert all(len(files) == 2 for files in opened), opened
    assert opened[0].isdisjoint(opened[1])
    assert opened[0] | opened[1] == {str(recs / f"train-{i:05d}-of-00004.tfrecord.gz") for i in range(4)}
    assert "training data sharded by file (4 files)" in outputs[0]
    # the chief's summary line; TensorFlow may log a line after it when the other worker
    # leaves first (stdout and stderr are read together here)
    chief = json.loads([line for line in outputs[0].splitlines() if line.startswith("{")][-1])
    single = tfkit.train(None, [s for s in sets if s != "train.verbose=2"] + [
        "train.verbose=0", "train.batch_size=16", "name=single"])
    assert abs(chief["test_accuracy"] - single.metrics["test_accuracy"]) <= 0.1
    assert summary["train"] == single.metrics["train_examples"] + single.metrics["validation_examples"]


def test_image_and_text_folders_stream_by_path(workdir):
    from benchmarks.streaming import write_images

    write_images(60, Path("images"))
    Path("images/light/broken.png").write_bytes(b"GIF? no: just text")
    with pytest.raises(DataError, match=r"file 'images/light/broken.png': not a PNG, JPEG"):
        load_data(DataConfig(source="image_directory", path="images", stream="true"))
    Path("images/light/broken.png").unlink()
    # a JPEG whose header is fine but whose body is cut short: named before training too,
    # or skipped with data.skip_bad_records
    good = Path("images/dark/000001.jpg").read_bytes()
    Path("images/dark/cut.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match=r"file 'images/dark/cut.jpg': an image that does not decode"):
        load_data(DataConfig(source="image_directory", path="images", stream="true"))
    skipped = load_data(DataConfig(source="image_directory", path="images", stream="true",
                                   skip_bad_records=1))
    assert len(skipped.train) + len(skipped.validation) + len(skipped.test) == 60
    trained = tfkit.train("digits_cnn", ["data.source=image_directory", "data.path=images",
                                         "data.stream=true", "data.skip_bad_records=1",
                                         "train.epochs=1", "train.verbose=0", "name=skipped",
                                         "export.enabled=false"])  # never decodes the cut one
    assert trained.metrics["train_examples"] == len(skipped.train)
    Path("images/dark/cut.jpg").unlink()
    data = load_data(DataConfig(source="image_directory", path="images", stream="true"))
    assert data.streamed and data.label_names == ["dark", "light"]
    assert len(data.train) + len(data.validation) + len(data.test) == 60
    first = data.train.sample(2).x
    assert first.dtype == object and first[0][:3] == b"\xff\xd8\xff"  # the JPEG file's bytes
    result = tfkit.train("digits_cnn", ["data.source=image_directory", "data.path=images",
                                        "data.stream=true", "train.epochs=2", "train.verbose=0",
                                        "name=folder", "export.blessing=false"])
    assert result.preprocessor.input_shape == (32, 32, 3)  # the first image's own format
    from tfkit.served import predict

    answers = predict(result.export_path, [Path("images/dark/000001.jpg").read_bytes()])
    assert answers[0]["label"] in ("dark", "light")
    for label in ("good", "bad"):
        Path("texts", label).mkdir(parents=True)
        for i in range(15):
            Path("texts", label, f"{i}.txt").write_text(f"{label} review {i}")
    texts = load_data(DataConfig(source="directory", path="texts", stream="true"))
    assert texts.streamed and texts.label_names == ["bad", "good"]
    assert "good review 3" in split_texts(texts.train) + split_texts(texts.validation) + \
        split_texts(texts.test)


def test_auto_streams_by_the_memory_the_data_would_take(workdir, monkeypatch, caplog):
    """data.stream: auto decides by an estimate of the data read into memory, not by its
    files' size: a CSV by ~12x its bytes, images by their decoded pixels (a folder of small,
    well-compressed PNGs can take hundreds of times its files' size once decoded)."""
    import logging

    from tfkit.data import streams

    monkeypatch.setattr(streams, "STREAM_ABOVE_BYTES", 400_000)
    for label, value in (("dark", 0), ("light", 255)):
        Path("images", label).mkdir(parents=True)
        for i in range(4):  # 8 flat 128 x 128 RGB images: ~400 bytes each as PNG files
            Path("images", label, f"{i}.png").write_bytes(
                tf.io.encode_png(np.full([128, 128, 3], value, np.uint8)).numpy())
    files = sum(f.stat().st_size for f in Path("images").rglob("*.png"))
    assert files < 10_000  # under the limit by file size: read into memory before
    with caplog.at_level(logging.INFO, logger="tfkit"):
        images = load_data(DataConfig(source="image_directory", path="images"))
    assert images.streamed  # 8 x 128 x 128 x 3 x 2 bytes = 786,432 in memory
    assert "read into memory would take ~1 MB, over 0 MB: streamed" in caplog.text
    small = load_data(DataConfig(source="image_directory", path="images", image_size=[32, 32]))
    assert not small.streamed and small.train.x.dtype == np.uint8  # 49,152 bytes: in memory
    write_tiny_csv("reviews.csv", n=60)
    csv_bytes = Path("reviews.csv").stat().st_size
    factor = streams.TEXT_MEMORY_FACTOR
    monkeypatch.setattr(streams, "STREAM_ABOVE_BYTES", (factor - 1) * csv_bytes)
    assert load_data(csv_config("reviews.csv")).streamed
    monkeypatch.setattr(streams, "STREAM_ABOVE_BYTES", factor * csv_bytes)
    assert not load_data(csv_config("reviews.csv")).streamed
    assert not load_data(csv_config("reviews.csv", stream="false")).streamed


def test_tfds_streams_through_as_dataset():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        memory = load_data(DataConfig(source="tfds", name="imdb_reviews", stream="false"))
        streamed = load_data(DataConfig(source="tfds", name="imdb_reviews", stream="true"))
        assert streamed.streamed and streamed.label_names == memory.label_names == ["neg", "pos"]
        assert len(streamed.test) == len(memory.test) == 30
        assert len(streamed.train) + len(streamed.validation) == 30
        train = streamed.train.read_all()
        assert train.x.dtype == object and isinstance(train.x[0], str)
        assert sorted(train.y.tolist()) == sorted(streamed.train.y.tolist())
        images = load_data(DataConfig(source="tfds", name="mnist", stream="true"))
        first = images.train.sample(1).x[0]
        assert first[:8] == b"\x89PNG\r\n\x1a\n"  # left encoded, decoded in the pipeline
        assert images.label_names == [str(i) for i in range(10)]
