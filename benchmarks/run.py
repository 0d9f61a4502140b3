"""Training throughput, side by side in one process: seed pipeline vs plain Keras vs tfkit.

    python -m benchmarks.run            # full: fine-food reviews, 3 alternating rounds
    python -m benchmarks.run --quick    # smoke test: 256 reviews, 1 round (CI runs this)

Workloads (same model size: Embedding(10000, 128) -> LSTM(64), batch 32, max 100 tokens):

- ``seed``: the second seed document's section 4.1 pipeline: Python tokenisation (what
  the legacy ``Tokenizer(num_words=10000, oov_token="<OOV>")`` does; Keras 3 no longer
  ships it), ``pad_sequences(maxlen=100)`` (left padding), no mask, Dense(1, sigmoid).
- ``plain_keras``: the same model over cached, right-padded, masked integer tensors:
  the cost of the model alone.
- ``tfkit``: ``text_lstm`` fed by ``token_dataset`` (in-graph TextVectorization, cached
  ids, length buckets).

Each round trains every workload for one epoch, in alternating order; the figure is
the median examples/s over rounds (the first epoch of each model, with tracing, is a
warm-up and not counted). Results go to ``benchmarks/results/<machine>-<date>.json``.
Timings are never asserted anywhere.
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
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402

VOCAB, MAX_LEN, BATCH = 10000, 100, 32


def seed_tokenize(train_texts, texts):
    """What the seed's Tokenizer + pad_sequences do, in Python, left-padded."""
    def words(text):
        return re.sub(r'[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\t\n]', " ", text.lower()).split()

    counts = Counter(w for t in train_texts for w in words(t))
    index = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(VOCAB - 2))}
    seqs = [[index.get(w, 1) for w in words(t)] for t in texts]
    return keras.utils.pad_sequences(seqs, maxlen=MAX_LEN)  # padding="pre", as in the seed


def seed_model():
    model = keras.Sequential([keras.Input((MAX_LEN,)), keras.layers.Embedding(VOCAB, 128),
                              keras.layers.LSTM(64), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def tfkit_model(pre):
    model = tfkit.build_model("text_lstm", vocab_size=pre.vocab_size, num_classes=2,
                              embedding_dim=128, units=64)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds

    data = tfkit.load_data(tfkit.DataConfig(source="fine_foods", limit=256 if args.quick else None))
    texts, y = [str(t) for t in data.train.x], data.train.y
    pre = tfkit.TextPreprocessor(max_tokens=VOCAB, max_len=MAX_LEN)
    pre.adapt(texts)

    started = time.perf_counter()
    seed_x = seed_tokenize(texts, texts)
    seed_tokenize_s = time.perf_counter() - started
    seed_ds = tf.data.Dataset.from_tensor_slices((seed_x, y.astype("float32"))).batch(BATCH)
    plain_x = pre(tf.constant(texts)).numpy()
    plain_ds = tf.data.Dataset.from_tensor_slices((plain_x, y)).cache().batch(BATCH)
    tfkit_ds = tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=True)

    models = {"seed": (seed_model(), seed_ds), "plain_keras": (tfkit_model(pre), plain_ds),
              "tfkit": (tfkit_model(pre), tfkit_ds)}
    for model, ds in models.values():  # warm-up epoch: tracing, caches
        model.fit(ds, epochs=1, verbose=0)
    rates = {name: [] for name in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            model, ds = models[name]
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    median = {name: round(statistics.median(v), 1) for name, v in rates.items()}
    result = {
        "date": date.today().isoformat(), "machine": machine(), "quick": args.quick,
        "examples": len(texts), "rounds": rounds,
        "train_examples_per_second": median,
        "train_examples_per_second_each_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "ratio_tfkit_over_seed": round(median["tfkit"] / median["seed"], 2),
        "ratio_tfkit_over_plain_keras": round(median["tfkit"] / median["plain_keras"], 2),
        "seed_python_tokenize_seconds": round(seed_tokenize_s, 3),
        "mean_tokens_per_review": round(float((plain_x != 0).sum(axis=1).mean()), 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{platform.node() or 'machine'}-{result['date']}{'-quick' if args.quick else ''}.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
