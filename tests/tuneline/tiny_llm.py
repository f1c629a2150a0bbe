"""A tiny chat tokenizer (word level, ChatML-like template) and a tiny Llama built from a config:
no download, milliseconds. Used by the SFT tests (tests/tuneline/test_generation.py has its own copy)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tuneline.data.conversations import Example

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
CORPUS = ["hello how are you today", "i am fine thanks and you", "where is my order please",
          "your order ships tomorrow", "user assistant system", "cancel refund invoice help",
          "the parcel arrives on monday", "we are sorry for the delay", "track it with the link"]
PAIRS = [("where is my order please", "your order ships tomorrow"),
         ("cancel my order", "we are sorry your order is cancelled"),
         ("refund please", "your refund arrives on monday"),
         ("hello", "hello how are you today"),
         ("track my parcel", "track it with the link please"),
         ("invoice help", "the invoice is on the link"),
         ("i am fine thanks", "we are fine thanks and you"),
         ("where is the parcel", "the parcel arrives tomorrow sorry for the delay")]


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(CORPUS + [p for pair in PAIRS for p in pair], trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = TEMPLATE
    return fast


def tiny_llama(tok, seed: int = 0, attn: str = "sdpa", layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=False, attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


def toy_examples(n: int = 16, offset: int = 0) -> list[Example]:
    """n single-turn examples cycling through PAIRS."""
    out = []
    for i in range(n):
        q, a = PAIRS[(i + offset) % len(PAIRS)]
        out.append(Example(f"c{i + offset}", [{"role": "user", "content": q}], a, i + offset))
    return out
