"""Evaluating a causal LM's responses: batched greedy decoding, text metrics with bootstrap CIs, and
token-level calibration before and after temperature scaling.

- `greedy_generate(model, tokenizer, prompt_ids, ...)`: prompts sorted by length, left-padded per
  batch, `model.generate(do_sample=False)`; the decoded continuations in input order.
- `text_metrics(predictions, references, ...)`: ROUGE-1/2/L, BLEU, chrF through our local
  `evaluate` module (metric_modules/generation_scores: rouge-score and sacrebleu, offline),
  distinct-1/2, response length; percentile bootstrap intervals over examples (`ci`), the corpus
  BLEU/chrF of each resample recomputed from sacrebleu's per-sentence statistics.
- `token_stats(model, batches)` / `token_calibration(val, test)`: for every response token (labels
  != IGNORE, the next-token prediction that produces it), whether the argmax is right and, at each
  temperature of a log-spaced grid (`TEMPERATURES`, 0.25..4, 25 points, 1.0 included), the
  confidence (max softmax probability) and the NLL of the right token, computed exactly over the
  full vocabulary in one pass (a 49k-token vocabulary is too large to keep the logits). T is fitted
  on val as the grid point of least mean NLL (grid steps of 12%: near the optimum the NLL is flat)
  and the test tokens are scored at T = 1 and at the fitted T: ECE (equal-width and adaptive bins,
  the calibration_error module's binning), NLL, mean confidence, top-1 token accuracy (T does not
  change the argmax). Perplexity = exp(NLL at T = 1). Intervals (`token_intervals`) resample
  examples, not tokens: the tokens of one response are not independent.
Nothing here tokenizes conversations: the task layer (tuneline.tasks.sft.evaluate_generation) does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuneline.evaluate.metrics import load_metric

IGNORE = -100
"""Label of a token outside the loss (prompt, padding): PyTorch's cross-entropy ignore_index."""
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 25))
TEXT_CI_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "mean_words")


# --------------------------------------------------------------------------- decoding
@torch.no_grad()
def greedy_generate(model: nn.Module, tokenizer, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int = 128,
                    batch_size: int = 16, device: torch.device | str | None = None) -> list[str]:
    """Greedy continuations of token-id prompts (e.g. a chat template's generation prompt), decoded
    without special tokens and stripped, in input order. Left padding, batches of similar length."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    out: list[str] = [""] * len(prompt_ids)
    was = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(prompt_ids[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(rows):
                n = len(prompt_ids[i])
                ids[r, width - n:] = torch.tensor(list(prompt_ids[i]), dtype=torch.long)
                mask[r, width - n:] = 1
            gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos,
                                 temperature=None, top_p=None, top_k=None)
            for r, i in enumerate(rows):
                out[i] = tokenizer.decode(gen[r, width:], skip_special_tokens=True).strip()
    finally:
        model.train(was)
    return out


# --------------------------------------------------------------------------- text metrics
def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whitespace tokens of all texts."""
    grams = Counter()
    for t in texts:
        toks = t.split()
        grams.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def response_lengths(texts: list[str]) -> dict[str, float]:
    """Mean and median length in whitespace tokens, and the share of empty responses."""
    lens = sorted(len(t.split()) for t in texts)
    if not lens:
        return {"mean_words": 0.0, "median_words": 0.0, "empty_share": 0.0}
    mid = len(lens) // 2
    median = lens[mid] if len(lens) % 2 else (lens[mid - 1] + lens[mid]) / 2
    return {"mean_words": sum(lens) / len(lens), "median_words": float(median),
            "empty_share": sum(1 for x in lens if x == 0) / len(lens)}


def text_metrics(predictions: list[str], references: list[str], *, n_bootstrap: int = 1000, level: float = 0.95,
                 seed: int = 0, use_stemmer: bool = False) -> dict:
    """rouge1/2/L, bleu, chrf (0-100), distinct_1/2, mean/median words, empty share, reference mean words,
    n, and `ci` = {metric: {low, high}} for TEXT_CI_METRICS with `ci_level` (n_bootstrap=0 skips it)."""
    module = load_metric("generation_scores")
    stats = module.sentence_stats(predictions, references, use_stemmer)
    out = module.scores_from_stats(stats)
    out.update(distinct_1=distinct_n(predictions, 1), distinct_2=distinct_n(predictions, 2),
               **response_lengths(predictions), reference_mean_words=response_lengths(references)["mean_words"])
    if n_bootstrap:
        words = np.array([len(p.split()) for p in predictions], dtype=np.float64)
        rng = np.random.default_rng(seed)
        n = len(predictions)
        samples: dict[str, list[float]] = {k: [] for k in TEXT_CI_METRICS}
        for _ in range(n_bootstrap):
            idx = rng.integers(0, n, n)
            r = module.scores_from_stats(stats, idx)
            for k in TEXT_CI_METRICS[:-1]:
                samples[k].append(r[k])
            samples["mean_words"].append(float(words[idx].mean()))
        q = ((1 - level) / 2, (1 + level) / 2)
        out["ci"] = {k: dict(zip(("low", "high"), map(float, np.quantile(v, q)))) for k, v in samples.items()}
        out["ci_level"] = level
    return out


# --------------------------------------------------------------------------- token calibration
@dataclass
class TokenStats:
    """Per response token: argmax right?, and confidence / NLL at each temperature of `temperatures`."""

    correct: np.ndarray
    """[n] bool."""
    confidence: np.ndarray
    """[n, G] max softmax probability of logits / T."""
    nll: np.ndarray
    """[n, G] -log softmax(logits / T)[right token]."""
    temperatures: np.ndarray
    example: np.ndarray | None = None
    """[n] which example (row of the batches, counted across batches) each token belongs to."""

    def __len__(self) -> int:
        return len(self.correct)

    def index_of(self, t: float) -> int:
        i = int(np.argmin(np.abs(np.log(self.temperatures) - np.log(t))))
        if not np.isclose(self.temperatures[i], t):
            raise ValueError(f"temperature {t} is not on the grid")
        return i


def _aligned_logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in x.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, use_cache=False).logits
    return logits[:, -x["input_ids"].shape[1]:]  # prompt tuning / p-tuning prepend virtual tokens


@torch.no_grad()
def token_stats(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                temperatures: np.ndarray = TEMPERATURES, chunk: int = 512) -> TokenStats:
    """TokenStats over every labelled token of `batches` (dicts with input_ids, attention_mask,
    labels; shifted here: position t predicts label t+1). Eval mode, on the model's device."""
    dev = next(model.parameters()).device
    temps = torch.tensor(np.asarray(temperatures), dtype=torch.float32, device=dev)
    correct, conf, nll, example = [], [], [], []
    offset = 0
    was = model.training
    model.eval()
    try:
        for b in batches:
            x = {k: v.to(dev) for k, v in b.items()}
            logits = _aligned_logits(model, x)[:, :-1]
            labels = x["labels"][:, 1:]
            keep = labels != IGNORE
            example.append((keep.nonzero()[:, 0] + offset).cpu().numpy())
            offset += labels.shape[0]
            z_all, y_all = logits[keep].float(), labels[keep]
            for s in range(0, len(y_all), chunk):
                z, y = z_all[s:s + chunk], y_all[s:s + chunk]
                z_max, arg = z.max(dim=1)
                z_y = z.gather(1, y[:, None])[:, 0]
                lse = torch.stack([torch.logsumexp(z / t, dim=1) for t in temps], dim=1)  # [m, G]
                correct.append((arg == y).cpu().numpy())
                conf.append(torch.exp(z_max[:, None] / temps - lse).cpu().numpy())
                nll.append((lse - z_y[:, None] / temps).cpu().numpy())
    finally:
        model.train(was)
    g = len(temperatures)
    return TokenStats(np.concatenate(correct) if correct else np.zeros(0, bool),
                      np.concatenate(conf) if conf else np.zeros((0, g)),
                      np.concatenate(nll) if nll else np.zeros((0, g)), np.asarray(temperatures),
                      np.concatenate(example) if example else np.zeros(0, np.int64))


def token_intervals(stats: TokenStats, temperatures: Sequence[float] = (), *, n_bootstrap: int = 1000,
                    level: float = 0.95, seed: int = 0, n_bins: int = 15) -> dict:
    """Percentile bootstrap over examples (the tokens of one response are resampled together, they are
    not independent): {"perplexity": {low, high}, t: {"ece": {low, high}, "nll": {low, high}} per t}."""
    module = load_metric("calibration_error")
    groups = [np.flatnonzero(stats.example == e) for e in np.unique(stats.example)]
    cols = {t: stats.index_of(t) for t in temperatures}
    one = stats.index_of(1.0)
    rng = np.random.default_rng(seed)
    samples: dict = {"perplexity": [], **{(t, m): [] for t in cols for m in ("ece", "nll")}}
    for _ in range(n_bootstrap):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        samples["perplexity"].append(float(np.exp(stats.nll[idx, one].mean())))
        for t, c in cols.items():
            samples[t, "ece"].append(module.confidence_calibration_error(stats.confidence[idx, c], stats.correct[idx],
                                                                         n_bins))
            samples[t, "nll"].append(float(stats.nll[idx, c].mean()))
    q = ((1 - level) / 2, (1 + level) / 2)
    bounds = {k: dict(zip(("low", "high"), map(float, np.quantile(v, q)))) for k, v in samples.items()}
    out: dict = {"perplexity": bounds["perplexity"]}
    for t in cols:
        out[t] = {m: bounds[t, m] for m in ("ece", "nll")}
    return out


def fit_token_temperature(val: TokenStats) -> tuple[float, bool]:
    """(T of least mean val NLL on the grid, whether it is the grid's edge)."""
    if not len(val):
        raise ValueError("no validation tokens to fit a temperature on")
    i = int(np.argmin(val.nll.mean(axis=0)))
    return float(val.temperatures[i]), i in (0, len(val.temperatures) - 1)


def token_scores(stats: TokenStats, t: float, n_bins: int = 15) -> dict:
    """ECE (equal-width, adaptive), NLL, mean confidence, token accuracy, n_tokens at temperature t."""
    module = load_metric("calibration_error")
    i = stats.index_of(t)
    conf, correct = stats.confidence[:, i], stats.correct
    return {"ece": module.confidence_calibration_error(conf, correct, n_bins),
            "ece_adaptive": module.confidence_calibration_error(conf, correct, n_bins, adaptive=True),
            "nll": float(stats.nll[:, i].mean()), "mean_confidence": float(conf.mean()),
            "token_accuracy": float(correct.mean()), "n_tokens": len(stats)}


def token_calibration(val: TokenStats, test: TokenStats, n_bins: int = 15, *, n_bootstrap: int = 0,
                      level: float = 0.95, seed: int = 0) -> dict:
    """Temperature fitted on val; test token scores before (T = 1) and after, the reliability bins,
    and with n_bootstrap > 0 a `ci` of ece and nll in each (token_intervals, over test examples)."""
    t, hit = fit_token_temperature(val)
    module = load_metric("calibration_error")
    before, after = token_scores(test, 1.0, n_bins), token_scores(test, t, n_bins)
    if n_bootstrap:
        ci = token_intervals(test, sorted({1.0, t}), n_bootstrap=n_bootstrap, level=level, seed=seed, n_bins=n_bins)
        before["ci"], after["ci"] = ci[1.0], ci[t]
    i1, it = test.index_of(1.0), test.index_of(t)
    return {"temperature": t, "temperature_at_bound": hit, "val_tokens": len(val),
            "val_nll_before": float(val.nll[:, val.index_of(1.0)].mean()),
            "val_nll_after": float(val.nll[:, val.index_of(t)].mean()),
            "before": before, "after": after,
            "bins_before": module.confidence_bins(test.confidence[:, i1], test.correct, n_bins),
            "bins_after": module.confidence_bins(test.confidence[:, it], test.correct, n_bins)}


def perplexity(stats: TokenStats) -> float:
    """exp(mean NLL at T = 1) over the tokens (token-weighted)."""
    return float(np.exp(stats.nll[:, stats.index_of(1.0)].mean())) if len(stats) else float("nan")
