"""The common registry test: every builder, build -> fit step -> .keras -> export -> reload."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_texts

import tfkit
from tfkit.config import DataConfig
from tfkit.data import Split
from tfkit.export import export_for_serving
from tfkit.models import MODELS, build_model
from tfkit.served import load_serving

TINY_PARAMS = {
    "text_lstm": {"embedding_dim": 8, "units": 4},
    "text_bilstm": {"embedding_dim": 8, "units": 4},
    "text_gru": {"embedding_dim": 8, "units": 4},
    "text_cnn": {"embedding_dim": 8, "filters": 4},
    "text_fasttext": {"embedding_dim": 8, "ngrams": 3, "buckets": 64},
    "text_linear": {"ngrams": 2, "l2": 1e-4, "dropout": 0.1},
    "text_transformer": {"embedding_dim": 8, "num_heads": 2, "ff_dim": 8, "num_layers": 2},
    "stacked_lstm": {"embedding_dim": 8, "units": [4, 4]},
    "han": {"embedding_dim": 8, "word_units": 4, "sentence_units": 4, "attention_units": 4},
    "multitask": {"encoder": "text_gru", "encoder_params": {"embedding_dim": 8, "units": 4}},
    "text_table": {"encoder": "text_cnn", "encoder_params": {"embedding_dim": 8, "filters": 4},
                   "table_units": 4, "hidden_units": 4},
    "hub_text": {"dropout": 0.0},  # and the tiny local preset (conftest.hub_preset)
    "image_backbone": {"backbone_params": {"alpha": 0.75, "minimalistic": True}},
    "image_cnn": {"filters": [4, 8], "dense_units": 8, "batch_norm": True, "augment": True},
    "sequence_lstm": {"hidden_size": 4, "num_layers": 2},
}


def test_every_registered_model_has_tiny_params():
    assert set(TINY_PARAMS) == set(MODELS)


@pytest.fixture(scope="module")
def text_setup():
    texts, labels = tiny_texts(32)
    pre = tfkit.TextPreprocessor(max_tokens=100, max_len=12)
    pre.adapt(texts)
    y = np.array([0 if label == "good" else 1 for label in labels], np.int32)
    return texts, y, pre


@pytest.fixture(scope="module")
def document_setup(text_setup):
    texts, y, _ = text_setup
    pre = tfkit.HierarchicalTextPreprocessor(max_tokens=100, max_sentences=3, max_words=5)
    pre.adapt(texts)
    return texts, y, pre


def params_for(name, hub_preset):
    """:data:`TINY_PARAMS` of ``name``, with the tiny local preset for ``hub_text``."""
    return {**TINY_PARAMS[name], **({"preset": hub_preset} if name == "hub_text" else {})}


def setup_for(name, text_setup, document_setup, hub_preset=None):
    """(labels, preprocessor, dataset, raw probe inputs) for a model kind."""
    inputs = MODELS[name].inputs
    if inputs == "hub_text":  # the preset's own tokenizer
        texts, y, _ = text_setup
        pre = tfkit.data.HubTextPreprocessor(hub_preset, 12)
        ds = pre.dataset(Split(np.array(texts, object), y), 8, training=True, data=DataConfig())
        return y, pre, ds, texts[:5] + ["", "unknownword " * 50, "Très bon 美味しい"]
    if inputs == "tfidf":  # TF-IDF of words and word pairs, served from raw strings
        texts, y, _ = text_setup
        pre = tfkit.data.TfidfPreprocessor(max_tokens=50, ngrams=2)
        pre.adapt(texts)
        ds = pre.dataset(Split(np.array(texts, object), y), 8, training=True, data=DataConfig())
        return y, pre, ds, texts[:5] + ["", "unknownword " * 50, "Très bon 美味しい"]
    if inputs in ("tokens", "documents"):
        texts, y, pre = text_setup if inputs == "tokens" else document_setup
        ds = tfkit.token_dataset(texts, y, pre, 8, shuffle=True, bucket=True)
        probe = texts[:5] + ["", "unknownword " * 50, "!!!", "One. Two. Three. Four. Five."]
        return y, pre, ds, probe
    if inputs == "text_table":  # the texts plus a number and a category per row
        texts, y, _ = text_setup
        features = {"price": "float_normalized", "shop": "string_categorical"}
        x = tfkit.data.table_inputs(np.array(texts, object), {
            "price": [float(i % 7) if i % 5 else "" for i in range(len(texts))],
            "shop": [["north", "south", "east"][i % 3] for i in range(len(texts))]}, features, "t")
        pre = tfkit.data.TextTablePreprocessor(tfkit.TextPreprocessor(max_tokens=100, max_len=12),
                                               features)
        pre.adapt(x)
        ds = pre.dataset(Split(x, y), 8, training=True, data=DataConfig())
        return y, pre, ds, pre.export_samples(x[:5])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(24, 8, 8, 1)).astype(np.uint8)
    y = np.arange(24, dtype=np.int32) % 2
    pre = (tfkit.ImagePreprocessor(8, 8, 1) if inputs == "image"
           else tfkit.SequencePreprocessor(8, 8))
    ds = tfkit.array_dataset(x, y, pre, 8, shuffle=True)
    return y, pre, ds, pre.export_samples(x[:5])


@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if e.inputs != "encoder"))
def test_registry_round_trip(name, text_setup, document_setup, hub_preset, tmp_path):
    y, pre, ds, probe = setup_for(name, text_setup, document_setup, hub_preset)
    keras.utils.set_random_seed(1)
    model = build_model(name, num_classes=2, vocab_size=getattr(pre, "vocab_size", None),
                        input_shape=getattr(pre, "input_shape", None), **params_for(name, hub_preset))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    prepare, (spec,) = pre.serving_endpoints()["serving_default"]
    feeds = {name: tf.constant(probe[name], one.dtype) for name, one in spec.items()} \
        if isinstance(spec, dict) else {pre.serving_input: tf.constant(probe)}
    model_inputs = prepare(feeds if isinstance(spec, dict) else feeds[pre.serving_input])
    expected = model(model_inputs, training=False).numpy()
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)

    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(restored(model_inputs, training=False).numpy(), expected, atol=1e-6)

    path = export_for_serving(restored, pre, ["good", "bad"], tmp_path / "serving" / name,
                              samples=probe)
    assert path.name == "1"
    loaded, signature, _ = load_serving(path)
    served = signature(**feeds)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert [s.decode() for s in served["label"].numpy()] == \
        [["good", "bad"][i] for i in expected.argmax(axis=1)]


@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if e.inputs == "tokens"))
def test_padding_does_not_change_predictions(name, text_setup):
    """Right padding is masked: a batch padded further gives the same probabilities."""
    texts, _, pre = text_setup
    model = build_model(name, vocab_size=pre.vocab_size, num_classes=2, **TINY_PARAMS[name])
    ids = pre.tokenize(tf.constant(texts[:4]))
    short = ids.to_tensor()
    long = ids.to_tensor(shape=[None, pre.max_len])
    np.testing.assert_allclose(model(short).numpy(), model(long).numpy(), atol=1e-5)


def test_builders_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_model("text_lstm", vocab_size=10, num_classes=1)
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_model("stacked_lstm", vocab_size=10, num_classes=2, pooling="max")
    with pytest.raises(ValueError, match="Unknown argument model.params.unitz"):
        build_model("text_gru", vocab_size=10, num_classes=2, unitz=3)


def test_stacked_lstm_wires_return_sequences():
    model = build_model("stacked_lstm", vocab_size=20, num_classes=3, units=[5, 6, 7])
    rnns = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.units for layer in rnns] == [5, 6, 7]
    assert [layer.return_sequences for layer in rnns] == [True, True, False]


def test_hashed_ngrams_ids():
    """Words keep their ids; each bigram/trigram gets one id after the vocabulary; n-grams
    touching padding are 0; word order matters."""
    layer = tfkit.models.HashedNgrams(vocab_size=10, buckets=100, ngrams=3)
    out = layer(np.array([[4, 5, 6, 0], [5, 4, 0, 0], [7, 0, 0, 0]])).numpy()
    assert out.shape == (3, 4 + 3 + 2)
    np.testing.assert_array_equal(out[:, :4], [[4, 5, 6, 0], [5, 4, 0, 0], [7, 0, 0, 0]])
    p = layer.PRIME
    bigram = lambda a, b: (a * p + b) % 100 + 10  # noqa: E731
    trigram = lambda a, b, c: ((a * p + b) % 100 * p + c) % 100 + 10  # noqa: E731
    np.testing.assert_array_equal(out[0, 4:], [bigram(4, 5), bigram(5, 6), 0, trigram(4, 5, 6), 0])
    np.testing.assert_array_equal(out[1, 4:], [bigram(5, 4), 0, 0, 0, 0])
    np.testing.assert_array_equal(out[2, 4:], [0] * 5)
    assert bigram(4, 5) != bigram(5, 4)
    assert out.min() >= 0 and out.max() < 110
    # one-token inputs (no n-gram fits) still work
    assert layer(np.array([[3]])).numpy().tolist() == [[3]]
    with pytest.raises(ValueError, match="ngrams >= 2"):
        tfkit.models.HashedNgrams(vocab_size=10, ngrams=1)


def test_fasttext_uses_ngrams_only_when_asked():
    words = build_model("text_fasttext", vocab_size=20, num_classes=2, ngrams=1, embedding_dim=4)
    assert words.get_layer("embedding").input_dim == 20
    assert not any(isinstance(layer, tfkit.models.HashedNgrams) for layer in words.layers)
    bigrams = build_model("text_fasttext", vocab_size=20, num_classes=2, buckets=30, embedding_dim=4)
    assert bigrams.get_layer("embedding").input_dim == 50


def _recurrent_layers(model):
    """Every LSTM/GRU that runs its own time loop (Bidirectional's two copies, not its template)."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)) and layer not in found:
            found.append(layer)
    return found


RECURRENT_MODELS = ["han", "sequence_lstm", "stacked_lstm", "text_bilstm", "text_gru", "text_lstm"]


def test_recurrent_model_list_is_complete(hub_preset):
    shapes = {"image": (8, 8, 1), "sequence": (8, 8), "text_table": (5,)}
    assert RECURRENT_MODELS == sorted(
        name for name, entry in MODELS.items() if entry.inputs != "encoder" and _recurrent_layers(
            build_model(name, num_classes=2, vocab_size=20, input_shape=shapes.get(entry.inputs),
                        **params_for(name, hub_preset))))


@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_recurrent_layers_take_the_cudnn_path(name, text_setup, document_setup, monkeypatch):
    """The GPU fast path, checked on a CPU: Keras' TensorFlow backend sends an LSTM/GRU to
    cuDNN only when its arguments allow it and a GPU is present, and cuDNN accepts only
    right-padded masks without fully masked rows (Keras asserts this inside its cuDNN
    function, and in eager mode a failed assert falls back to the slow loop silently).
    Pretend a GPU is there, record each call of Keras' cuDNN functions with Keras' own mask
    check, then let the CPU loop run: every recurrent layer of every built-in model must get
    there, with valid masks, for the batches tfkit's training pipeline and serving signature
    feed it, with dropout on (``recurrent_dropout`` would skip cuDNN)."""
    import importlib

    tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # the package hides it
    calls = []

    def record(*args):
        mask = args[6] if len(args) == 10 else args[5]  # _cudnn_lstm / _cudnn_gru positions
        try:
            if mask is not None:
                tf_rnn._assert_valid_mask(mask)
            calls.append("ok")
        except tf.errors.InvalidArgumentError:
            calls.append("invalid mask")
        raise NotImplementedError  # what Keras does when the cuDNN op is missing: CPU loop

    monkeypatch.setattr(tf_rnn, "_is_gpu_available", lambda: True)
    monkeypatch.setattr(tf_rnn, "_cudnn_lstm", record)
    monkeypatch.setattr(tf_rnn, "_cudnn_gru", record)
    y, pre, ds, probe = setup_for(name, text_setup, document_setup)
    params = dict(TINY_PARAMS[name], dropout=0.25)
    model = build_model(name, num_classes=2, vocab_size=getattr(pre, "vocab_size", None),
                        input_shape=getattr(pre, "input_shape", None), **params)
    recurrent = _recurrent_layers(model)
    prepare = pre.serving_endpoints()["serving_default"][0]
    for inputs in (next(iter(ds))[0], prepare(tf.constant(probe))):
        calls.clear()
        model(inputs, training=True)
        assert calls == ["ok"] * len(recurrent)


def test_the_registry_reads_each_builder_signature_from_its_source():
    """tfkit's builders are registered as "module:function" and their parameters read from the
    source (no import); what that gives is what Python's own signature of the function says."""
    import inspect

    for name, entry in MODELS.items():
        assert isinstance(entry.builder, str), name
        read, real = entry.signature(), inspect.signature(entry.load())
        assert [(p.name, p.kind, p.default) for p in read.parameters.values()] == [
            (p.name, p.kind, p.default) for p in real.parameters.values()], name
        assert entry.summary() == entry.load().__doc__.strip().splitlines()[0], name
