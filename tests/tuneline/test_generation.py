"""Generation task foundations on a tiny Llama and a tiny chat tokenizer built here (no download)."""

import json

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tuneline.data import conversations as conv
from tuneline.tasks import generation as gen

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
CORPUS = ["hello how are you today", "i am fine thanks and you", "where is my order please",
          "your order ships tomorrow", "user assistant system", "cancel refund invoice help"]


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(CORPUS, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = TEMPLATE
    return fast


def tiny_llama(tok, seed=0, attn="eager"):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


def examples(tok, n=6, max_length=64):
    pairs = [([{"role": "user", "content": "where is my order please"}], "your order ships tomorrow"),
             ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "how are you"},
               {"role": "user", "content": "i am fine thanks and you"}], "fine thanks"),
             ([{"role": "user", "content": "cancel refund"}], "help invoice")]
    return [gen.tokenize_example(tok, h, r, max_length, conversation_id=str(i))
            for i, (h, r) in enumerate(pairs * (n // len(pairs)))]


def test_loss_mask_covers_exactly_the_response_tokens(tok):
    history = [{"role": "user", "content": "where is my order please"}]
    e = gen.tokenize_example(tok, history, "your order ships tomorrow", max_length=64)
    response_ids = tok("your order ships tomorrow<|im_end|> ", add_special_tokens=False)["input_ids"]
    n_prompt = len(e.input_ids) - len(response_ids)
    assert e.labels[:n_prompt] == [gen.IGNORE] * n_prompt
    assert e.labels[n_prompt:] == response_ids == e.input_ids[n_prompt:]
    assert tok.decode(e.input_ids[:n_prompt]).split()[-1] == "assistant"
    batch = gen.collate([e, examples(tok)[1]], tok.pad_token_id, multiple=32)
    assert batch["input_ids"].shape[1] == 32
    real = batch["attention_mask"].bool()
    assert (batch["labels"][~real] == gen.IGNORE).all()  # padding never in the loss
    assert int((batch["labels"][0] != gen.IGNORE).sum()) == len(response_ids)


def test_prompt_too_long_raises_and_response_truncates(tok):
    history = [{"role": "user", "content": " ".join(["hello"] * 40)}]
    with pytest.raises(gen.PromptTooLong):
        gen.tokenize_example(tok, history, "fine", max_length=64, max_prompt_tokens=20)
    e = gen.tokenize_example(tok, [{"role": "user", "content": "hello"}], " ".join(["fine"] * 50), max_length=16)
    assert len(e.input_ids) == 16 and e.labels[-1] != gen.IGNORE


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_examples_never_attend_to_each_other(tok, attn):
    model = tiny_llama(tok, attn=attn)
    exs = examples(tok, n=6)
    rows = gen.pack(exs, max_length=64)
    assert any(len(r) > 1 for r in rows)
    packed = gen.collate_packed(rows, tok.pad_token_id, multiple=32)
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                       attention_mask=packed["attention_mask"]).logits
        for r, row in enumerate(rows):
            at = 0
            for e in row:
                n = len(e.input_ids)
                alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
                torch.testing.assert_close(logits[r, at:at + n], alone, atol=1e-5, rtol=1e-5)
                at += n
    # and the control: without restarting positions, the second example does see the first
    row = next(r for r in rows if len(r) > 1)
    ids = torch.tensor([row[0].input_ids + row[1].input_ids])
    with torch.no_grad():
        joined = model(input_ids=ids).logits[0, len(row[0].input_ids):]
        alone = model(input_ids=torch.tensor([row[1].input_ids])).logits[0]
    assert not torch.allclose(joined, alone, atol=1e-3)


def test_packed_loss_equals_token_weighted_unpacked_loss(tok):
    model = tiny_llama(tok)
    exs = examples(tok, n=6)
    packed = gen.collate_packed(gen.pack(exs, 64), tok.pad_token_id)
    plain = gen.collate(exs, tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(gen.causal_lm_loss(model, packed), gen.causal_lm_loss(model, plain),
                                   atol=1e-5, rtol=1e-5)


def test_padded_length_buckets_and_multiples():
    assert gen.padded_length(1) == 32 and gen.padded_length(33) == 64
    assert gen.padded_length(70, buckets=[64, 128, 256]) == 128
    with pytest.raises(ValueError):
        gen.padded_length(300, buckets=[64, 128])


def test_lora_sft_steps_change_lora_weights_and_leave_base_bit_identical(tok):
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(tok).train()
    base_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    wrapped = {n.split(".")[-2] for n in lora_names}  # the Linear each adapter sits on, e.g. q_proj
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= {
        n.split(".lora_")[0].split(".")[-1] for n in lora_names}, wrapped
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = gen.collate_packed(gen.pack(examples(tok, n=6), 64), tok.pad_token_id)
    losses = []
    for _ in range(5):
        loss = gen.causal_lm_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora_before[n])]
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    base_after = model.get_base_model().state_dict()
    for k, v in base_before.items():
        key = next(kk for kk in base_after if kk.replace(".base_layer", "") == k)
        assert torch.equal(base_after[key], v), k


def test_loss_accepts_the_shared_loops_batch(tok):
    from types import SimpleNamespace

    model = tiny_llama(tok)
    inputs = gen.collate(examples(tok, n=3), tok.pad_token_id)
    with torch.no_grad():
        a = gen.causal_lm_loss(model, SimpleNamespace(rows=None, inputs=inputs, device="cpu"))
        b = gen.causal_lm_loss(model, inputs)
    assert torch.equal(a, b) and a.ndim == 0
    assert gen.perplexity(model, [inputs]) == pytest.approx(float(torch.exp(b)), rel=1e-5)


def test_distinct_n_and_lengths():
    assert gen.distinct_n(["a b a b"], 1) == 0.5
    assert gen.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert gen.distinct_n([""], 2) == 0.0
    assert gen.response_lengths(["a b", "", "a b c d"]) == {"mean_words": 2.0, "median_words": 2.0,
                                                         "empty_share": pytest.approx(1 / 3)}


# ---------------------------------------------------------------- data readers
def test_chitchat_examples_ids_and_quarantine(tmp_path):
    m = lambda text: {"text": text, "sender": "x", "timestamp": "t"}  # noqa: E731
    data = {
        "c1": {"messages": [[m("hi"), m("how are you")], [m("fine")], [m("good to hear")]], "ratings": {}},
        "c2": {"messages": [[m("x" * 50)], [m("too long prompt above")]]},
        "c3": {"messages": [[m("hello")], [m("  ")]]},
        "c4": {"ratings": {}},
        "c5": {"messages": [[m("alone")]]},
    }
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(data))
    r = conv.read_chitchat(p, max_prompt_chars=40)
    assert [(e.conversation_id, e.response) for e in r.examples] == [("c1", "fine"), ("c1", "good to hear")]
    assert r.examples[0].history == [{"role": "user", "content": "hi how are you"}]
    assert [h["role"] for h in r.examples[1].history] == ["assistant", "user"]  # same speaker as the response = assistant
    assert sorted(x.reason for x in r.rejects) == sorted(
        [conv.PROMPT_TOO_LONG, conv.EMPTY_RESPONSE, conv.MISSING_FIELD, conv.NO_REPLY])
    assert r.records_in == len(r.examples) + len(r.rejects) == 6
    assert set(r.rejects_frame().columns) == {"source_row", "reason", "detail"}


def test_bitext_reader_quarantines_with_reasons(tmp_path):
    p = tmp_path / "b.csv"
    pd.DataFrame({"instruction": ["where is my order", "refund", "", "x" * 30],
                  "response": ["it ships", "", "ok", "fine"]}).to_csv(p, index=False)
    r = conv.read_bitext(p, max_prompt_chars=20)
    assert [e.response for e in r.examples] == ["it ships"]
    assert [x.reason for x in r.rejects] == [conv.EMPTY_RESPONSE, conv.EMPTY_PROMPT, conv.PROMPT_TOO_LONG]
    pd.DataFrame({"instruction": ["a"], "answer": ["b"]}).to_csv(p, index=False)
    r = conv.read_bitext(p)
    assert not r.examples and r.rejects[0].reason == conv.MISSING_FIELD and "response" in r.rejects[0].detail


def test_bitext_shared_sample_reconciles():
    from pathlib import Path

    path = Path("../shared/data/bitext/customer_support_sample.csv")
    if not path.exists():
        pytest.fail(f"{path} missing: run from the repository root beside /work/shared")
    r = conv.read_bitext(path)
    assert r.records_in == 4514 == len(r.examples) + len(r.rejects)
    assert len(r.examples) > 4000


# ---------------------------------------------------------------- metric module
def test_generation_scores_module_matches_sacrebleu_and_rouge_score():
    import sacrebleu
    from rouge_score import rouge_scorer

    preds = ["the order ships tomorrow morning", "please reset your password now", "hello there"]
    refs = ["your order ships tomorrow", "you can reset the password in settings", "hello there friend"]
    got = gen.generation_scores(preds, refs)
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for k in ("rouge1", "rouge2", "rougeL"):
        want = 100 * sum(sc.score(r, p)[k].fmeasure for p, r in zip(preds, refs)) / len(preds)
        assert got[k] == pytest.approx(want)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert 0 < got["rougeL"] < 100 and got["n"] == 3
