"""SFT on the shared loop and generation evaluation, on a tiny Llama and a tiny chat tokenizer (no download).

Behaviour, not mocks: the loss sees exactly the response tokens; every method trains with its frozen
weights bit-identical; a SIGKILLed run resumes to the same end; merged LoRA answers like the adapter
model; temperature scaling repairs an overconfident model; batched left-padded greedy decoding equals
one prompt at a time; the text metrics' bootstrap reproduces sacrebleu/rouge-score on all rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tuneline.tiny_llm import tiny_chat_tokenizer, tiny_llama, toy_examples
from tuneline.evaluate import generation_eval as ge
from tuneline.tasks import sft
from tuneline.tasks.generation import IGNORE
from tuneline.train.freezing import layer_index
from tuneline.train.loop import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def quick(method="lora", **kw) -> sft.SFTSettings:
    base = dict(method=method, max_length=64, batch_size=4, eval_batch_size=8, lr=1e-2, max_steps=3, epochs=1,
                warmup_ratio=0.0, schedule="constant", device="cpu", pad_to_multiple_of=8,
                lora=sft.LoraSettings(r=4, alpha=8, dropout=0.0),
                virtual=sft.VirtualTokenSettings(num_virtual_tokens=4, encoder_hidden_size=16),
                adapter=sft.AdapterSettings(bottleneck=8))
    base.update(kw)
    return sft.SFTSettings(**base)


# --------------------------------------------------------------------------- the loss mask
@pytest.mark.parametrize("packing", [False, True])
def test_loss_covers_exactly_the_response_tokens(tok, packing):
    examples = toy_examples(6)
    toks, rejects, kept = sft.tokenize_examples(tok, examples, 64)
    assert not rejects and kept == list(range(6))
    data = sft.SFTData.of(toks, tok.pad_token_id, packing=packing, max_length=64)
    assert (len(data) < 6) == packing
    batch = data.batch(list(range(len(data))), 8)
    labels = batch["labels"]
    # expected response positions, from the template independently of tokenize_example
    expected = 0
    for e in examples:
        prompt = tok.apply_chat_template(e.history, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(e.history + [{"role": "assistant", "content": e.response}], tokenize=False)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_full = len(tok(full, add_special_tokens=False)["input_ids"])
        expected += n_full - n_prompt
    assert int((labels != IGNORE).sum()) == expected == data.response_tokens
    for e, ex in zip(toks, examples):
        resp = [y for y in e.labels if y != IGNORE]
        assert tok.decode(resp, skip_special_tokens=True).strip() == ex.response
        assert resp[-1] == tok.eos_token_id or tok.eos_token_id in resp  # the end-of-turn token is learned
        n_prompt = len(sft.prompt_ids(e))
        assert all(y == IGNORE for y in e.labels[:n_prompt]) and e.labels[n_prompt:] == e.input_ids[n_prompt:]
    if not packing:
        assert (labels[batch["attention_mask"] == 0] == IGNORE).all()  # padding never in the loss
    # the loss is the mean CE of exactly those tokens
    model = tiny_llama(tok)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        shift = labels[:, 1:]
        want = F.cross_entropy(logits[:, :-1][shift != IGNORE], shift[shift != IGNORE])
        torch.testing.assert_close(sft.sft_loss(model, batch), want)


def test_packed_and_unpacked_validation_loss_agree(tok):
    model = tiny_llama(tok)
    toks, _, _ = sft.tokenize_examples(tok, toy_examples(8), 64)
    plain = sft.response_nll(model, sft.SFTData.of(toks, tok.pad_token_id), 3)
    packed = sft.response_nll(model, sft.SFTData.of(toks, tok.pad_token_id, packing=True, max_length=64), 3)
    assert plain[1] == packed[1]
    assert plain[0] == pytest.approx(packed[0], rel=1e-5)


def test_over_long_prompts_are_rejected_with_a_reason(tok):
    examples = toy_examples(3) + [sft.Example("long", [{"role": "user", "content": "hello " * 40}], "fine", 99)]
    toks, rejects, kept = sft.tokenize_examples(tok, examples, 32)
    assert len(toks) == 3 and kept == [0, 1, 2]
    assert [(r.source_row, r.reason) for r in rejects] == [(99, "prompt_too_long")]


# --------------------------------------------------------------------------- every method
def _base_key(name: str) -> str:
    """The base model's name of a parameter of the (possibly wrapped) base model."""
    return name.replace(".base_layer.", ".").replace(".base.", ".")


@pytest.mark.parametrize("method", sft.SFT_METHODS)
def test_every_method_trains_its_weights_and_leaves_the_rest_bit_identical(tok, method):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = {"freeze_embeddings": True, "freeze_layers": 1} if method == "full" else {}
    r = sft.fit_sft(model, tok, toy_examples(12), toy_examples(4, offset=3), quick(method, **kw), seed=0,
                    progress=False)
    assert r.loop.steps == 3 and r.val["loss"] > 0 and r.trainable_params > 0
    if method == "full":  # the settings freeze the embeddings and layer 0
        assert r.trainable_params == sum(p.numel() for n, p in r.model.named_parameters() if layer_index(n, 2) >= 2)
    else:
        assert 0 < r.trainable_pct < 100
    base = r.model.get_base_model() if hasattr(r.model, "get_base_model") else r.model
    seen, changed, new = set(), [], []
    for n, p in base.named_parameters():
        key = _base_key(n)
        if key not in before:  # a weight the method added
            assert p.requires_grad, f"{method}: added weight {n} does not train"
            new.append(n)
            continue
        seen.add(key)
        # full: everything above the frozen embeddings and layer 0 trains; other methods: no base weight
        trains = method == "full" and layer_index(key, 2) >= 2
        if trains:
            assert not torch.equal(p.detach(), before[key]), f"{method}: trained {n} did not change"
            changed.append(n)
        else:
            assert torch.equal(p.detach(), before[key]), f"{method}: frozen {n} changed"
    assert seen == set(before), set(before) - seen
    if method == "full":
        assert changed and not new
    else:
        method_weights = [n for n, p in r.model.named_parameters() if p.requires_grad]
        assert method_weights and not changed


def test_method_weights_move_from_their_initialization(tok):
    """For the methods that add weights: compare against the weights right after apply_sft_method."""
    for method in ("lora", "ia3", "prompt", "prefix", "p_tuning", "adapter"):
        torch.manual_seed(1)
        wrapped = sft.apply_sft_method(tiny_llama(tok), quick(method))
        init = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
        s = quick(method)
        toks, _, _ = sft.tokenize_examples(tok, toy_examples(8), 64)
        from tuneline.train.loop import train

        train(wrapped, sft.SFTData.of(toks, tok.pad_token_id), sft.sft_loss, sft.loop_settings(s), seed=0,
              progress=False)
        moved = [n for n, p in wrapped.named_parameters() if n in init and not torch.equal(p.detach(), init[n])]
        # LoRA's B starts at zero and A gets no gradient until B moves: after 3 steps both have moved
        assert set(moved) == set(init), (method, sorted(set(init) - set(moved)))


def test_packing_with_a_virtual_token_method_is_refused(tok):
    with pytest.raises(ValueError, match="cannot use packing"):
        sft.fit_sft(tiny_llama(tok), tok, toy_examples(4), [], quick("prompt", packing=True), seed=0)
    with pytest.raises(ValueError, match="unknown"):
        sft.check_settings(quick("qlora"))


def test_llama_layers_are_numbered_for_freezing_and_layer_wise_lr():
    assert layer_index("model.embed_tokens.weight", 2) == 0
    assert layer_index("base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight", 2) == 2
    assert layer_index("lm_head.weight", 2) == 3 and layer_index("model.norm.weight", 2) == 3
    assert layer_index("prompt_encoder.default.embedding.weight", 2) == 3


def test_early_stopping_on_validation_loss_restores_the_best_weights(tok):
    s = quick("full", lr=0.3, max_steps=12, eval_every=2, early_stopping_patience=2, schedule="constant")
    r = sft.fit_sft(tiny_llama(tok), tok, toy_examples(16), toy_examples(4, offset=5), s, seed=0, progress=False)
    losses = [e["loss"] for e in r.loop.evals]
    assert r.val["loss"] == min(losses) and r.loop.best_step == r.loop.evals[int(np.argmin(losses))]["step"]
    # the model holds the best weights: scoring it again gives the best val loss
    val_tok, _, _ = sft.tokenize_examples(tok, toy_examples(4, offset=5), 64)
    again = sft.validation_metrics(r.model, sft.SFTData.of(val_tok, tok.pad_token_id), 8)
    assert again["loss"] == pytest.approx(r.val["loss"], abs=1e-6)


# --------------------------------------------------------------------------- kill and resume
CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tests.tuneline.test_sft import resume_settings
    from tests.tuneline.tiny_llm import toy_examples
    from tuneline.tasks import sft
    tok = AutoTokenizer.from_pretrained(sys.argv[2])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[2])
    model.register_forward_pre_hook(lambda *a: time.sleep(0.03))  # slow, so the kill lands mid-run
    sft.fit_sft(model, tok, toy_examples(24), toy_examples(6, offset=3), resume_settings(), seed=7,
                checkpoint_dir=sys.argv[3], progress=False)
    print("finished")
""")


def resume_settings() -> sft.SFTSettings:
    return quick("lora", max_steps=30, epochs=10, eval_every=5, checkpoint_every=2, lr=5e-3, schedule="linear",
                 warmup_ratio=0.1, lora=sft.LoraSettings(r=4, alpha=8, dropout=0.2))


def _run_in_process(model_dir, ckpt_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sft.fit_sft(model, tok, toy_examples(24), toy_examples(6, offset=3), resume_settings(), seed=7,
                       checkpoint_dir=ckpt_dir, progress=False)


def test_sigkilled_run_resumes_to_the_same_end(tok, tmp_path):
    model_dir = tmp_path / "base"
    tiny_llama(tok, attn="eager").save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    ckpt_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "child.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(model_dir), str(ckpt_dir)],
                                env=env, stdout=out, stderr=out)
        deadline = time.time() + 90
        ckpt = ckpt_dir / CHECKPOINT
        while proc.poll() is None and time.time() < deadline:
            if ckpt.exists() and torch.load(ckpt, weights_only=True)["loop"]["step"] >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{log.read_text()[-2000:]}"
    at_step = torch.load(ckpt, weights_only=True)["loop"]["step"]
    assert 6 <= at_step < 30

    resumed = _run_in_process(model_dir, ckpt_dir)
    straight = _run_in_process(model_dir, tmp_path / "straight")
    assert resumed.loop.resumed_from == at_step and straight.loop.resumed_from == 0
    assert resumed.loop.steps == straight.loop.steps == 30
    assert resumed.val == straight.val and resumed.loop.best_step == straight.loop.best_step
    assert resumed.loop.evals == straight.loop.evals
    assert [c["loss"] for c in resumed.loop.curve] == [c["loss"] for c in straight.loop.curve]
    a, b = dict(resumed.model.named_parameters()), dict(straight.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)


# --------------------------------------------------------------------------- serving
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_model_gives_the_adapter_models_logits(tok, tmp_path, method):
    from transformers import AutoModelForCausalLM

    r = sft.fit_sft(tiny_llama(tok), tok, toy_examples(8), [], quick(method, max_steps=4), seed=0, progress=False)
    toks, _, _ = sft.tokenize_examples(tok, toy_examples(5), 64)
    batch = sft.SFTData.of(toks, tok.pad_token_id).batch(range(5), 8)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        adapter_logits = r.model(**inputs).logits
    out = sft.save_sft_model(r.model, tok, tmp_path / "served", method, meta={"base": "tiny"})
    meta = json.loads((out / sft.META_FILE).read_text())
    assert meta["merged"] and meta["method"] == method and (out / "adapter" / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(out).eval()  # no peft involved
    assert not any("lora" in n or "ia3" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, adapter_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["prefix", "adapter"])
def test_unmerged_methods_reload_on_the_base_model(tok, tmp_path, method):
    base_dir = tmp_path / "base"
    tiny_llama(tok).save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    r = sft.fit_sft(AutoModelForCausalLM.from_pretrained(base_dir), tok, toy_examples(8), [], quick(method),
                    seed=0, progress=False)
    ids = sft.SFTData.of(sft.tokenize_examples(tok, toy_examples(3), 64)[0], tok.pad_token_id).batch(range(3), 8)
    with torch.no_grad():
        want = sft.response_logits(r.model, ids)
    out = sft.save_sft_model(r.model, tok, tmp_path / "served", method)
    with pytest.raises(ValueError, match="base model folder"):
        sft.load_sft_model(out)
    again, _ = sft.load_sft_model(out, base_dir)
    with torch.no_grad():
        torch.testing.assert_close(sft.response_logits(again, ids), want)


# --------------------------------------------------------------------------- generation evaluation
def test_batched_left_padded_greedy_decoding_equals_one_prompt_at_a_time(tok):
    model = tiny_llama(tok, seed=3)  # random weights: long, varied continuations (an end-of-turn token is rare)
    toks, _, _ = sft.tokenize_examples(tok, toy_examples(8), 64)
    prompts = [sft.prompt_ids(e) for e in toks]
    assert len({len(p) for p in prompts}) > 1  # different lengths: left padding is exercised
    batched = ge.greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=8)
    single = [ge.greedy_generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and any(batched)


def test_temperature_scaling_lowers_token_nll_of_an_overconfident_model(tok):
    model = sft.fit_sft(tiny_llama(tok), tok, toy_examples(16), [], quick("full", max_steps=6, lr=2e-2), seed=0,
                        progress=False).model
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # logits x 6: far too confident
    val_tok, _, _ = sft.tokenize_examples(tok, toy_examples(8), 64)
    test_tok, _, _ = sft.tokenize_examples(tok, toy_examples(8, offset=4), 64)
    batches = lambda ts: [sft.SFTData.of(ts, tok.pad_token_id).batch(range(len(ts)), 8)]  # noqa: E731
    val, test = ge.token_stats(model, batches(val_tok)), ge.token_stats(model, batches(test_tok))
    cal = ge.token_calibration(val, test)
    assert cal["temperature"] > 1.5 and not cal["temperature_at_bound"]
    assert cal["after"]["nll"] < cal["before"]["nll"] and cal["val_nll_after"] < cal["val_nll_before"]
    assert cal["after"]["ece"] < cal["before"]["ece"]
    assert cal["after"]["token_accuracy"] == cal["before"]["token_accuracy"]  # T keeps the argmax
    # intervals resample whole responses and hold the point estimates
    assert len(np.unique(test.example)) == len(test_tok)
    boot = ge.token_calibration(val, test, n_bootstrap=50)
    for side in ("before", "after"):
        for k in ("ece", "nll"):
            assert boot[side]["ci"][k]["low"] <= boot[side][k] <= boot[side]["ci"][k]["high"], (side, k)
    # the NLL at T = 1 is the validation loss the loop uses, and perplexity its exp
    total, count = sft.response_nll(model, sft.SFTData.of(test_tok, tok.pad_token_id), 8)
    assert count == len(test) and cal["before"]["nll"] == pytest.approx(total / count, rel=1e-5)
    assert ge.perplexity(test) == pytest.approx(np.exp(total / count), rel=1e-5)


def test_text_metrics_match_sacrebleu_and_rouge_score_with_bootstrap_intervals():
    import sacrebleu
    from rouge_score import rouge_scorer

    preds = ["the order ships tomorrow morning", "please reset your password now", "hello there", "", "ok ok ok"]
    refs = ["your order ships tomorrow", "you can reset the password in settings", "hello there friend",
            "sorry for that", "ok"]
    m = ge.text_metrics(preds, refs, n_bootstrap=200, seed=0)
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for k in ("rouge1", "rouge2", "rougeL"):
        assert m[k] == pytest.approx(100 * np.mean([sc.score(r, p)[k].fmeasure for p, r in zip(preds, refs)]))
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    words = [w for p in preds for w in p.split()]
    assert m["distinct_1"] == pytest.approx(len(set(words)) / len(words))
    assert m["empty_share"] == 0.2 and m["n"] == 5
    for k in ge.TEXT_CI_METRICS:
        assert m["ci"][k]["low"] <= m[k] <= m["ci"][k]["high"], k


def test_token_ece_uses_the_calibration_modules_bins():
    from tuneline.evaluate.metrics import load_metric

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=300)
    y = rng.integers(0, 5, 300)
    module = load_metric("calibration_error")
    want = module.scores(y, probs)["ece"]
    assert module.confidence_calibration_error(probs.max(1), probs.argmax(1) == y) == pytest.approx(want)


def test_evaluate_generation_scores_a_model_end_to_end(tok):
    model = tiny_llama(tok)
    s = sft.GenerationEvalSettings(max_length=64, max_new_tokens=4, n_bootstrap=20, samples=2)
    test = toy_examples(6) + [sft.Example("long", [{"role": "user", "content": "hello " * 80}], "fine", 99)]
    r = sft.evaluate_generation(model, tok, test, toy_examples(4, offset=2), s)
    m = r.metrics
    assert len(r.predictions) == m["n_scored"] == 6 and m["rejected"] == 1
    assert {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "distinct_2", "mean_words", "perplexity", "ci"} <= set(m)
    assert m["perplexity"] > 1 and {"before", "after", "temperature"} <= set(m["calibration"])
    assert m["ci"]["perplexity"]["low"] <= m["perplexity"] <= m["ci"]["perplexity"]["high"]
    assert "ci" in m["calibration"]["after"]
    json.dumps(m, allow_nan=False)  # the stage writes it as metrics JSON
    assert [x["reference"] for x in r.samples] == [e.response for e in test[:2]]


# --------------------------------------------------------------------------- the real default model (slow)
@pytest.mark.slow
def test_lora_sft_on_smollm2_merges_and_scores(tmp_path):
    """SmolLM2-135M (pinned GGUF, converted once; TUNELINE_TEST_CACHE reuses a cache) on 8 bitext
    examples: 2 LoRA steps with checkpoints, merged logits equal the adapter model's, and
    evaluate_generation runs on the real tokenizer and vocabulary. ~2-4 min on 2 cores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneline.data.conversations import read_bitext
    from tuneline.tasks.generation import prepare_gguf_model

    folder = prepare_gguf_model(os.environ.get("TUNELINE_TEST_CACHE") or tmp_path)
    tok = AutoTokenizer.from_pretrained(folder)
    data = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_sample.csv"
    ex = read_bitext(data).examples
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    s = sft.SFTSettings(method="lora", max_length=128, batch_size=2, max_steps=2, lr=1e-3, device="cpu",
                        checkpoint_every=1)
    r = sft.fit_sft(model, tok, ex[:4], ex[200:202], s, seed=0, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert r.loop.steps == 2 and 0 < r.trainable_pct < 3 and r.val["loss"] > 0
    batch = sft.SFTData.of(sft.tokenize_examples(tok, ex[:2], 128)[0], tok.pad_token_id).batch([0, 1], 8)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        want = r.model(**inputs).logits
    out = sft.save_sft_model(r.model, tok, tmp_path / "served", "lora")
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, want, atol=1e-3, rtol=1e-3)  # fp32 round-off, logits ~20
    g = sft.evaluate_generation(plain, tok, ex[:2], ex[300:302], sft.GenerationEvalSettings(
        max_length=128, max_new_tokens=8, n_bootstrap=10, score_batch_size=2))
    assert g.metrics["n_scored"] == 2 and all(g.predictions) and g.metrics["perplexity"] > 1
    assert g.metrics["calibration"]["before"]["n_tokens"] > 0
