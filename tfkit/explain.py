"""Which words decided a prediction: leave-one-out for any text model (in Python or from its
SavedModel), and the attention of hierarchical models."""

from __future__ import annotations

import html
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tfkit.data.text import HierarchicalTextPreprocessor


def has_attention(model: keras.Model) -> bool:
    """Whether ``model`` has the ``word_attention`` and ``sentence_attention`` layers of a
    ``han`` model (:func:`attention_weights` reads them)."""
    return {"word_attention", "sentence_attention"} <= {layer.name for layer in model.layers}


def attention_weights(model: keras.Model, preprocessor: HierarchicalTextPreprocessor,
                      texts) -> list[dict]:
    """Word- and sentence-level attention of a ``han`` model for raw documents.

    Args:
        model: a model from :func:`tfkit.models.build_han` (its layers ``word_attention``
            and ``sentence_attention`` return their weights).
        preprocessor: the adapted :class:`tfkit.HierarchicalTextPreprocessor` it was trained with.
        texts: raw documents.

    Returns:
        One dict per document: ``probabilities`` (list of floats) and ``sentences``, a list
        of ``{"text", "weight", "words": [(word, weight), ...]}`` for the sentences the
        model read (after truncation). Sentence weights sum to 1 over a document's
        sentences, word weights to 1 within a sentence.

    Raises:
        ValueError: if ``model`` has no ``word_attention``/``sentence_attention`` layer.

    Examples:
        >>> pre = tfkit.HierarchicalTextPreprocessor(max_tokens=100, max_sentences=4, max_words=8)
        >>> pre.adapt(["Great taste. Arrived broken.", "Tasty snack."])
        >>> model = tfkit.build_model("han", vocab_size=pre.vocab_size, num_classes=2,
        ...                           word_units=4, sentence_units=4)
        >>> doc = attention_weights(model, pre, ["Great taste. Arrived broken."])[0]
        >>> [sentence["text"] for sentence in doc["sentences"]]
        ['Great taste.', 'Arrived broken.']
        >>> [(word, round(weight, 1)) for word, weight in doc["sentences"][1]["words"]]
        [('arrived', 0.5), ('broken', 0.5)]
        >>> round(sum(sentence["weight"] for sentence in doc["sentences"]), 3)
        1.0
    """
    if not has_attention(model):
        raise ValueError(f"model '{model.name}' has no word_attention/sentence_attention layers; "
                         "attention weights need a 'han' model.")
    probe = keras.Model(model.inputs, [model.output,
                                       model.get_layer("word_attention").output[1],
                                       model.get_layer("sentence_attention").output[1]])
    texts = tf.constant([str(t) for t in texts])
    ids = preprocessor(texts)
    probabilities, word_weights, sentence_weights = (np.asarray(t) for t in
                                                     probe(ids, training=False))
    batch, max_sentences, max_words = ids.shape
    word_weights = word_weights.reshape(batch, max_sentences, max_words)
    kept = preprocessor.sentences(texts)
    sentences = kept.to_list()
    words = tf.RaggedTensor.from_row_lengths(preprocessor.tokens(kept.flat_values),
                                             kept.row_lengths()).to_list()
    out = []
    for doc in range(batch):
        kept = []
        for s, sentence in enumerate(sentences[doc]):
            tokens = [w.decode("utf-8") for w in words[doc][s][:max_words]]
            kept.append({"text": sentence.decode("utf-8"),
                         "weight": float(sentence_weights[doc, s]),
                         "words": [(w, float(word_weights[doc, s, i]))
                                   for i, w in enumerate(tokens)]})
        out.append({"probabilities": probabilities[doc].tolist(), "sentences": kept})
    return out


def attention_html(document: dict) -> str:
    """One :func:`attention_weights` entry as HTML: sentence weight as a red bar on the left,
    word weight as a blue background (display with ``IPython.display.HTML``)."""
    rows = []
    for sentence in document["sentences"]:
        top = max((w for _, w in sentence["words"]), default=1.0) or 1.0
        words = " ".join(
            f'<span style="background: rgba(30,100,255,{w / top * 0.6:.2f})">{html.escape(t)}</span>'
            for t, w in sentence["words"])
        rows.append(f'<div style="border-left: 6px solid rgba(220,30,30,{sentence["weight"]:.2f});'
                    f' padding-left: 6px; margin: 2px">{sentence["weight"]:.2f} &nbsp; {words}</div>')
    return "\n".join(rows)


def importance_html(answer: dict) -> str:
    """One :func:`explain_predictions` (or :func:`word_importance`) answer as HTML: each word
    on a blue background if it pushed the answer, red if it argued against it, the stronger
    the more it did (display with ``IPython.display.HTML``).

    Examples:
        >>> page = importance_html({"label": "great", "probability": 0.9,
        ...                         "words": [["tasty", 0.4], ["but", -0.2]]})
        >>> print(page.replace("> <", ">\\n<"))
        <div><b>great</b> 0.900 &nbsp; <span title="+0.4000" style="background: rgba(30,100,255,0.60)">tasty</span>
        <span title="-0.2000" style="background: rgba(220,30,30,0.30)">but</span></div>
    """
    top = max((abs(v) for _, v in answer["words"]), default=0.0) or 1.0
    words = " ".join(
        f'<span title="{v:+.4f}" style="background: rgba({"30,100,255" if v >= 0 else "220,30,30"},'
        f'{abs(v) / top * 0.6:.2f})">{html.escape(str(w))}</span>' for w, v in answer["words"])
    label = answer.get("label", answer.get("class_id"))
    return (f"<div><b>{html.escape(str(label))}</b> {answer['probability']:.3f} &nbsp; "
            f"{words}</div>")


def word_importance(probabilities: Callable, texts, split: str = "whitespace",
                    batch_size: int = 256) -> list[dict]:
    """How much each word holds up a prediction: the predicted class's probability for the
    text minus its probability with that word left out (leave-one-out occlusion, Li et al.
    2016, "Understanding Neural Networks through Representation Erasure").

    Works for any text classifier, whatever its layers: it only calls the model. A word
    with a large positive importance pushed the prediction; a negative one argued against it.
    Costs one prediction per word, batched.

    Args:
        probabilities: raw strings ``[n]`` -> class probabilities ``[n, classes]`` (a
            SavedModel's signature, or a Keras model behind its preprocessor).
        texts: raw texts.
        split: ``whitespace``: the words are the text's white-space-separated pieces, as
            written (punctuation stays attached); ``character``: its non-space characters
            (for models trained with ``data.split: character``).
        batch_size: strings per call.

    Returns:
        One dict per text: ``class_id`` and ``probability`` of the predicted class, and
        ``words``: ``[(word, importance), ...]`` in text order.

    Examples:
        >>> def probabilities(texts):  # a stand-in model: "good" makes a text positive
        ...     good = np.array([" good " in f" {t} " for t in texts], np.float32)
        ...     return np.stack([1 - 0.8 * good - 0.1, 0.8 * good + 0.1], axis=1)
        >>> word_importance(probabilities, ["the tea was good"])
        [{'class_id': 1, 'probability': 0.9, 'words': [('the', 0.0), ('tea', 0.0), ('was', 0.0), ('good', 0.8)]}]
    """
    texts = [str(t) for t in texts]
    pieces = [t.split() if split == "whitespace" else [c for c in t if not c.isspace()]
              for t in texts]
    glue = " " if split == "whitespace" else ""
    variants = []
    for text, words in zip(texts, pieces):
        variants.append(text)
        variants += [glue.join(words[:i] + words[i + 1:]) for i in range(len(words))]
    scores = np.concatenate([np.asarray(probabilities(variants[start:start + batch_size]))
                             for start in range(0, len(variants), batch_size)])
    out, row = [], 0
    for words in pieces:
        base = scores[row]
        predicted = int(np.argmax(base))
        dropped = scores[row + 1: row + 1 + len(words), predicted]
        out.append({"class_id": predicted, "probability": round(float(base[predicted]), 6),
                    "words": [(word, round(float(base[predicted] - p), 6))
                              for word, p in zip(words, dropped)]})
        row += 1 + len(words)
    return out


def explain_predictions(path: str | os.PathLike, texts, top: int = 3,
                        head: str | None = None) -> list[dict]:
    """:func:`word_importance` for an exported text model, on raw strings, as TF Serving
    would answer them (``tfkit explain``).

    Args:
        path: a SavedModel version folder or ``saved_models/<name>`` (latest version).
        texts: raw texts.
        top: how many of the most important words to list apart.
        head: for a multi-task export, the classification head to explain.

    Returns:
        One dict per text: ``label``, ``probability``, ``words`` (``[word, importance]`` in
        text order) and ``top`` (the ``top`` most important words, most important first).

    Raises:
        ValueError: for an image or sequence export, or a multi-task one without ``head``
            naming one of its classification heads.

    Examples:
        >>> pre = tfkit.TextPreprocessor(max_tokens=100, max_len=8)
        >>> pre.adapt(["tasty and fresh", "stale, do not buy"])
        >>> model = tfkit.build_model("text_fasttext", vocab_size=pre.vocab_size,
        ...                           num_classes=2, buckets=64)
        >>> path = tfkit.export_for_serving(model, pre, ["great", "other"],
        ...                                 "saved_models/demo", samples=["tasty"])
        >>> answer = explain_predictions(path, ["tasty and fresh"])[0]  # untrained: ~0
        >>> [word for word, _ in answer["words"]], len(answer["top"])
        (['tasty', 'and', 'fresh'], 3)
    """
    from tfkit.served import ServedModel, utf8_texts

    served = ServedModel(path)
    version = served.version
    if served.input_key != "text":
        raise ValueError(f"explain takes text models; '{version}' takes "
                         f"{[served.input_key]}.")
    if served.multi_label:
        raise ValueError(f"explain answers models with one label per example; '{version}' "
                         "answers several.")
    names, output = served.label_names, "probabilities"
    if served.multitask:
        classes = [h for h, head_names in names.items() if head_names]
        if head not in classes:
            raise ValueError(f"'{version}' is a multi-task model: name the head to explain "
                             f"(--head), one of {', '.join(classes)}; got {head!r}.")
        names, output = names[head], f"{head}_probabilities"
    elif head is not None:
        raise ValueError(f"'{version}' has one output; --head is for multi-task models.")

    def probabilities(batch):
        return served(batch)[output]

    split = served.facts.get("preprocessor", {}).get("split", "whitespace")  # how it splits
    texts = [text.decode("utf-8") for text in utf8_texts(texts)]  # refuses what is not text
    out = []
    for result in word_importance(probabilities, texts, split):
        ranked = sorted(result["words"], key=lambda pair: -pair[1])
        out.append({"label": names[result["class_id"]], "probability": result["probability"],
                    "words": [list(pair) for pair in result["words"]],
                    "top": [word for word, _ in ranked[:top]]})
    return out
