"""train.teacher: knowledge distillation from a served model or a finished run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import tiny_overrides, tiny_texts, write_tiny_csv

import tfkit
from tfkit.config import ConfigError
from tfkit.distillation import DistillationLoss, LabelAccuracy


def softened(p, t):
    logits = np.log(np.clip(p, 1e-7, 1)) / t
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_loss_mixes_cross_entropy_and_the_softened_divergence():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    student = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]], np.float32)
    labels = np.array([0, 2])
    targets = np.concatenate([labels[:, None].astype(np.float32), teacher], axis=1)
    t, alpha = 3.0, 0.25
    cross_entropy = -np.log(student[np.arange(2), labels])
    p, q = softened(teacher, t), softened(student, t)
    divergence = (p * (np.log(p) - np.log(q))).sum(-1) * t * t
    expected = np.mean((1 - alpha) * cross_entropy + alpha * divergence)
    loss = DistillationLoss(3, alpha=alpha, temperature=t)
    assert float(loss(targets, student)) == pytest.approx(expected, rel=1e-5)
    # label ids alone (validation, test): the cross-entropy
    assert float(loss(labels[:, None], student)) == pytest.approx(cross_entropy.mean(), rel=1e-5)
    accuracy = LabelAccuracy(3)
    accuracy.update_state(targets, student)
    assert float(accuracy.result()) == 0.5  # the first right, the second not


def write_inverted_csv(path):
    """The tiny reviews with every label swapped: a teacher trained on them is wrong on
    every example of the true data."""
    texts, labels = tiny_texts(60)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows((t, "bad" if y == "good" else "good") for t, y in zip(texts, labels))
    return path


@pytest.fixture(scope="module")
def inverted_teacher(tmp_path_factory):
    """A fastText teacher trained on inverted labels, exported (its run folder and SavedModel)."""
    root = tmp_path_factory.mktemp("teacher")
    data = write_inverted_csv(root / "inverted.csv")
    return tfkit.train(None, tiny_overrides(data, model="text_fasttext", extra=[
        "train.epochs=4", f"train.runs_dir={root / 'runs'}",
        f"export.base_dir={root / 'saved_models'}", "name=teacher", "train.learning_rate=0.05",
        "export.enabled=true"]))


def test_the_student_learns_the_teachers_answers(inverted_teacher, tiny_csv):
    """With alpha 1 the student learns only from the teacher: taught by a teacher that
    inverts every label it scores far below a student trained alone on the true labels."""
    assert inverted_teacher.metrics["test_accuracy"] >= 0.9  # on its own (inverted) data
    common = ["train.epochs=4", "train.learning_rate=0.05", "export.enabled=false"]
    alone = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=common))
    taught = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=common + [
        f"train.teacher={inverted_teacher.export_path.parent}", "train.distill_alpha=1.0",
        "train.distill_temperature=1.0"]))
    facts = taught.metrics["distillation"]
    assert facts["teacher"] == str(inverted_teacher.export_path.parent)
    assert facts["teacher_train_accuracy"] <= 0.1 and facts["alpha"] == 1.0
    assert alone.metrics["test_accuracy"] >= 0.8
    assert taught.metrics["test_accuracy"] <= 0.3
    saved = json.loads((taught.run_dir / "metrics.json").read_text())
    assert saved["distillation"] == facts


def test_a_run_folder_teaches_as_its_export_does(inverted_teacher, tiny_csv):
    """The teacher read from its run folder answers as its SavedModel does."""
    facts = []
    for teacher in (inverted_teacher.run_dir, inverted_teacher.export_path):
        result = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=[
            "train.epochs=1", "export.enabled=false", f"train.teacher={teacher}"]))
        facts.append(result.metrics["distillation"])
    assert facts[0]["teacher_train_accuracy"] == facts[1]["teacher_train_accuracy"]
    assert facts[0]["teacher_test_accuracy"] == facts[1]["teacher_test_accuracy"]


def test_bad_teachers_and_settings_fail_before_any_run_folder(inverted_teacher, workdir):
    write_tiny_csv(workdir / "reviews.csv")
    other = workdir / "other.csv"
    other.write_text("review,sentiment\n" + "".join(
        f"text number {i},{['yes', 'no', 'maybe'][i % 3]}\n" for i in range(30)))
    cases = {
        "train.distill_temperature must be a finite number > 0": (
            "reviews.csv", ["train.distill_temperature=0"]),
        r"train.distill_alpha must be in \[0, 1\]": ("reviews.csv", ["train.distill_alpha=1.5"]),
        "does not exist": ("reviews.csv", ["train.teacher=nowhere"]),
        "neither a finished tfkit run nor a SavedModel": ("reviews.csv", [
            f"train.teacher={workdir}"]),
        r"answers the labels \['bad', 'good'\]; the data's labels are \['maybe', 'no', 'yes'\]": (
            "other.csv", [f"train.teacher={inverted_teacher.export_path}"]),
    }
    for message, (data, extra) in cases.items():
        with pytest.raises(ConfigError, match=message):
            tfkit.train(None, tiny_overrides(workdir / data, model="text_fasttext", extra=extra))
    assert not (workdir / "runs").exists()


def test_streamed_data_is_taught_as_data_in_memory(inverted_teacher, tiny_csv):
    """Streamed from its file, each example meets the teacher's answer by its key: the same
    teacher accuracy and the same inverted student as in memory. A token cache written
    without a teacher is not reused for the taught targets."""
    common = ["train.epochs=4", "train.learning_rate=0.05", "export.enabled=false",
              "train.distill_alpha=1.0", "train.distill_temperature=1.0",
              f"train.teacher={inverted_teacher.export_path.parent}"]
    cache = [f"data.cache_dir={tiny_csv.parent / 'cache'}", "data.stream=true"]
    alone = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=common[:3]
                                             + cache))
    assert alone.metrics["test_accuracy"] >= 0.8
    in_memory = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext", extra=common))
    streamed = tfkit.train(None, tiny_overrides(tiny_csv, model="text_fasttext",
                                                extra=common + cache))
    taught = [r.metrics["distillation"] for r in (in_memory, streamed)]
    assert taught[0]["teacher_train_accuracy"] == taught[1]["teacher_train_accuracy"] <= 0.1
    assert in_memory.metrics["test_accuracy"] <= 0.3
    assert streamed.metrics["test_accuracy"] <= 0.3
