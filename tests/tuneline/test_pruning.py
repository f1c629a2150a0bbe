"""Pruning on a tiny 4-layer BERT: sparsity reached and kept through recovery; heads really removed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.tuneline.conftest import LABELS
from tuneline.compress.storage import load_variant, save_variant
from tuneline.compress.distillation import train_with_kd
from tuneline.evaluate.inference import logits as logits_of
from tuneline.compress.pruning import (
    PruningError,
    head_counts,
    head_importance,
    heads_to_remove,
    magnitude_prune,
    make_permanent,
    prunable_linears,
    remove_heads,
    sparsity,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_magnitude_pruning_reaches_the_sparsity_and_zeros_survive_recovery(teacher):
    model, _, enc, y = teacher
    t_logits = logits_of(model, enc)
    pruned = copy.deepcopy(model)
    magnitude_prune(pruned, 0.5)
    s = sparsity(pruned)
    assert s["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 < s["overall_sparsity"] < s["prunable_sparsity"]  # embeddings and head stay dense
    zero_masks = {n: (m.weight_mask == 0).clone() for n, m in prunable_linears(pruned)}
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(pruned)}
    train_with_kd(pruned, enc, y, teacher_logits=t_logits, epochs=1, batch_size=16, learning_rate=1e-3, desc="recover")
    make_permanent(pruned)
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())
    changed = False
    for n, m in prunable_linears(pruned):
        assert torch.all(m.weight[zero_masks[n]] == 0), f"{n}: pruned weights came back during recovery"
        changed |= not torch.equal(m.weight[~zero_masks[n]], before[n][~zero_masks[n]])
    assert changed, "recovery fine-tune did not update the surviving weights"
    assert sparsity(pruned)["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_magnitude_pruning_removes_the_smallest_weights(teacher):
    pruned = copy.deepcopy(teacher[0])
    magnitude_prune(pruned, 0.3)
    kept = torch.cat([m.weight[m.weight != 0].abs() for _, m in prunable_linears(pruned)])
    gone = torch.cat([m.weight_orig[m.weight_mask == 0].abs() for _, m in prunable_linears(pruned)])
    assert gone.max() <= kept.min()  # one global threshold
    with pytest.raises(PruningError):
        magnitude_prune(copy.deepcopy(teacher[0]), 1.0)


def test_head_pruning_removes_the_heads_and_the_model_still_runs(teacher):
    model, _, enc, y = teacher
    pruned = copy.deepcopy(model)
    assert head_counts(pruned) == [4, 4, 4, 4]
    n_before = sum(p.numel() for p in pruned.parameters())
    kept = remove_heads(pruned, {0: [1, 3], 2: [0]})
    assert kept == {0: [0, 2], 1: [0, 1, 2, 3], 2: [1, 2, 3], 3: [0, 1, 2, 3]}
    assert head_counts(pruned) == [2, 4, 3, 4]
    att = pruned.bert.encoder.layer[0].attention
    assert att.self.query.out_features == att.self.key.out_features == att.self.value.out_features == 2 * 8
    assert att.output.dense.in_features == 16
    # the kept heads keep their weights: head 2 of layer 0 is now head 1
    src = model.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(att.self.query.weight[8:16], src[16:24])
    assert sum(p.numel() for p in pruned.parameters()) < n_before
    assert logits_of(pruned, enc).shape == (len(enc), 2)
    train_with_kd(pruned, enc, y, epochs=0.5, batch_size=16, kd_weight=0.0, desc="recover")  # trains with new shapes


def test_removing_a_head_that_contributes_nothing_keeps_the_outputs(teacher):
    model, _, enc, _ = teacher
    m = copy.deepcopy(model)
    with torch.no_grad():  # head 3 of layer 1 writes nothing: zero its slice of the output projection
        m.bert.encoder.layer[1].attention.output.dense.weight[:, 24:32] = 0
    ref = logits_of(m, enc)
    remove_heads(m, {1: [3]})
    np.testing.assert_allclose(logits_of(m, enc), ref, atol=1e-5)


def test_head_importance_ranks_and_selection_keeps_one_head_per_layer(teacher):
    model, _, enc, y = teacher
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.bert.encoder.layer[1].attention.output.dense.weight[:, 24:32] = 0  # head (1, 3) is dead
    order = [np.arange(i, min(i + 16, len(enc))) for i in range(0, len(enc), 16)]
    batches = [(enc.batch(idx), torch.tensor(y[idx])) for idx in order]
    imp = head_importance(m, batches)
    assert [len(v) for v in imp] == [4, 4, 4, 4]
    assert imp[1][3] == pytest.approx(0.0, abs=1e-8) and imp[1].max() > 0
    assert 3 in heads_to_remove(imp, 0.1).get(1, [])  # the dead head goes first
    remove = heads_to_remove(imp, 0.9)
    assert all(4 - len(remove.get(li, [])) >= 1 for li in range(4))
    assert sum(len(v) for v in remove.values()) == 12  # 14 asked, 12 possible with one kept per layer


def test_head_pruned_model_saves_and_loads_back(teacher, tmp_path):
    model, tok, enc, _ = teacher
    m = copy.deepcopy(model)
    kept = remove_heads(m, {0: [0], 3: [1, 2]})
    save_variant(m, tok, tmp_path / "h", {"name": "h", "format": "heads", "kept_heads": kept, "labels": LABELS,
                                          "max_length": 32})
    loaded = load_variant(tmp_path / "h")
    assert head_counts(loaded.model) == [3, 4, 4, 2]
    np.testing.assert_allclose(logits_of(loaded.model, enc), logits_of(m, enc), atol=1e-5)
