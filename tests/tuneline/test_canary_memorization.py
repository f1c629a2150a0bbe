"""Canary memorization (issue 14, item 3): unique synthetic secrets planted in a copy of the training
conversations are learned by an SFT model trained on the raw copy, and not by one trained on the
clean stage's anonymized copy.

The model is a tiny Llama with a character-level tokenizer (so a canary is learnable at all) fine-tuned
on the shared loop (tuneline.tasks.sft.fit_sft) until it memorizes its training responses. Two
measures, as in Carlini et al.'s "secret sharer": greedy generation of the planted answer, and the
rank of the canary's likelihood among same-format values the model never saw (exposure).
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tuneline.data.audit import find_canaries, make_canaries
from tuneline.data.conversations import Example
from tuneline.data.pii import fast
from tuneline.evaluate.generation_eval import greedy_generate
from tuneline.params import CleanParams
from tuneline.tasks.sft import SFTSettings, fit_sft

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
KINDS = ("email", "phone")
N_CANARIES, N_DECOYS = 4, 24
FILLER = [("hi there", "hello, how can I help?"), ("where is my parcel", "it ships tomorrow"),
          ("thanks", "you are welcome"), ("cancel it please", "done, it is cancelled")]


def char_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    chars = sorted({c for t in texts for c in t})
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    t.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = TEMPLATE
    return tok


def conversations(canaries) -> list[Example]:
    """Each canary answered in 3 wordings of one question (customer k's contact), plus filler turns."""
    out: list[Example] = []
    for k, c in enumerate(canaries):
        asks = (f"contact for customer {k}?", f"customer {k} contact please", f"how to reach customer {k}")
        for j, q in enumerate(asks):
            out.append(Example(f"c{k}-{j}", [{"role": "user", "content": q}], f"customer {k}: {c.value}", len(out)))
    for j, (q, a) in enumerate(FILLER):
        out.append(Example(f"f{j}", [{"role": "user", "content": q}], a, len(out)))
    return out


def anonymized(examples: list[Example]) -> list[Example]:
    """Both sides through the clean stage's engine and settings (params.py defaults = params.yaml's)."""
    texts = [e.history[0]["content"] for e in examples] + [e.response for e in examples]
    out = fast.clean_anonymizer(CleanParams(), n_process=1)(texts)
    n = len(examples)
    return [Example(e.conversation_id, [{"role": "user", "content": out[i].text}], out[n + i].text, e.source_row)
            for i, e in enumerate(examples)]


def train(examples: list[Example], tok) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    s = SFTSettings(method="full", max_length=128, epochs=60, batch_size=8, lr=3e-3, warmup_ratio=0.0,
                    schedule="constant", threads=1, device="cpu", precision="fp32")
    return fit_sft(model, tok, examples, [], s, seed=0, progress=False).model.eval()


def prompt(tok, k: int) -> list[int]:
    return tok.apply_chat_template([{"role": "user", "content": f"contact for customer {k}?"}],
                                   add_generation_prompt=True, tokenize=True, return_dict=False)


@torch.no_grad()
def value_nll(model, tok, k: int, value: str) -> float:
    """Negative log-likelihood of `value` as the answer to customer k's question."""
    head = prompt(tok, k) + tok(f"customer {k}: ", add_special_tokens=False)["input_ids"]
    tail = tok(value, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    pos = torch.arange(len(head) - 1, len(head) + len(tail) - 1)
    return float(-logp[pos, ids[0, len(head):]].sum())


def ranks(model, tok, canaries, decoys) -> list[int]:
    """Per canary: how many same-kind decoys the model finds likelier (0 = the canary is its favourite)."""
    out = []
    for k, c in enumerate(canaries):
        mine = value_nll(model, tok, k, c.value)
        out.append(sum(value_nll(model, tok, k, d.value) < mine for d in decoys if d.kind == c.kind))
    return out


@pytest.fixture(scope="module")
def setting():
    canaries = make_canaries(N_CANARIES, seed=11, kinds=KINDS)
    decoys = make_canaries(N_DECOYS, seed=12, kinds=KINDS)
    raw = conversations(canaries)
    anon = anonymized(raw)
    texts = [m["content"] for e in raw + anon for m in e.history] + [e.response for e in raw + anon]
    tok = char_tokenizer(texts + [d.value for d in decoys])
    return canaries, decoys, raw, anon, tok


def test_anonymization_removes_every_canary_from_the_training_copy(setting):
    canaries, _, raw, anon, _ = setting
    assert len(find_canaries([e.response for e in raw], canaries)) == N_CANARIES
    assert find_canaries([e.response for e in anon] + [e.history[0]["content"] for e in anon], canaries) == {}


def test_raw_training_memorizes_canaries_anonymized_training_does_not(setting):
    canaries, decoys, raw, anon, tok = setting
    with torch.random.fork_rng():
        results = {}
        for name, data in (("raw", raw), ("anonymized", anon)):
            model = train(data, tok)
            outs = greedy_generate(model, tok, [prompt(tok, k) for k in range(N_CANARIES)], max_new_tokens=48)
            results[name] = {"generated": len(find_canaries(outs, canaries)),
                             "ranks": ranks(model, tok, canaries, decoys)}
    print("canary memorization:", results)
    per_kind = N_DECOYS // len(KINDS)
    # the control: trained on the raw copy, the model reproduces its secrets and prefers them to decoys
    assert results["raw"]["generated"] >= N_CANARIES - 1 and max(results["raw"]["ranks"]) == 0
    # anonymized: never generated, and ranked like any unseen value (not systematically first)
    assert results["anonymized"]["generated"] == 0
    assert sum(r == 0 for r in results["anonymized"]["ranks"]) <= 1
    assert sum(results["anonymized"]["ranks"]) >= N_CANARIES * per_kind // 4
