"""The compress stage on the tiny fine-tuned, calibrated BERT: every variant built, saved, reloaded, measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from tiny_pipeline import LABELS, base_params, task_params, build_pipeline, make_paths, write_splits

from stages import calibrate
from stages.compress import run
from tuneline.evaluate.calibration import load_calibrator
from tuneline.compress.storage import load_variant
from tuneline.compress.distillation import DistillationError
from tuneline.evaluate.inference import logits as logits_of
from tuneline.evaluate.inference import tokenize
from tuneline.params import CalibrateParams, CompressParams, LatencyParams, TrainParams
from tuneline.compress.pruning import head_counts, prunable_linears
from tuneline.compress.quantization import is_quantized
from tuneline.data.records import read_parquet

pytestmark = pytest.mark.usefixtures("one_thread")


VARIANTS = [
    {"kind": "distill", "name": "student", "layers": [1], "epochs": 1, "lr": 1e-3},
    {"kind": "quantize", "name": "int8"},
    {"kind": "prune", "name": "sparse50", "method": "magnitude", "amount": 0.5, "recovery_epochs": 0.5, "lr": 1e-3},
    {"kind": "prune", "name": "heads50", "method": "heads", "amount": 0.5, "importance_batches": 2,
     "recovery_epochs": 0.5, "lr": 1e-3},
    {"kind": "quantize", "name": "heads50_int8", "source": "heads50", "per_channel": False},
]
FAST = {"n_bootstrap": 0, "latency": LatencyParams(batch1_examples=4, batch32_batches=2, warmup=1)}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("compress")
    paths = build_pipeline(root, tiny_model_dir)
    calibrate.run(CalibrateParams(), task_params(), paths)
    out = run(CompressParams(variants=VARIANTS, **FAST), CalibrateParams(), base_params(), task_params(), paths)
    return root, paths, out


def test_compress_json_has_the_teacher_every_variant_and_the_conditions(compressed):
    root, _, out = compressed
    saved = json.loads((root / "reports/metrics/compress.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert [v["name"] for v in saved["variants"]] == [v["name"] for v in VARIANTS]
    keys = {"name", "kind", "macro_f1", "accuracy", "size_mb", "params", "sparsity", "latency_ms_p50",
            "latency_ms_p95", "throughput_b32", "f1_ratio_vs_teacher", "speedup_vs_teacher", "size_ratio_vs_teacher"}
    for v in saved["variants"]:
        assert keys <= set(v), keys - set(v)
        assert v["reload_same_predictions"] is True
        assert v["latency_ms_p95"] >= v["latency_ms_p50"] > 0 and v["throughput_b32"] > 0
    t = saved["teacher"]
    assert {"macro_f1", "accuracy", "size_mb", "params", "latency_ms_p50", "throughput_b32"} <= set(t)
    c = saved["conditions"]
    assert c["interleaved"] is True and c["test_rows"] == 160 and c["calibration"] == "temperature"
    # the target rows exist for the kinds present (met or not, they are reported)
    assert {(x["variant"], x["metric"]) for x in saved["targets"]} >= {("int8", "size_ratio_vs_teacher"),
                                                                      ("sparse50", "f1_drop_points")}
    for name in ("variants.csv", "tradeoff.png"):
        assert (root / "reports/plots/compress" / name).stat().st_size > 0


def test_saved_variants_load_back_and_predict_as_scored(compressed):
    root, paths, out = compressed
    test = read_parquet(Path(paths.splits) / "test.parquet")
    rows = {v["name"]: v for v in out["variants"]}
    for name in rows:
        d = root / "models/compressed" / name
        v = load_variant(d)
        assert v.labels == ["ham", "spam"]
        # calibrated like the teacher, on its own logits
        assert load_calibrator(d / "calibrator").method == "temperature"
        pred = logits_of(v.model, tokenize(v.tokenizer, test["text"].tolist(), v.max_length)).argmax(1)
        acc = float((pred == np.array([["ham", "spam"].index(x) for x in test["label"]])).mean())
        assert acc == pytest.approx(rows[name]["accuracy"], abs=1e-9), name

    assert load_variant(root / "models/compressed/student").model.config.num_hidden_layers == 1
    # the serving side (apps.serve) loads a variant folder with its calibrator
    from tuneline.deploy.serving import load_model

    pred = load_model(root / "models/compressed/int8", "int8")
    assert pred.calibrated and pred.predict_proba(test["text"].tolist()[:3]).shape == (3, 2)
    assert rows["student"]["params"] < out["teacher"]["params"]


def test_int8_is_smaller_and_quantized(compressed):
    root, _, out = compressed
    rows = {v["name"]: v for v in out["variants"]}
    assert rows["int8"]["size_ratio_vs_teacher"] < 1.0
    assert rows["int8"]["reload_max_abs_logit_diff"] == 0.0  # bit-identical on the same batches
    assert is_quantized(load_variant(root / "models/compressed/int8").model)
    q = load_variant(root / "models/compressed/heads50_int8")
    assert is_quantized(q.model) and q.info["kept_heads"] == rows["heads50"]["details"]["kept_heads"]


def test_pruned_variants_report_their_real_sparsity_and_shapes(compressed):
    root, _, out = compressed
    rows = {v["name"]: v for v in out["variants"]}
    sparse = load_variant(root / "models/compressed/sparse50").model
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_linears(sparse))
    total = sum(m.weight.numel() for _, m in prunable_linears(sparse))
    assert rows["sparse50"]["sparsity"] == pytest.approx(zeros / total, abs=1e-4)
    assert rows["sparse50"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    heads = load_variant(root / "models/compressed/heads50").model
    assert head_counts(heads) == [1, 1]  # 2 heads per layer, half removed, at least one kept per layer
    assert rows["heads50"]["params"] < out["teacher"]["params"]


def test_a_failing_variant_leaves_the_previous_output_in_place(compressed):
    root, paths, _ = compressed
    before = sorted(p.name for p in (root / "models/compressed").iterdir())
    bad = CompressParams(variants=[{"kind": "distill", "name": "bad", "layers": [7]}], **FAST)
    with pytest.raises(DistillationError, match="teacher indices"):
        run(bad, CalibrateParams(), base_params(), task_params(), paths)
    assert sorted(p.name for p in (root / "models/compressed").iterdir()) == before
    assert not list((root / "models").glob(".compressed.*"))


@pytest.mark.parametrize("variants, match", [
    ([{"kind": "quantize", "name": "q", "source": "student"}], "listed before"),
    ([{"kind": "quantize", "name": "teacher"}], "reserved"),
    ([{"kind": "quantize", "name": "a"}, {"kind": "quantize", "name": "a"}], "used twice"),
    ([{"kind": "prune", "name": "p", "amount": 1.0}], "less than 1"),
])
def test_bad_variant_lists_are_rejected(variants, match):
    with pytest.raises(ValidationError, match=match):
        CompressParams(variants=variants)


def test_a_teacher_that_does_not_merge_is_distilled_and_the_rest_skipped(tmp_path, tiny_model_dir):
    from tuneline.train.methods import apply_method
    from tuneline.train.models import build_classifier, save_finetuned

    paths = make_paths(tmp_path)
    write_splits(paths, sizes=(64, 40, 40))
    source = {"kind": "local", "path": str(tiny_model_dir)}
    tp = TrainParams(base_model=source, method="prompt", prompt={"num_virtual_tokens": 4}, max_length=32)
    model, tok = build_classifier(tiny_model_dir, LABELS)
    model = apply_method(model, tp, tiny_model_dir)  # an untrained soft prompt is enough: nothing merges
    save_finetuned(model, tok, Path(paths.models) / "finetuned",
                   {"method": "prompt", "labels": LABELS, "max_length": 32, "base": "tiny", "base_source": source})
    calibrate.run(CalibrateParams(), task_params(), paths)
    variants = [{"kind": "distill", "name": "student", "layers": [0], "epochs": 0.5},
                {"kind": "quantize", "name": "int8"},
                {"kind": "prune", "name": "sparse", "recovery_epochs": 0},
                {"kind": "quantize", "name": "sparse_int8", "source": "sparse"},
                {"kind": "quantize", "name": "student_int8", "source": "student"}]
    out = run(CompressParams(variants=variants, **FAST), CalibrateParams(), base_params(), task_params(), paths)
    rows = {v["name"]: v for v in out["variants"]}
    assert "skipped" not in rows["student"] and rows["student"]["reload_same_predictions"]
    assert load_variant(Path(paths.models) / "compressed" / "student").model.config.num_hidden_layers == 1
    for name in ("int8", "sparse"):
        assert "prompt" in rows[name]["skipped"] and not (Path(paths.models) / "compressed" / name).exists()
    assert "'sparse' was skipped" in rows["sparse_int8"]["skipped"]
    assert "skipped" not in rows["student_int8"] and rows["student_int8"]["size_ratio_vs_teacher"] < 1
