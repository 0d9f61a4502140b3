"""Training throughput, side by side in one process: reference pipeline vs plain Keras vs tfkit.

    python -m benchmarks.run            # full: fine-food reviews, 5 alternating rounds
    python -m benchmarks.run --quick    # smoke test: 64 reviews per split, 1 round (CI runs this)

Workloads (same model size: Embedding(10000, 128) -> LSTM(64), batch 32, max 100 tokens):

- ``seed``: the reference pipeline: Python tokenisation (what
  the legacy ``Tokenizer(num_words=10000, oov_token="<OOV>")`` does; Keras 3 no longer
  ships it), ``pad_sequences(maxlen=100)`` (left padding), no mask, Dense(1, sigmoid).
- ``plain_keras``: the same model over cached, right-padded, masked integer tensors,
  Keras ``Adam``: the cost of the model alone.
- ``tfkit``: ``text_lstm`` fed by ``token_dataset`` (in-graph TextVectorization, cached
  ids, length buckets), compiled as tfkit's text presets are: ``LazyAdam`` (embedding
  rows updated sparsely).
- ``tfkit_batch_128``: the same at batch 128 (same model size; the batch is a training
  choice, reported separately because it changes how many epochs the model needs).
- ``tfkit_xla``: the same with ``jit_compile=True`` (XLA on the CPU; Keras's ``"auto"`` leaves
  it off on CPU-only machines). Its compile time shows in ``warmup_epoch_seconds``.

- ``seed_stacked`` vs ``tfkit_stacked``: the hierarchical article's stacked model (two stacked LSTM(64))
  against ``stacked_lstm``; ``tfkit_han`` (``han`` on documents) and ``tfkit_image_cnn``
  (``image_cnn`` on the 8x8 digits) have no seed counterpart and are reported alone.

Each round trains every workload for one epoch, in alternating order; the figure is
the median examples/s over rounds; the first epoch of each model, with tracing, is a
warm-up and not counted. For tfkit against the reference pipeline the run also reports the ratio of the
best rounds and the median of the per-round ratios. Also measured in the same run:

- the machine's dense float32 matmul FLOP/s (best of several 1024x1024 products) and, from
  the LSTM's shapes and the steps it really runs, the fraction of that peak each LSTM
  workload reached (training FLOPs = 3 x forward);
- time to 0.77 test accuracy (the reference pipeline's best on this data): fresh models trained
  epoch by epoch, test accuracy after each, training seconds summed: the reference pipeline,
  ``text_lstm`` at the reference pipeline's size, and the default preset exactly as ``tfkit train``
  builds it (``fine_foods_fasttext``: its own vocabulary, length, batch and learning rate);
  repeated ``--repeats`` times (3) in alternation, reported as the median of the runs that
  got there and how many did (at most 8 epochs each);
- serving: the exported SavedModel called on raw strings (batch 1 latency p50/p99, batch 64
  throughput) vs in-process ``model.predict`` on integer tensors (batch 64).

- end to end: ``tfkit.train`` on the default preset and on ``fine_foods_text_lstm`` as the
  CLI runs it (validation, TensorBoard logs, confusion matrix, checkpoints, backups, test,
  export) against a bare ``fit`` of the same model on the same batches: the share of the
  training time the run's extras cost (twice each, alternating).

Results go to ``benchmarks/results/<machine>-<date>-<time>.json`` (one file per run). Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit.compiling import OPTIMIZERS, WEIGHTED_MEAN, compile_model, epoch_steps  # noqa: E402
from tfkit.datasets import make_dataset, make_preprocessor  # noqa: E402
from tfkit.export import make_examples  # noqa: E402

VOCAB, MAX_LEN, BATCH = 10000, 100, 32
TARGET = 0.77  # the reference pipeline's best test accuracy on the fine-food reviews


def seed_tokenize(train_texts, texts):
    """What the reference pipeline's Tokenizer + pad_sequences do, in Python, left-padded."""
    def words(text):
        return re.sub(r'[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\t\n]', " ", text.lower()).split()

    counts = Counter(w for t in train_texts for w in words(t))
    index = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(VOCAB - 2))}
    seqs = [[index.get(w, 1) for w in words(t)] for t in texts]
    return keras.utils.pad_sequences(seqs, maxlen=MAX_LEN)  # padding="pre", as in the reference pipeline


def seed_model(stacked: bool = False):
    """The reference model (Embedding -> LSTM -> Dense), or with two stacked LSTMs."""
    rnns = ([keras.layers.LSTM(64, return_sequences=True), keras.layers.LSTM(64)] if stacked
            else [keras.layers.LSTM(64)])
    model = keras.Sequential([keras.Input((MAX_LEN,)), keras.layers.Embedding(VOCAB, 128),
                              *rnns, keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def tfkit_model(pre, name="text_lstm", optimizer="lazy_adam", jit_compile=False, **params):
    """A tfkit builder at the reference pipeline's size, compiled as tfkit's text presets are (LazyAdam,
    learning rate 0.001, no XLA on a CPU); ``optimizer="adam"`` gives the plain Keras baseline."""
    params = params or ({"units": 64} if name == "text_lstm" else {"units": [64, 64]})
    model = tfkit.build_model(name, vocab_size=pre.vocab_size, num_classes=2, embedding_dim=128,
                              **params)
    model.compile(OPTIMIZERS[optimizer](), keras.losses.SparseCategoricalCrossentropy(
        reduction=WEIGHTED_MEAN), weighted_metrics=["accuracy"], jit_compile=jit_compile)
    return model


def bucketed_reviews(limit: int | None = None):
    """The fine-food training reviews (the first ``limit``) as tfkit feeds ``text_lstm`` at
    the reference pipeline's size: a preprocessor adapted on them and ``token_dataset``'s length buckets.
    Returns ``(preprocessor, dataset, number of reviews)``."""
    data = tfkit.load_data(tfkit.DataConfig(source="fine_foods"))
    texts, y = [str(t) for t in data.train.x][:limit], data.train.y[:limit]
    pre = tfkit.TextPreprocessor(max_tokens=VOCAB, max_len=MAX_LEN)
    pre.adapt(texts)
    return pre, tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=True,
                                    full_batches=True), len(texts)


def matmul_flops(n: int = 1024, repeats: int = 20) -> float:
    """Dense float32 matmul FLOP/s of this machine (best of ``repeats`` n x n products)."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def lstm_train_flops(steps: float, layers=((128, 64),)) -> float:
    """Training FLOPs per example of LSTM layers ``(input_dim, units)`` over ``steps`` steps:
    4 gates x (input + recurrent matmul) x 2 FLOPs per multiply-add, x 3 for backward."""
    forward = sum(2 * 4 * units * (dim + units) for dim, units in layers) * steps
    return 3 * forward


def mean_steps(ds) -> float:
    """Sequence steps the model really runs per example (buckets make it < max_len): padded
    length x rows, the filler rows of full batches included, over the real examples."""
    total = count = 0
    for ids, _, *weights in ds:
        total += int(ids.shape[0]) * int(ids.shape[1])
        count += int(weights[0].numpy().sum()) if weights else int(ids.shape[0])
    return total / count


def time_to_accuracy(make_model, train_ds, test_ds, target: float, epochs: int) -> dict:
    """Trains a fresh model epoch by epoch; training seconds until test accuracy >= target."""
    model, seconds, history = make_model(), 0.0, []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(train_ds, epochs=1, verbose=0)
        seconds += time.perf_counter() - start
        accuracy = float(model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"])
        history.append(round(accuracy, 4))
        if accuracy >= target:
            return {"seconds": round(seconds, 1), "epochs": len(history), "test_accuracy": history}
    return {"seconds": None, "epochs": len(history), "test_accuracy": history}


def default_preset(limit: int | None, preset: str | None = None):
    """What ``tfkit train`` builds for ``preset`` (default: the default preset,
    ``fine_foods_fasttext``): a model factory, the training and test datasets (its own
    preprocessor, adapted on train)."""
    config = tfkit.load_config(preset, [f"data.limit={limit}"] if limit else [])
    data = tfkit.load_data(config.data)
    pre = make_preprocessor(config, data)
    train_ds = make_dataset(data.train, pre, config, config.train.batch_size, training=True)
    test_ds = make_dataset(data.test, pre, config, 256, training=False)

    def make_model():
        model = tfkit.build_model(config.model.name, num_classes=data.num_classes,
                                  vocab_size=pre.vocab_size, **config.model.params)
        compile_model(model, config, steps_per_epoch=epoch_steps(
            config, train_ds, len(data.train), config.train.batch_size))
        return model

    return make_model, train_ds, test_ds


def end_to_end(preset: str, limit: int | None, workdir: Path, epochs: int | None = None) -> dict:
    """``tfkit.train(preset)`` as the CLI runs it (validation, TensorBoard, confusion matrix,
    checkpoints, backups, test, export) against a bare ``fit`` of the same model on the same
    batches for the same epochs (the preset's, or ``epochs``): seconds of each, and the share
    the extras cost."""
    overrides = [f"train.runs_dir={workdir / 'runs'}", f"export.base_dir={workdir / 'export'}",
                 "train.verbose=0"] + ([f"data.limit={limit}"] if limit else []) + (
                     [f"train.epochs={epochs}"] if epochs else [])
    started = time.perf_counter()
    run = tfkit.train(preset, overrides)
    total = time.perf_counter() - started
    make_model, train_ds, _ = default_preset(limit, preset)
    model = make_model()
    started = time.perf_counter()
    model.fit(train_ds, epochs=run.metrics["epochs"], verbose=0)
    bare = time.perf_counter() - started
    return {"epochs": run.metrics["epochs"], "bare_fit_seconds": round(bare, 2),
            "tfkit_train_fit_seconds": run.metrics["train_seconds"],
            "tfkit_train_total_seconds": round(total, 2),
            "fit_ratio": round(run.metrics["train_seconds"] / bare, 2),
            "test_accuracy": round(run.metrics["test_accuracy"], 4)}


def serving(model, pre, texts, workdir: Path, calls: int) -> dict:
    """The exported SavedModel on raw strings (and the same in tf.train.Example protos) vs
    in-process predict on integer tensors."""
    path = tfkit.export_for_serving(model, pre, ["great", "other"], workdir / "bench",
                                    samples=texts[:8])
    loaded = tf.saved_model.load(str(path))
    fn, from_examples = loaded.signatures["serving_default"], loaded.signatures["serving_examples"]
    for text in texts[:5]:
        fn(text=tf.constant([text]))
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        fn(text=tf.constant([texts[i % len(texts)]]))["probabilities"].numpy()
        latencies.append(time.perf_counter() - start)
    batches = [texts[i:i + 64] for i in range(0, len(texts) - 63, 64)]
    fn(text=tf.constant(batches[0]))
    start = time.perf_counter()
    for batch in batches:
        fn(text=tf.constant(batch))["probabilities"].numpy()
    served = 64 * len(batches) / (time.perf_counter() - start)
    examples = [tf.constant(make_examples(batch, "text")) for batch in batches]  # client's work
    from_examples(examples=examples[0])
    start = time.perf_counter()
    for batch in examples:
        from_examples(examples=batch)["probabilities"].numpy()
    served_examples = 64 * len(batches) / (time.perf_counter() - start)
    ids = pre(tf.constant(texts[: 64 * len(batches)])).numpy()
    model.predict(ids[:64], batch_size=64, verbose=0)
    start = time.perf_counter()
    model.predict(ids, batch_size=64, verbose=0)
    in_process = len(ids) / (time.perf_counter() - start)
    return {"batch1_latency_ms_p50": round(1000 * float(np.percentile(latencies, 50)), 2),
            "batch1_latency_ms_p99": round(1000 * float(np.percentile(latencies, 99)), 2),
            "batch64_raw_strings_examples_per_second": round(served, 1),
            "batch64_tf_examples_examples_per_second": round(served_examples, 1),
            "batch64_predict_int_tensors_examples_per_second": round(in_process, 1),
            "ratio_served_over_predict": round(served / in_process, 2),
            "ratio_tf_examples_over_raw_strings": round(served_examples / served, 2)}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "tensorflow": tf.__version__,
            "keras": keras.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="time-to-accuracy repeats")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds

    limit = 64 if args.quick else None
    data = tfkit.load_data(tfkit.DataConfig(source="fine_foods", limit=limit))
    texts, y = [str(t) for t in data.train.x], data.train.y
    test_texts, test_y = [str(t) for t in data.test.x], data.test.y
    pre = tfkit.TextPreprocessor(max_tokens=VOCAB, max_len=MAX_LEN)
    pre.adapt(texts)
    docs = tfkit.HierarchicalTextPreprocessor(max_tokens=VOCAB, max_sentences=16, max_words=40)
    docs.adapt(texts)
    digits = tfkit.load_data(tfkit.DataConfig(source="digits", limit=limit))
    images = tfkit.ImagePreprocessor(8, 8, 1)

    started = time.perf_counter()
    seed_x = seed_tokenize(texts, texts)
    seed_tokenize_s = time.perf_counter() - started
    seed_ds = tf.data.Dataset.from_tensor_slices((seed_x, y.astype("float32"))).batch(BATCH)
    plain_x = pre(tf.constant(texts)).numpy()
    plain_ds = tf.data.Dataset.from_tensor_slices((plain_x, y)).cache().batch(BATCH)
    tfkit_ds = tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=True,
                                   full_batches=True)
    tfkit_ds_128 = tfkit.token_dataset(texts, y, pre, 128, shuffle=True, bucket=True,
                                       full_batches=True)
    han_ds = tfkit.token_dataset(texts, y, docs, BATCH, shuffle=True, bucket=True,
                                 full_batches=True)
    image_ds = tfkit.array_dataset(digits.train.x, digits.train.y, images, BATCH, shuffle=True)

    models = {
        "seed": (seed_model(), seed_ds, len(texts)),
        "plain_keras": (tfkit_model(pre, optimizer="adam"), plain_ds, len(texts)),
        "tfkit": (tfkit_model(pre), tfkit_ds, len(texts)),
        "tfkit_batch_128": (tfkit_model(pre), tfkit_ds_128, len(texts)),
        "tfkit_xla": (tfkit_model(pre, jit_compile=True), tfkit_ds, len(texts)),
        "seed_stacked": (seed_model(stacked=True), seed_ds, len(texts)),
        "tfkit_stacked": (tfkit_model(pre, "stacked_lstm"), tfkit_ds, len(texts)),
        "tfkit_han": (tfkit_model(docs, "han", word_units=32, sentence_units=32), han_ds,
                      len(texts)),
        # the fine_foods_transformer preset's block at the reference pipeline's embedding width
        "tfkit_transformer": (tfkit_model(pre, "text_transformer", num_layers=1), tfkit_ds,
                              len(texts)),
        "tfkit_image_cnn": (tfkit.build_model("image_cnn", input_shape=images.input_shape,
                                              num_classes=digits.num_classes),
                            image_ds, len(digits.train)),
    }
    models["tfkit_image_cnn"][0].compile("adam", "sparse_categorical_crossentropy")
    warmup = {}
    for name, (model, ds, _) in models.items():  # warm-up epoch: tracing, XLA compiling, caches
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        warmup[name] = round(time.perf_counter() - start, 1)
    rates = {name: [] for name in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            model, ds, n = models[name]
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            rates[name].append(n / (time.perf_counter() - start))
    median = {name: round(statistics.median(v), 1) for name, v in rates.items()}

    peak = matmul_flops(512 if args.quick else 1024)
    steps = {"seed": MAX_LEN, "plain_keras": MAX_LEN, "tfkit": mean_steps(tfkit_ds),
             "tfkit_batch_128": mean_steps(tfkit_ds_128)}
    steps["tfkit_xla"] = steps["tfkit"]
    steps.update(seed_stacked=steps["seed"], tfkit_stacked=steps["tfkit"])
    flops = {name: lstm_train_flops(steps[name], ((128, 64), (64, 64)) if "stacked" in name
                                    else ((128, 64),)) for name in steps}
    peak_fraction = {name: round(median[name] * flops[name] / peak, 4) for name in flops}

    test_seed = tf.data.Dataset.from_tensor_slices(
        (seed_tokenize(texts, test_texts), test_y.astype("float32"))).batch(256)
    test_tfkit = tfkit.token_dataset(test_texts, test_y, pre, 256)
    epochs = 1 if args.quick else 8
    candidates = {
        "seed": (seed_model, seed_ds, test_seed),
        "tfkit_text_lstm": (lambda: tfkit_model(pre, "text_lstm", units=64, embedding_dropout=0.2,
                                                head_dropout=0.5), tfkit_ds, test_tfkit),
        "tfkit_default_preset": default_preset(limit),
        "tfkit_transformer_preset": default_preset(limit, "fine_foods_transformer"),
    }
    to_target = {name: [] for name in candidates}
    for _ in range(1 if args.quick else args.repeats):  # alternating, fresh models each time
        for name, (make_model, train_ds, test_ds) in candidates.items():
            to_target[name].append(time_to_accuracy(make_model, train_ds, test_ds, TARGET, epochs))
    for name, runs in to_target.items():
        times = [run["seconds"] for run in runs if run["seconds"] is not None]
        to_target[name] = {"median_seconds": statistics.median(times) if times else None,
                           "reached": f"{len(times)} of {len(runs)}", "runs": runs}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        serve = serving(models["tfkit"][0], pre, test_texts, Path(tmp), 20 if args.quick else 300)
    presets = {name: [] for name in ("fine_foods_fasttext", "fine_foods_text_lstm")}
    for r in range(1 if args.quick else 2):  # alternating
        for name in (list(presets) if r % 2 == 0 else list(reversed(presets))):
            with tempfile.TemporaryDirectory() as tmp:
                presets[name].append(end_to_end(name, limit, Path(tmp), 1 if args.quick else None))

    result = {
        "date": date.today().isoformat(), "machine": machine(), "quick": args.quick,
        "examples": len(texts), "rounds": rounds,
        "train_examples_per_second": median,
        "train_examples_per_second_each_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "ratio_tfkit_over_seed": round(median["tfkit"] / median["seed"], 2),
        # the machine's noise only ever slows a round down: two more views of the same ratio
        "ratio_tfkit_over_seed_best_rounds": round(max(rates["tfkit"]) / max(rates["seed"]), 2),
        "ratio_tfkit_over_seed_paired_median": round(statistics.median(
            t / s for t, s in zip(rates["tfkit"], rates["seed"])), 2),
        "ratio_tfkit_over_plain_keras": round(median["tfkit"] / median["plain_keras"], 2),
        "ratio_tfkit_batch_128_over_seed": round(median["tfkit_batch_128"] / median["seed"], 2),
        "ratio_tfkit_xla_over_seed": round(median["tfkit_xla"] / median["seed"], 2),
        "ratio_tfkit_transformer_over_seed": round(median["tfkit_transformer"] / median["seed"], 2),
        "warmup_epoch_seconds": warmup,
        "ratio_tfkit_stacked_over_seed_stacked": round(
            median["tfkit_stacked"] / median["seed_stacked"], 2),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "lstm_steps_per_example": {k: round(v, 1) for k, v in steps.items()},
        "lstm_train_gflop_per_example": {k: round(v / 1e9, 5) for k, v in flops.items()},
        "fraction_of_matmul_peak": peak_fraction,
        "time_to_test_accuracy": {"target": TARGET, **to_target},
        "serving": serve,
        "end_to_end": presets,
        "seed_python_tokenize_seconds": round(seed_tokenize_s, 3),
        "mean_tokens_per_review": round(float((plain_x != 0).sum(axis=1).mean()), 1),
    }
    return write_result(result, args.out, platform.node() or "machine", args.quick)


def write_result(result: dict, out: str, prefix: str, quick: bool = False) -> dict:
    """Writes ``<out>/<prefix>-<date>-<time>[-quick].json``, prints it, returns ``result``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    (out / f"{prefix}-{stamp}{'-quick' if quick else ''}.json").write_text(
        json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
