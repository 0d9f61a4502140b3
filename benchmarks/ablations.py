"""Before/after measurements of tfkit's training-speed choices, side by side in one run.

    python -m benchmarks.ablations [--rounds 3]

Variants of ``text_lstm`` (Embedding(10000, 128) -> LSTM(64), batch 32) on the 3,600
fine-food training reviews, each trained one epoch per round in alternating order after a
warm-up epoch; medians of examples/s. Writes ``benchmarks/results/ablations-<date>-<time>.json``.

- ``buckets_to_edge``: tfkit's default: length buckets padded to the bucket's upper edge
  (multiples of 8 growing by >= 1.25: 8/16/24/32/40/48/64/80/96/100), partial batches
  filled to 32 rows (``full_batches=True``: a static batch size, filler rows weigh 0).
- ``edge_partial_batches``: the same without filling partial batches (the previous default:
  Keras traces the training step for an unknown batch size).
- ``pow2_edges``: the previous default, buckets padded to 16/32/64/100.
- ``buckets_to_longest``: tfkit's buckets, each batch padded only to its longest review
  (fewer padded steps, many more batch shapes).
- ``fixed_padding``: every batch padded to 100.
- ``edge_steps_per_execution_8``: the default with ``steps_per_execution=8``.
- ``edge_jit_compile``: the default with ``jit_compile=True`` (XLA on the CPU).
- ``edge_batch_64``: the default with batch 64 instead of 32.
- ``edge_keras_adam``: the default with Keras ``Adam`` instead of tfkit's ``LazyAdam``.
- ``fasttext_lazy_adam`` / ``fasttext_keras_adam``: the default preset (``fine_foods_fasttext``,
  batch 64, a 78k x 64 embedding table) with its ``LazyAdam`` / with Keras ``Adam``.

- ``pipeline_only``: the default's tf.data pipeline alone (cached, shuffled, bucketed,
  prefetched), iterated without a model: what tf.data options could save at most.
- ``pipeline_first_epoch``: a fresh ``token_dataset`` iterated once: in-graph tokenising of
  every review and filling the cache (what the first training epoch pays on top).

The LSTM variants use ``LazyAdam`` as tfkit's text presets do, except ``edge_keras_adam``,
and full batches, except ``edge_partial_batches``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

import keras
import tensorflow as tf

import tfkit
from benchmarks.run import (
    BATCH,
    MAX_LEN,
    VOCAB,
    default_preset,
    machine,
    mean_steps,
    tfkit_model,
    write_result,
)
from tfkit.compiling import OPTIMIZERS
from tfkit.data.pipeline import fill_and_prefetch


def rebucket(texts, y, pre, edges, to_edge=True):
    """Like token_dataset(bucket=True) with other bucket ``edges``, each batch padded to its
    bucket's edge or (``to_edge=False``) only to its longest member."""
    ds = tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=False)
    ds = ds.unbatch().map(lambda ids, label: (ids[: tf.reduce_max(
        tf.where(ids != 0)[:, 0]) + 1], label))  # cut the padding off again
    return fill_and_prefetch(ds.bucket_by_sequence_length(
        lambda ids, _: tf.shape(ids)[0], bucket_boundaries=[e + 1 for e in edges],
        bucket_batch_sizes=[BATCH] * (len(edges) + 1), pad_to_bucket_boundary=to_edge),
        BATCH, full_batches=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    data = tfkit.load_data(tfkit.DataConfig(source="fine_foods"))
    texts, y = [str(t) for t in data.train.x], data.train.y
    pre = tfkit.TextPreprocessor(max_tokens=VOCAB, max_len=MAX_LEN)
    pre.adapt(texts)
    edge = tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=True,
                               full_batches=True)
    variants = {
        "buckets_to_edge": (tfkit_model(pre), edge),
        "edge_partial_batches": (tfkit_model(pre), tfkit.token_dataset(
            texts, y, pre, BATCH, shuffle=True, bucket=True)),
        "pow2_edges": (tfkit_model(pre), rebucket(texts, y, pre, [16, 32, 64, MAX_LEN])),
        "buckets_to_longest": (tfkit_model(pre), rebucket(
            texts, y, pre, tfkit.data.bucket_boundaries(MAX_LEN) + [MAX_LEN], to_edge=False)),
        "fixed_padding": (tfkit_model(pre), tfkit.token_dataset(
            texts, y, pre, BATCH, shuffle=True, bucket=False, full_batches=True)),
        "edge_steps_per_execution_8": (tfkit_model(pre), edge),
        "edge_jit_compile": (tfkit_model(pre), edge),
        "edge_batch_64": (tfkit_model(pre), tfkit.token_dataset(
            texts, y, pre, 64, shuffle=True, bucket=True, full_batches=True)),
        "edge_keras_adam": (tfkit_model(pre, optimizer="adam"), edge),
    }
    for name, setting in (("edge_steps_per_execution_8", {"steps_per_execution": 8}),
                          ("edge_jit_compile", {"jit_compile": True})):
        model = variants[name][0]
        model.compile(OPTIMIZERS["lazy_adam"](), model.loss, weighted_metrics=["accuracy"],
                      **setting)
    make_fasttext, fasttext_ds, _ = default_preset(None)
    variants["fasttext_lazy_adam"] = (make_fasttext(), fasttext_ds)
    adam = make_fasttext()
    adam.compile(keras.optimizers.Adam(0.01), adam.loss, weighted_metrics=["accuracy"])
    variants["fasttext_keras_adam"] = (adam, fasttext_ds)
    variants["pipeline_only"] = (None, edge)
    variants["pipeline_first_epoch"] = (None, None)  # a fresh dataset each round

    def one_epoch(model, ds):
        if ds is None:
            ds = tfkit.token_dataset(texts, y, pre, BATCH, shuffle=True, bucket=True,
                                     full_batches=True)
        if model is None:
            for _ in ds:
                pass
        else:
            model.fit(ds, epochs=1, verbose=0)

    for model, ds in variants.values():
        one_epoch(model, ds)
    rates = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            start = time.perf_counter()
            one_epoch(*variants[name])
            rates[name].append(len(texts) / (time.perf_counter() - start))
    result = {"date": date.today().isoformat(), "machine": machine(), "rounds": args.rounds,
              "train_examples_per_second": {k: round(statistics.median(v), 1)
                                            for k, v in rates.items()},
              "each_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
              "lstm_steps_per_example": {k: round(mean_steps(ds), 1)
                                         for k, (model, ds) in variants.items()
                                         if model is not None and not k.startswith("fasttext")}}
    return write_result(result, args.out, "ablations")


if __name__ == "__main__":
    main()
