"""Where one ``text_lstm`` training step's time goes, part by part, on one fixed batch.

    python -m benchmarks.step [--rounds 9]
    python -m benchmarks.step --quick   # smoke test

One batch of 32 fine-food reviews from tfkit's length buckets (the 64-token bucket, the
closest to the 62 steps a review averages), the model at the reference pipeline's size (Embedding(10000,
128) -> LSTM(64) -> softmax, ``lazy_adam``). Each part is a ``tf.function`` that adds one
piece to the one before; parts alternate over ``--rounds``, each timed over ``--calls``
calls; medians in milliseconds per step:

- ``lstm_unmasked``: the LSTM layer alone, forward and backward, on the batch's word vectors;
- ``lstm``: the same with the padding mask, as the model runs it;
- ``forward_backward``: the whole model: embedding, LSTM, softmax, loss and gradients;
- ``with_optimizer``: and ``LazyAdam`` applying them;
- ``keras_train_step``: ``model.train_step`` (adds the loss tracker and the accuracy metric);
- ``keras_train_step_batch_known``: the same traced for ``[32, None]`` token ids, as Keras's
  ``fit`` traces it for tfkit's length buckets with full batches (one trace for all lengths);
- ``keras_train_step_relaxed``: the same traced for ``[None, None]``, as ``fit`` traced it
  before tfkit filled partial batches (``token_dataset(full_batches=True)``).

Also reports each part's share of ``keras_train_step_batch_known`` (what ``fit`` runs) and
the LSTM's FLOP/s against the machine's matmul peak measured in the same run. Writes
``benchmarks/results/step-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import keras
import tensorflow as tf

from benchmarks.run import (
    BATCH,
    bucketed_reviews,
    lstm_train_flops,
    machine,
    matmul_flops,
    tfkit_model,
    write_result,
)

STEPS = 64  # the bucket edge closest to the mean review length (58 tokens, 62 steps run)


def fixed_batch(ds, steps: int = STEPS):
    """The first full batch of ``steps`` tokens from a bucketed dataset."""
    for ids, labels, *_ in ds:
        if tuple(ids.shape) == (BATCH, steps):
            return ids, labels
    raise ValueError(f"no batch of shape ({BATCH}, {steps}) in the dataset")


def parts(model: keras.Model, ids, labels) -> dict:
    """name -> a no-argument callable running that part once (see the module docstring)."""
    embedding = model.get_layer("embedding")
    lstm = next(layer for layer in model.layers if isinstance(layer, keras.layers.LSTM))
    vectors, mask = embedding(ids), embedding.compute_mask(ids)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def lstm_alone(with_mask):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = tf.reduce_sum(lstm(x, mask=mask if with_mask else None))
            return tape.gradient(out, [x] + lstm.trainable_variables)
        return lambda: run(vectors)

    def gradients(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    @tf.function
    def with_optimizer(x, y):
        loss, grads = gradients(x, y)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss

    forward_backward = tf.function(gradients)
    train_step = tf.function(lambda x, y: model.train_step((x, y)))
    def traced_for(batch):
        return tf.function(lambda x, y: model.train_step((x, y)), input_signature=[
            tf.TensorSpec([batch, None], ids.dtype), tf.TensorSpec([batch], labels.dtype)])

    batch_known, relaxed = traced_for(BATCH), traced_for(None)
    return {"lstm_unmasked": lstm_alone(False), "lstm": lstm_alone(True),
            "forward_backward": lambda: forward_backward(ids, labels),
            "with_optimizer": lambda: with_optimizer(ids, labels),
            "keras_train_step": lambda: train_step(ids, labels),
            "keras_train_step_batch_known": lambda: batch_known(ids, labels),
            "keras_train_step_relaxed": lambda: relaxed(ids, labels)}


def time_calls(run, calls: int) -> float:
    """Milliseconds per call, waiting for the last result."""
    start = time.perf_counter()
    for _ in range(calls):
        out = run()
    tf.nest.map_structure(lambda t: t.numpy(), out, expand_composites=True)
    return (time.perf_counter() - start) / calls * 1000


def time_parts(runs: dict, rounds: int, calls: int) -> dict:
    """``{part: [ms per call in each round]}``: each part traced once, then the parts
    alternating over ``rounds``, each timed over ``calls`` calls."""
    for run in runs.values():
        time_calls(run, 1)  # trace
    ms = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            ms[name].append(time_calls(runs[name], calls))
    return ms


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    args = parser.parse_args(argv)
    rounds, calls = (1, 2) if args.quick else (args.rounds, args.calls)
    pre, ds, _ = bucketed_reviews()
    ids, labels = fixed_batch(ds)
    model = tfkit_model(pre)
    runs = parts(model, ids, labels)
    ms = time_parts(runs, rounds, calls)
    median = {name: round(statistics.median(v), 2) for name, v in ms.items()}
    peak = matmul_flops()
    lstm_flops = lstm_train_flops(STEPS) * BATCH
    result = {
        "machine": machine(), "quick": args.quick, "rounds": rounds, "calls": calls,
        "batch_shape": [BATCH, STEPS], "ms_per_step": median,
        "best_ms_per_step": {name: round(min(v), 2) for name, v in ms.items()},
        "share_of_fit_step": {name: round(v / median["keras_train_step_batch_known"], 3)
                              for name, v in median.items()},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "lstm_fraction_of_matmul_peak": round(lstm_flops / (median["lstm"] / 1000) / peak, 3),
        "each_round_ms": {name: [round(x, 2) for x in v] for name, v in ms.items()},
    }
    return write_result(result, args.out, "step", args.quick)


if __name__ == "__main__":
    main()
