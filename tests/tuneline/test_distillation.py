"""Distillation on a tiny 4-layer BERT teacher: the student's layout, its loss, its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tuneline.conftest import LABELS
from tuneline.compress.storage import load_variant, save_variant
from tuneline.compress.distillation import (
    DistillationError,
    distillation_loss,
    every_other_layer,
    hidden_layer_map,
    make_student,
    train_with_kd,
)
from tuneline.evaluate.inference import logits as logits_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_student_has_the_intended_depth_and_the_chosen_teacher_layers(teacher):
    model, *_ = teacher
    student = make_student(model, [1, 3])
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    t_state, s_state = model.state_dict(), student.state_dict()
    for j, i in enumerate([1, 3]):
        for name, value in model.bert.encoder.layer[i].state_dict().items():
            assert torch.equal(s_state[f"bert.encoder.layer.{j}.{name}"], value), name
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(s_state[name], t_state[name])
    # a copy, not shared: training the student leaves the teacher as it was
    before = model.bert.encoder.layer[1].attention.self.query.weight.clone()
    with torch.no_grad():
        student.bert.encoder.layer[0].attention.self.query.weight.add_(1.0)
    assert torch.equal(model.bert.encoder.layer[1].attention.self.query.weight, before)
    assert model.config.num_hidden_layers == 4


def test_default_student_keeps_every_other_layer(teacher):
    model, *_ = teacher
    assert every_other_layer(6) == [0, 2, 4]
    student = make_student(model)
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                       model.bert.encoder.layer[2].output.dense.weight)


@pytest.mark.parametrize("layers", [[], [2, 1], [0, 4], [1, 1]])
def test_bad_layer_choices_are_errors(teacher, layers):
    with pytest.raises(DistillationError):
        make_student(teacher[0], layers)


def test_loss_is_lower_for_a_student_that_matches_the_teacher(teacher):
    model, _, enc, y = teacher
    t = torch.as_tensor(logits_of(model, enc))
    labels = torch.tensor(y)
    same, parts = distillation_loss(t.clone(), t, labels, temperature=2.0, kd_weight=0.5)
    assert parts["kd"] == pytest.approx(0.0, abs=1e-6)
    off = torch.as_tensor(logits_of(make_student(model, [0]), enc))
    other, _ = distillation_loss(off, t, labels, temperature=2.0, kd_weight=0.5)
    assert float(same) < float(other)
    # pure KD (kd_weight=1) ignores the labels: only the distance to the teacher counts
    flipped = 1 - labels
    assert distillation_loss(t, t, flipped, kd_weight=1.0)[0] < distillation_loss(off, t, flipped, kd_weight=1.0)[0]


def test_distilling_moves_the_student_towards_the_teacher(teacher):
    model, _, enc, y = teacher
    t = logits_of(model, enc)
    student = make_student(model, [0])
    with torch.no_grad():  # start clearly away from the teacher
        for p in student.bert.encoder.layer.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def kd(m):
        return distillation_loss(torch.as_tensor(logits_of(m, enc)), torch.as_tensor(t), torch.tensor(y),
                                 kd_weight=1.0)[1]["kd"]

    before = kd(student)
    train_with_kd(student, enc, y, teacher_logits=t, epochs=4, batch_size=16, learning_rate=3e-3, kd_weight=0.9,
              temperature=2.0, desc="distill")
    assert kd(student) < before
    agree = (logits_of(student, enc).argmax(1) == t.argmax(1)).mean()
    assert agree >= 0.9


def test_hidden_state_matching_runs_and_needs_equal_sizes(teacher):
    model, _, enc, y = teacher
    assert hidden_layer_map(2, 4) == [2, 4] and hidden_layer_map(3, 6) == [2, 4, 6]
    student = make_student(model, [0, 2])
    out = train_with_kd(student, enc, y, teacher=model, teacher_logits=logits_of(model, enc), epochs=0.5,
                    batch_size=16, hidden_weight=1.0, desc="hidden")
    assert out["hidden"] >= 0 and np.isfinite(out["loss"])
    s_hidden = [torch.zeros(2, 5, 16)] * 3
    t_hidden = [torch.zeros(2, 5, 32)] * 5
    with pytest.raises(DistillationError, match="equal hidden sizes"):
        distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, dtype=torch.long),
                          student_hidden=s_hidden, teacher_hidden=t_hidden, hidden_weight=1.0)


def test_saved_student_loads_back_with_the_same_predictions(teacher, tmp_path):
    model, tok, enc, _ = teacher
    student = make_student(model, [0, 2])
    save_variant(student, tok, tmp_path / "s", {"name": "s", "format": "hf", "labels": LABELS, "max_length": 32})
    loaded = load_variant(tmp_path / "s")
    assert loaded.model.config.num_hidden_layers == 2 and loaded.labels == LABELS
    np.testing.assert_allclose(logits_of(loaded.model, enc), logits_of(student, enc), atol=1e-5)
