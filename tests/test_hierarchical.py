"""Hierarchical text: the in-graph sentence splitter, the document preprocessor, HAN masks
and attention weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_texts

import tfkit
from tfkit.data import split_sentences
from tfkit.models import FoldSentences, build_han


def sentences(*texts):
    return [[s.decode("utf-8") for s in row] for row in split_sentences(tf.constant(texts)).to_list()]


def test_splitter_edge_cases():
    assert sentences("no punctuation at all") == [["no punctuation at all"]]
    assert sentences("...!!!") == [["...!!!"]]  # a piece without words; the preprocessor drops it
    assert sentences("") == [[]]
    assert sentences("Très bon café. 美味しい。とても良い！ Ok") == [
        ["Très bon café.", "美味しい。", "とても良い！", "Ok"]]
    assert sentences("Wow!!! Really? Yes.<br />New line\nthird") == [
        ["Wow!!!", "Really?", "Yes.", "New line", "third"]]
    assert sentences("Costs 3.5 dollars. Fine") == [["Costs 3.5 dollars.", "Fine"]]
    many = " ".join(f"Sentence {i}." for i in range(200))
    assert len(sentences(many)[0]) == 200


@pytest.fixture(scope="module")
def pre():
    texts, _ = tiny_texts(32)
    p = tfkit.HierarchicalTextPreprocessor(max_tokens=100, max_sentences=4, max_words=3)
    p.adapt(texts + ["sentence"])
    return p


def test_documents_are_right_padded_truncated_and_never_empty(pre):
    many = " ".join(f"great taste {i}." for i in range(200))
    docs = ["", "...!!!", "no punctuation", "Great taste. Awful!", many, "日本語のテキスト。"]
    ids = pre(tf.constant(docs)).numpy()
    assert ids.shape[1:] == (4, 3)  # many: truncated to 4 sentences of 3 words
    real_sentences = (ids[:, :, 0] != 0).sum(axis=1)
    assert real_sentences.tolist() == [1, 1, 1, 2, 4, 1]
    assert ids[0, 0].tolist() == [1, 0, 0] and ids[1, 0].tolist() == [1, 0, 0]  # [OOV]
    great, taste = pre.vocabulary().index("great"), pre.vocabulary().index("taste")
    assert ids[4, 0].tolist() == [great, taste, 1]  # "great taste 0": first 3 words, 0 is OOV
    for doc in ids:
        sentence_mask = doc[:, 0] != 0
        assert sentence_mask[0] and not np.any(np.diff(sentence_mask.astype(int)) > 0)
        for sentence in doc:
            words = sentence != 0
            assert not np.any(np.diff(words.astype(int)) > 0)  # right padded
    # the same numbers inside a tf.function with an unknown batch, as the export traces it
    fn = tf.function(pre.__call__, input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_array_equal(fn(tf.constant(docs)).numpy(), ids)


def test_preprocessor_round_trips_through_json(pre, tmp_path):
    pre.save(tmp_path)
    restored = tfkit.load_preprocessor(tmp_path)
    assert isinstance(restored, tfkit.HierarchicalTextPreprocessor)
    docs = tf.constant(["Great taste. Awful! Again.", ""])
    np.testing.assert_array_equal(restored(docs).numpy(), pre(docs).numpy())


def test_no_fully_masked_row_reaches_a_recurrent_layer(pre):
    """cuDNN refuses fully masked rows: check every mask the HAN feeds its RNNs."""
    model = build_han(vocab_size=pre.vocab_size, num_classes=2, embedding_dim=4, word_units=3,
                      sentence_units=3, attention_units=3)
    ids = pre(tf.constant(["", "Great taste. Awful!", "one two three four five six seven"]))
    word_ids = FoldSentences()(ids).numpy()  # what the word encoder reads, [batch*sent, words]
    word_mask = word_ids != 0
    assert word_mask.shape[0] == ids.shape[0] * ids.shape[1]
    assert word_mask.any(axis=1).all()  # every row has a real step, padding sentences too
    assert not np.any(np.diff(word_mask.astype(int), axis=1) > 0)  # right padded
    unfold = model.get_layer("unfold_sentences")
    vectors = tf.zeros([word_ids.shape[0], 6])
    sentence_mask = np.asarray(unfold.compute_mask([vectors, ids]))
    assert sentence_mask.any(axis=1).all()
    assert not np.any(np.diff(sentence_mask.astype(int), axis=1) > 0)
    # and the recurrent layers are the ones the model really calls with those masks
    assert {layer.name for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)} == {
        "word_encoder", "sentence_encoder"}


def test_attention_weights_sum_to_one_over_real_positions(pre):
    keras.utils.set_random_seed(0)
    model = build_han(vocab_size=pre.vocab_size, num_classes=2, embedding_dim=4, word_units=3,
                      sentence_units=3, attention_units=3)
    docs = ["Great taste. Awful taste and stale!", "", "delicious"]
    result = tfkit.attention_weights(model, pre, docs)
    assert len(result) == 3
    first = result[0]
    assert [s["text"] for s in first["sentences"]] == ["Great taste.", "Awful taste and stale!"]
    assert [w for w, _ in first["sentences"][1]["words"]] == ["awful", "taste", "and"]
    assert sum(s["weight"] for s in first["sentences"]) == pytest.approx(1.0, abs=1e-5)
    for sentence in first["sentences"]:
        assert sum(w for _, w in sentence["words"]) == pytest.approx(1.0, abs=1e-5)
    assert result[1]["sentences"] == []  # an empty document has nothing to show
    np.testing.assert_allclose(
        [r["probabilities"] for r in result],
        model(pre(tf.constant(docs)), training=False).numpy(), atol=1e-6)
    html = tfkit.attention_html(first)
    assert "awful" in html and html.count("<div") == 2
    with pytest.raises(ValueError, match="need a 'han' model"):
        tfkit.attention_weights(tfkit.build_model("text_gru", vocab_size=10, num_classes=2),
                                pre, docs)


def test_attention_weights_name_characters_for_character_split():
    """With data.split=character the 'words' the attention weighs are characters."""
    chars = tfkit.HierarchicalTextPreprocessor(max_tokens=50, max_sentences=3, max_words=3,
                                               split="character")
    chars.adapt(["美味しい。まずい！", "また買います"])
    model = build_han(vocab_size=chars.vocab_size, num_classes=2, embedding_dim=4, word_units=3,
                      sentence_units=3, attention_units=3)
    (doc,) = tfkit.attention_weights(model, chars, ["美味しい！ まずい。"])
    assert [[w for w, _ in s["words"]] for s in doc["sentences"]] == [["美", "味", "し"],
                                                                      ["ま", "ず", "い"]]
    for sentence in doc["sentences"]:
        assert sum(w for _, w in sentence["words"]) == pytest.approx(1.0, abs=1e-5)


def test_han_masking_makes_padding_irrelevant(pre):
    """Padding sentences and words do not change the prediction."""
    model = build_han(vocab_size=pre.vocab_size, num_classes=2, embedding_dim=4, word_units=3,
                      sentence_units=3, attention_units=3)
    ids = pre(tf.constant(["Great taste. Awful!"])).numpy()
    padded = np.zeros((1, 6, 7), ids.dtype)
    padded[:, : ids.shape[1], : ids.shape[2]] = ids
    np.testing.assert_allclose(model(ids).numpy(), model(padded).numpy(), atol=1e-6)
