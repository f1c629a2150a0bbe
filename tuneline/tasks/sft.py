"""Supervised fine-tuning (SFT) of a causal LM on the shared training loop.

`fit_sft(model, tokenizer, train_examples, val_examples, settings, *, seed, checkpoint_dir)` is the
entry a stage calls: it tokenizes (history, response) examples with the model's chat template and
labels on the response tokens only (tuneline.tasks.generation.tokenize_example), optionally packs
short examples into rows without attention across them (generation.pack / collate_packed),
applies the fine-tuning method, and trains with tuneline.train.loop.train: its freezing and
layer-wise LR (tuneline.train.freezing), early stopping on the validation loss (token-weighted
NLL of the val responses; the best weights are restored), and atomic checkpoints with exact
resume after a kill. What is SFT-specific lives here: the data object the loop batches
(`SFTData`), the loss (`sft_loss`), the validation loss, the method table for a causal LM, and
saving for serving (`save_sft_model`: LoRA/IA3 merged with merge_and_unload into a plain model
folder; prompt/prefix/p-tuning/Houlsby as base + adapter).

Methods (`SFT_METHODS`, the same names as tuneline.params.Method):
  full      every weight trains
  lora      LoRA on every linear layer of the blocks (`target_modules="all-linear"`: q/k/v/o and
            gate/up/down; PEFT leaves the LM head out)
  ia3       IA3 on k/v projections and the feed-forward down projection
  prompt    prompt tuning (soft prompt prepended to the input embeddings)
  prefix    prefix tuning (trained key/value prefixes in every layer)
  p_tuning  P-tuning (an MLP prompt encoder)
  adapter   Houlsby bottleneck adapters after o_proj and down_proj (tuneline.train.adapters)
Packing needs the 4-D block-diagonal mask, which PEFT's prompt-learning methods (prompt, prefix,
p_tuning) cannot extend with their virtual tokens: those methods refuse `packing=True`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
from torch import nn

from tuneline.data.conversations import PROMPT_TOO_LONG, Example, Reject
from tuneline.tasks.generation import (IGNORE, PromptTooLong, TokenizedExample, causal_lm_loss, collate,
                                       collate_packed, pack, response_logits, response_nll_sum,
                                       tokenize_example)  # response_logits: re-exported
from tuneline.train import adapters
from tuneline.train.loop import Batch, LoopResult, LoopSettings, train
from tuneline.train.models import ADAPTER_DIR, HOULSBY_CONFIG, HOULSBY_WEIGHTS, MERGEABLE, META_FILE, save_finetuned

SFT_METHODS: tuple[str, ...] = ("full", "lora", "ia3", "prompt", "prefix", "p_tuning", "adapter")
PROMPT_LEARNING = ("prompt", "prefix", "p_tuning")
"""PEFT methods that add virtual tokens: no packing, not mergeable (served as base + adapter)."""


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    """PEFT's "all-linear": every nn.Linear in the blocks (not the LM head)."""


@dataclass(frozen=True)
class IA3Settings:
    target_modules: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])
    feedforward_modules: list[str] = field(default_factory=lambda: ["down_proj"])


@dataclass(frozen=True)
class VirtualTokenSettings:
    """prompt / prefix / p_tuning."""

    num_virtual_tokens: int = 16
    prompt_init_text: str | None = None
    """prompt: initialize the soft prompt from this text's embeddings (needs `tokenizer_dir`); None = random."""
    prefix_projection: bool = False
    """prefix: reparameterize the prefixes through an MLP."""
    encoder_hidden_size: int = 128
    """prefix (with projection) and p_tuning: hidden size of the prompt encoder."""


@dataclass(frozen=True)
class AdapterSettings:
    bottleneck: int = 32
    target_modules: str = r".*\.(o_proj|down_proj)"
    """Regex (full match) over nn.Linear names: the attention and feed-forward output projections."""
    activation: str = "silu"


@dataclass(frozen=True)
class SFTSettings(LoopSettings):
    """How to fine-tune a causal LM: the shared loop's settings (tuneline.train.loop.LoopSettings, with
    SFT defaults below) plus what is SFT's own. Early stopping always watches the validation loss."""

    batch_size: int = 8
    """Rows per micro-batch (packed rows when packing)."""
    lr: float = 2e-4
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    eval_every: int = 0
    """Validation loss every N steps; 0 = at each epoch's end (always at the last step)."""
    desc: str = "sft"
    method: str = "lora"
    """One of SFT_METHODS."""
    max_length: int = 256
    """Tokens per example (prompt + response; the response is truncated to fit) and per packed row."""
    max_prompt_tokens: int | None = None
    """Longer prompts are rejected with reason prompt_too_long (None: max_length - 1)."""
    packing: bool = False
    """Pack short examples into rows of max_length tokens (block-diagonal attention, positions restart)."""
    eval_batch_size: int = 16
    lora: LoraSettings = field(default_factory=LoraSettings)
    ia3: IA3Settings = field(default_factory=IA3Settings)
    virtual: VirtualTokenSettings = field(default_factory=VirtualTokenSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)


def loop_settings(s: SFTSettings) -> LoopSettings:
    """The shared loop's part of the settings (early stopping on the validation loss, no resampling)."""
    loop = {f.name: getattr(s, f.name) for f in fields(LoopSettings)}
    return LoopSettings(**{**loop, "early_stopping_metric": "loss", "resample": False, "desc": f"sft[{s.method}]"})


# --------------------------------------------------------------------------- methods
SFT_PEFT_TABLE: dict[str, Callable[[SFTSettings, Path | None], dict]] = {
    "lora": lambda s, d: {"peft_type": "LORA", "r": s.lora.r, "lora_alpha": s.lora.alpha,
                          "lora_dropout": s.lora.dropout, "target_modules": s.lora.target_modules, "bias": "none"},
    "ia3": lambda s, d: {"peft_type": "IA3", "target_modules": list(s.ia3.target_modules),
                         "feedforward_modules": list(s.ia3.feedforward_modules)},
    "prompt": lambda s, d: {
        "peft_type": "PROMPT_TUNING", "num_virtual_tokens": s.virtual.num_virtual_tokens,
        **({"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": s.virtual.prompt_init_text,
            "tokenizer_name_or_path": str(d)} if s.virtual.prompt_init_text else {"prompt_tuning_init": "RANDOM"})},
    "prefix": lambda s, d: {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": s.virtual.num_virtual_tokens,
                            "prefix_projection": s.virtual.prefix_projection,
                            "encoder_hidden_size": s.virtual.encoder_hidden_size},
    "p_tuning": lambda s, d: {"peft_type": "P_TUNING", "num_virtual_tokens": s.virtual.num_virtual_tokens,
                              "encoder_hidden_size": s.virtual.encoder_hidden_size},
}
"""Our defaults per PEFT method for a causal LM, ending in peft.get_peft_config (task CAUSAL_LM)."""


def check_settings(s: SFTSettings) -> None:
    if s.method not in SFT_METHODS:
        raise ValueError(f"sft method {s.method!r} is unknown; choose one of {list(SFT_METHODS)}")
    if s.packing and s.method in PROMPT_LEARNING:
        raise ValueError(f"sft method {s.method!r} adds virtual tokens and cannot use packing's block-diagonal "
                         "mask; set packing to false or use full, lora, ia3 or adapter")


def apply_sft_method(model: nn.Module, s: SFTSettings, tokenizer_dir: str | Path | None = None) -> nn.Module:
    """The model to train for `s.method`, with requires_grad on exactly the weights that train."""
    check_settings(s)
    if s.method == "full":
        model.requires_grad_(True)
        return model
    if s.method == "adapter":
        model.requires_grad_(False)
        adapters.add_adapters(model, s.adapter.bottleneck, s.adapter.target_modules, s.adapter.activation)
        for name in adapters.adapter_parameter_names(model):
            model.get_parameter(name).requires_grad_(True)
        model.tuneline_adapter = asdict(s.adapter)  # what save_sft_model writes to rebuild them
        return model
    if s.method == "prompt" and s.virtual.prompt_init_text and tokenizer_dir is None:
        raise ValueError("prompt tuning initialized from text needs tokenizer_dir (the base model folder)")
    config = peft.get_peft_config({"task_type": "CAUSAL_LM", **SFT_PEFT_TABLE[s.method](s, tokenizer_dir)})
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return peft.get_peft_model(model, config)


# --------------------------------------------------------------------------- data
@dataclass
class SFTData:
    """Tokenized examples as the shared loop batches them: one row per example, or packed rows.

    `batch(rows, multiple_of)` returns input_ids, attention_mask and labels (IGNORE outside the
    responses), right-padded; packed rows also carry position_ids and a 4-D block-diagonal mask."""

    rows: list[list[TokenizedExample]]
    pad_id: int
    packed: bool = False
    _lengths: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, examples: list[TokenizedExample], pad_id: int, packing: bool = False,
           max_length: int = 256) -> SFTData:
        rows = pack(examples, max_length) if packing else [[e] for e in examples]
        return cls(rows, pad_id, packing)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        """Real (unpadded) tokens per row."""
        if self._lengths is None:
            self._lengths = np.array([sum(len(e.input_ids) for e in r) for r in self.rows], dtype=np.int64)
        return self._lengths

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def response_tokens(self) -> int:
        return sum(sum(1 for x in e.labels if x != IGNORE) for r in self.rows for e in r)

    def batch(self, rows: Sequence[int], multiple_of: int = 1) -> dict[str, torch.Tensor]:
        if self.packed:
            return collate_packed([self.rows[i] for i in rows], self.pad_id, multiple=multiple_of)
        return collate([self.rows[i][0] for i in rows], self.pad_id, multiple=multiple_of)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for r in self.rows:
            for e in r:
                h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
                h.update(np.asarray(e.labels, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()


def tokenize_examples(tokenizer, examples: Sequence[Example], max_length: int,
                      max_prompt_tokens: int | None = None) -> tuple[list[TokenizedExample], list[Reject], list[int]]:
    """Chat-template tokenization with response-only labels: (tokenized, rejects, index in `examples`
    of each tokenized one); over-long prompts are rejected with reason prompt_too_long."""
    out, rejects, kept = [], [], []
    for i, e in enumerate(examples):
        try:
            out.append(tokenize_example(tokenizer, e.history, e.response, max_length, max_prompt_tokens,
                                        e.conversation_id))
            kept.append(i)
        except PromptTooLong as err:
            rejects.append(Reject(e.source_row, PROMPT_TOO_LONG, f"{e.conversation_id}: {err}"))
    return out, rejects, kept


# --------------------------------------------------------------------------- loss and validation
sft_loss = causal_lm_loss
"""The loop's loss: mean next-token NLL over the response tokens of the batch (tasks/generation.py)."""


@torch.no_grad()
def response_nll(model: nn.Module, data: SFTData, batch_size: int = 16,
                 device: torch.device | None = None) -> tuple[float, int]:
    """(summed NLL, token count) over every response token of `data`, batched by length, eval mode."""
    dev = device or next(model.parameters()).device
    order = np.argsort(data.lengths, kind="stable")
    was = model.training
    model.eval()
    try:
        return response_nll_sum(model, ({k: v.to(dev) for k, v in data.batch(order[s:s + batch_size], 8).items()}
                                        for s in range(0, len(order), batch_size)))
    finally:
        model.train(was)


def validation_metrics(model: nn.Module, data: SFTData, batch_size: int = 16) -> dict:
    """loss = token-weighted mean NLL of the responses; perplexity = exp(loss)."""
    total, count = response_nll(model, data, batch_size)
    loss = total / count if count else float("nan")
    return {"loss": round(loss, 6), "perplexity": round(float(np.exp(loss)), 4), "tokens": count}


# --------------------------------------------------------------------------- fit
@dataclass
class SFTResult:
    model: nn.Module
    """The trained model (PEFT-wrapped for PEFT methods), best validation weights, eval mode."""
    loop: LoopResult
    method: str
    trainable_params: int
    total_params: int
    train_rows: int
    """Rows the loop batches (packed rows when packing)."""
    train_examples: int
    train_tokens: int
    """Real tokens of the training rows (one pass)."""
    val_examples: int
    rejects: list[Reject]
    """Train and val examples whose prompt was over max_prompt_tokens (reason prompt_too_long)."""
    tokens_per_s: float
    """Real (unpadded) training tokens per second of forward/backward/step time in this session."""
    val: dict
    """Validation metrics of the restored weights (the best evaluation): loss, perplexity, tokens."""

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0

    def summary(self) -> dict:
        """JSON-ready numbers (no model)."""
        lr = self.loop
        return {"method": self.method, "trainable_params": self.trainable_params, "total_params": self.total_params,
                "trainable_pct": round(self.trainable_pct, 4), "train_examples": self.train_examples,
                "train_rows": self.train_rows, "train_tokens": self.train_tokens, "val_examples": self.val_examples,
                "rejected": len(self.rejects), "steps": lr.steps, "best_step": lr.best_step,
                "stopped_early": lr.stopped_early, "resumed_from_step": lr.resumed_from,
                "train_seconds": lr.train_seconds, "tokens_per_s": self.tokens_per_s,
                "samples_per_s": lr.samples_per_s, "peak_memory_mb": lr.peak_memory_mb, "device": lr.device,
                "precision": lr.precision, "val": self.val}


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total); PEFT's frozen copies of wrapped modules count once in total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)
    return trainable, total


def fit_sft(model: nn.Module, tokenizer, train_examples: Sequence[Example], val_examples: Sequence[Example],
            settings: SFTSettings, *, seed: int, checkpoint_dir: str | Path | None = None,
            tokenizer_dir: str | Path | None = None, fingerprint: str = "", progress: bool = True) -> SFTResult:
    """Apply `settings.method` to `model` and train it on the shared loop; see the module doc.

    Seed torch before building `model` and before calling this (PEFT initializes its weights from
    the global RNG). With `checkpoint_dir` and `settings.checkpoint_every`, a killed run resumes
    from its last checkpoint and ends with the weights an uninterrupted run ends with; the
    checkpoint is only resumed when the settings, seed and tokenized data are the same
    (`fingerprint` adds whatever else the caller wants to key on, e.g. the base model's hash)."""
    check_settings(settings)
    train_tok, rejects, _ = tokenize_examples(tokenizer, train_examples, settings.max_length,
                                              settings.max_prompt_tokens)
    val_tok, val_rejects, _ = tokenize_examples(tokenizer, val_examples, settings.max_length,
                                                settings.max_prompt_tokens)
    if not train_tok:
        raise ValueError(f"no training example left: {len(rejects)} of {len(train_examples)} have prompts over "
                         f"{settings.max_prompt_tokens or settings.max_length - 1} tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    data = SFTData.of(train_tok, pad_id, settings.packing, settings.max_length)
    val = SFTData.of(val_tok, pad_id)
    key = hashlib.sha256(json.dumps({"settings": asdict(settings), "seed": seed, "train": data.fingerprint(),
                                     "val": val.fingerprint(), "extra": fingerprint}, sort_keys=True,
                                    default=str).encode()).hexdigest()
    model = apply_sft_method(model, settings, tokenizer_dir)
    seen = {"rows": 0, "tokens": 0}
    lengths = data.lengths

    def loss(m: nn.Module, batch: Batch) -> torch.Tensor:
        seen["rows"] += len(batch.rows)
        seen["tokens"] += int(lengths[batch.rows].sum())
        return sft_loss(m, batch)

    evaluate = (lambda m: validation_metrics(m, val, settings.eval_batch_size)) if len(val) else None
    result = train(model, data, loss, loop_settings(settings), seed=seed, evaluate=evaluate,
                   checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None, fingerprint=key,
                   progress=progress)
    step_seconds = seen["rows"] / result.samples_per_s if result.samples_per_s else 0.0
    trainable, total = count_params(model)
    return SFTResult(
        model=model, loop=result, method=settings.method, trainable_params=trainable, total_params=total,
        train_rows=len(data), train_examples=len(train_tok), train_tokens=data.tokens, val_examples=len(val_tok),
        rejects=rejects + val_rejects, tokens_per_s=round(seen["tokens"] / step_seconds, 2) if step_seconds else 0.0,
        val=result.best)


# --------------------------------------------------------------------------- serving
def merged_for_serving(model: nn.Module, method: str) -> nn.Module:
    """A plain transformers model for full/lora/ia3 (LoRA and IA3 merged with merge_and_unload:
    this consumes the PEFT wrapper); other methods have no merged form."""
    if method == "full":
        return model
    if method in MERGEABLE:
        return model.merge_and_unload()
    raise ValueError(f"sft method {method!r} cannot be merged into the base weights; save it as base + adapter")


def save_sft_model(model: nn.Module, tokenizer, out_dir: str | Path, method: str, meta: dict | None = None) -> Path:
    """Write a served model folder atomically with the classifier's writer (tuneline.train.models.save_finetuned).

    full, lora, ia3: a plain model folder (`AutoModelForCausalLM.from_pretrained(out_dir)`, no peft
    needed; LoRA/IA3 merged, and their adapter kept under adapter/). prompt, prefix, p_tuning:
    the PEFT adapter under adapter/ (apply it to the base model, `load_sft_model`). adapter: our
    Houlsby weights under adapter/. `tuneline.json` records method, merged and `meta`."""
    extra = {"adapter": model.tuneline_adapter} if method == "adapter" else {}
    return save_finetuned(model, tokenizer, out_dir, {**(meta or {}), **extra, "method": method})


def load_sft_model(path: str | Path, base_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) from a folder written by save_sft_model; unmerged methods
    need the base model folder `base_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)  # nosec B615 # a local folder written by save_sft_model
    if meta["merged"]:
        merged = AutoModelForCausalLM.from_pretrained(path)  # nosec B615 # a local folder
        return merged.eval(), tokenizer
    if base_dir is None:
        raise ValueError(f"{path}: method {meta['method']!r} is saved as an adapter; pass the base model folder")
    model = AutoModelForCausalLM.from_pretrained(base_dir)  # nosec B615 # the local base model folder
    if meta["method"] == "adapter":
        from safetensors.torch import load_file

        cfg = json.loads((path / ADAPTER_DIR / HOULSBY_CONFIG).read_text())
        adapters.add_adapters(model, cfg["bottleneck"], cfg["target_modules"], cfg["activation"])
        model.load_state_dict(load_file(path / ADAPTER_DIR / HOULSBY_WEIGHTS), strict=False)
        return model.eval(), tokenizer
    model = peft.PeftModel.from_pretrained(model, path / ADAPTER_DIR)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- generation evaluation
@dataclass(frozen=True)
class GenerationEvalSettings:
    """How to score a causal LM on a split (tuneline.evaluate.generation_eval)."""

    max_length: int = 256
    """Prompt + reference tokens for perplexity and calibration (as in training)."""
    max_prompt_tokens: int | None = None
    max_new_tokens: int = 128
    batch_size: int = 16
    """Generation batch (left-padded)."""
    score_batch_size: int = 8
    """Forward batch for perplexity/calibration (full-vocabulary logits: batch x length x vocab floats)."""
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    n_bins: int = 15
    use_stemmer: bool = False
    seed: int = 0
    samples: int = 5
    """Examples (prompt, reference, prediction) kept in the result for the report."""


@dataclass
class GenerationEval:
    metrics: dict
    """Text metrics (+ ci), perplexity, calibration {temperature, before, after, ...}, n, rejected."""
    predictions: list[str]
    """One per scored test example, in order (examples whose prompt was too long are left out)."""
    samples: list[dict]


def prompt_ids(e: TokenizedExample) -> list[int]:
    """The chat template's generation prompt of a tokenized example (its tokens before the first label)."""
    n = next((i for i, y in enumerate(e.labels) if y != IGNORE), len(e.labels))
    return e.input_ids[:n]


def _score_batches(data: SFTData, batch_size: int):
    order = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield data.batch(order[start:start + batch_size], 8)


def evaluate_generation(model: nn.Module, tokenizer, test_examples: Sequence[Example],
                        val_examples: Sequence[Example], s: GenerationEvalSettings = GenerationEvalSettings()
                        ) -> GenerationEval:
    """Score `model` on the test examples: greedy responses against the references (ROUGE-1/2/L,
    BLEU, chrF, distinct-n, length, bootstrap CIs), perplexity of the references, and token-level
    calibration of the reference tokens before/after a temperature fitted on the val examples.
    Score the base model with the same call to show what fine-tuning changed."""
    from tuneline.evaluate import generation_eval as ge

    test_tok, rejects, kept_index = tokenize_examples(tokenizer, test_examples, s.max_length, s.max_prompt_tokens)
    val_tok, val_rejects, _ = tokenize_examples(tokenizer, val_examples, s.max_length, s.max_prompt_tokens)
    if not test_tok:
        raise ValueError(f"no test example left to score ({len(rejects)} rejected: prompt too long)")
    kept = [test_examples[i] for i in kept_index]
    refs = [e.response for e in kept]
    preds = ge.greedy_generate(model, tokenizer, [prompt_ids(e) for e in test_tok], s.max_new_tokens, s.batch_size)
    metrics = ge.text_metrics(preds, refs, n_bootstrap=s.n_bootstrap, level=s.ci_level, seed=s.seed,
                              use_stemmer=s.use_stemmer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    test_stats = ge.token_stats(model, _score_batches(SFTData.of(test_tok, pad_id), s.score_batch_size))
    metrics["perplexity"] = ge.perplexity(test_stats)
    if s.n_bootstrap:
        metrics["ci"]["perplexity"] = ge.token_intervals(test_stats, n_bootstrap=s.n_bootstrap, level=s.ci_level,
                                                         seed=s.seed)["perplexity"]
    if val_tok:
        val_stats = ge.token_stats(model, _score_batches(SFTData.of(val_tok, pad_id), s.score_batch_size))
        metrics["calibration"] = ge.token_calibration(val_stats, test_stats, s.n_bins, n_bootstrap=s.n_bootstrap,
                                                      level=s.ci_level, seed=s.seed)
    metrics.update(n_scored=len(test_tok), rejected=len(rejects), val_rejected=len(val_rejects))
    samples = [{"prompt": e.history[-1]["content"] if e.history else "", "reference": e.response, "prediction": p}
               for e, p in zip(kept[:s.samples], preds[:s.samples])]
    return GenerationEval(metrics=metrics, predictions=preds, samples=samples)
