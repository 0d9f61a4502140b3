"""Where one ``text_transformer`` training step's time goes, part by part, on one fixed batch.

    python -m benchmarks.transformer_step [--rounds 9] [--width 128]
    python -m benchmarks.transformer_step --quick   # smoke test

The same batch as ``benchmarks.step`` (32 fine-food reviews from the 64-token bucket); the
model is the ``fine_foods_transformer`` preset's one block (4 heads, feed-forward 128) at
``--width`` (64, the preset's, by default; 128: the reference pipeline's embedding width, the
``tfkit_transformer`` row of ``benchmarks.run``), ``lazy_adam``. Parts, each a ``tf.function``, forward
and backward, alternating over ``--rounds``:

- ``attention``: the block's self-attention layer alone on the batch's vectors, with the
  padding mask, as the model runs it (no dropout on the attention weights: Keras's fused
  ``dot_product_attention``);
- ``attention_dropout_0.1``: the same weights with dropout 0.1 on the attention weights
  (Keras then computes the scores, softmax and dropout op by op);
- ``attention_no_mask``: the model's layer without the padding mask;
- ``feed_forward``: the block's two Dense layers and their layer normalisation;
- ``forward_backward``: the whole model (embedding, positions, block, mean, softmax, loss);
- ``keras_train_step_batch_known``: ``model.train_step`` traced for ``[32, None]`` ids, as
  ``fit`` runs it;
- ``reference_lstm_train_step``: the reference pipeline's model (Embedding(10000, 128) ->
  LSTM(64) -> sigmoid, Keras ``adam``) on a batch of 32 left-padded 100-token rows, the
  shape it always trains on: ``ratio_over_reference_lstm_step`` is its step time over the
  Transformer's (examples/s of the Transformer over the reference pipeline's, per step).

Also the step's FLOPs (projections, attention scores and sums, feed-forward; training = 3 x
forward) against the machine's matmul peak. Writes
``benchmarks/results/transformer-step-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tfkit
from benchmarks.run import (
    BATCH,
    MAX_LEN,
    VOCAB,
    bucketed_reviews,
    machine,
    matmul_flops,
    seed_model,
    write_result,
)
from benchmarks.step import STEPS, fixed_batch, time_parts
from tfkit.compiling import OPTIMIZERS, WEIGHTED_MEAN


def transformer_train_flops(steps: int, width: int, ff: int) -> float:
    """Training FLOPs per example of one encoder block: Q, K, V and output projections,
    attention scores and weighted sums, the feed-forward layers; x 3 for backward."""
    forward = (4 * 2 * steps * width * width + 2 * 2 * steps * steps * width
               + 2 * 2 * steps * width * ff)
    return 3 * forward


def parts(model: keras.Model, ids, labels, width: int) -> dict:
    """name -> a no-argument callable running that part once (see the module docstring)."""
    vectors = model.get_layer("positions")(model.get_layer("embedding")(ids))
    keys = model.get_layer("key_mask")(ids)
    attention = model.get_layer("attention_1")
    dropping = keras.layers.MultiHeadAttention(4, width // 4, dropout=0.1)
    dropping(vectors, vectors, attention_mask=keys)
    dropping.set_weights(attention.get_weights())
    dense = [model.get_layer("feed_forward_1"), model.get_layer("feed_forward_out_1"),
             model.get_layer("feed_forward_norm_1")]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def backward(layer, call):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = tf.reduce_sum(call(x))
            return tape.gradient(out, [x] + layer.trainable_variables)
        return lambda: run(vectors)

    def feed_forward(x):
        return dense[2](x + dense[1](dense[0](x)))

    class FeedForward:  # the three layers' variables, for the tape
        trainable_variables = [v for layer in dense for v in layer.trainable_variables]

    def gradients(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    forward_backward = tf.function(gradients)
    batch_known = tf.function(lambda x, y: model.train_step((x, y)), input_signature=[
        tf.TensorSpec([BATCH, None], ids.dtype), tf.TensorSpec([BATCH], labels.dtype)])
    reference = seed_model()  # the reference pipeline's model on its own [32, 100] batches
    left_padded = tf.constant(np.random.default_rng(0).integers(1, VOCAB, (BATCH, MAX_LEN)),
                              tf.int32)
    reference_step = tf.function(lambda x, y: reference.train_step((x, y)))
    return {
        "reference_lstm_train_step": lambda: reference_step(
            left_padded, tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)),
        "attention": backward(attention, lambda x: attention(x, x, attention_mask=keys,
                                                             training=True)),
        "attention_dropout_0.1": backward(dropping, lambda x: dropping(
            x, x, attention_mask=keys, training=True)),
        "attention_no_mask": backward(attention, lambda x: attention(x, x, training=True)),
        "feed_forward": backward(FeedForward, feed_forward),
        "forward_backward": lambda: forward_backward(ids, labels),
        "keras_train_step_batch_known": lambda: batch_known(ids, labels),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--width", type=int, default=64, help="64: the preset's; 128: the "
                        "reference pipeline's embedding width")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    args = parser.parse_args(argv)
    rounds, calls = (1, 2) if args.quick else (args.rounds, args.calls)
    pre, ds, _ = bucketed_reviews()
    ids, labels = fixed_batch(ds)
    model = tfkit.build_model("text_transformer", vocab_size=pre.vocab_size, num_classes=2,
                              embedding_dim=args.width, num_layers=1)
    model.compile(OPTIMIZERS["lazy_adam"](), keras.losses.SparseCategoricalCrossentropy(
        reduction=WEIGHTED_MEAN), weighted_metrics=["accuracy"])
    runs = parts(model, ids, labels, args.width)
    ms = time_parts(runs, rounds, calls)
    median = {name: round(statistics.median(v), 2) for name, v in ms.items()}
    peak = matmul_flops()
    flops = transformer_train_flops(STEPS, args.width, 128) * BATCH
    step = median["keras_train_step_batch_known"]
    result = {
        "machine": machine(), "quick": args.quick, "rounds": rounds, "calls": calls,
        "width": args.width, "batch_shape": [BATCH, STEPS], "ms_per_step": median,
        "best_ms_per_step": {name: round(min(v), 2) for name, v in ms.items()},
        "share_of_fit_step": {name: round(v / step, 3) for name, v in median.items()},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "block_train_gflop_per_step": round(flops / 1e9, 3),
        "fraction_of_matmul_peak": round(flops / (step / 1000) / peak, 3),
        "examples_per_second": round(BATCH / (step / 1000), 1),
        "ratio_over_reference_lstm_step": round(median["reference_lstm_train_step"] / step, 2),
        "each_round_ms": {name: [round(x, 2) for x in v] for name, v in ms.items()},
    }
    return write_result(result, args.out, f"transformer-step-w{args.width}", args.quick)


if __name__ == "__main__":
    main()
