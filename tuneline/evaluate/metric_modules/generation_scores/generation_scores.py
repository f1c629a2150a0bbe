"""ROUGE-1/2/L (rouge-score), corpus BLEU and chrF (sacrebleu) of generated texts against references.

A local `evaluate` metric module (loads offline: `evaluate.load("<this folder>")`), a thin wrapper
that calls the reference implementations directly, so the numbers equal theirs:
  - ROUGE: `rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=...)`,
    F-measure averaged over examples (x 100);
  - BLEU: `sacrebleu.corpus_bleu(predictions, [references])` (13a tokenizer, 0-100);
  - chrF: `sacrebleu.corpus_chrf(predictions, [references])` (chrF2, 0-100).
Plain functions for bootstrap resamples: `sentence_stats` (per-example ROUGE F-measures and
sacrebleu's per-sentence sufficient statistics, computed once) and `scores_from_stats(stats, rows)`
(the module's result on a resample of the rows: corpus BLEU/chrF from the summed statistics, which
is how sacrebleu computes the corpus score, so `rows = all` gives the point estimate exactly).
"""

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

_DESCRIPTION = "ROUGE-1/2/L, BLEU and chrF of predictions against one reference each."
_KWARGS = """
Args:
    predictions (list[str]): generated texts.
    references (list[str]): one reference text per prediction.
    use_stemmer (bool): Porter stemming in ROUGE (default False).
Returns:
    rouge1, rouge2, rougeL (mean F-measure x 100), bleu, chrf (corpus scores, 0-100), n.
"""


ROUGE = ("rouge1", "rouge2", "rougeL")


def sentence_stats(predictions, references, use_stemmer=False):
    """{rouge1, rouge2, rougeL: [n] F-measures, bleu: [n, 10], chrf: [n, 18] sacrebleu statistics}."""
    if not predictions:
        raise ValueError("no predictions")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=use_stemmer)
    per = [scorer.score(r, p) for p, r in zip(predictions, references)]  # score(target, prediction)
    out = {k: np.array([s[k].fmeasure for s in per], dtype=np.float64) for k in ROUGE}
    out["bleu"] = np.array(BLEU()._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.float64)
    out["chrf"] = np.array(CHRF()._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.float64)
    return out


def scores_from_stats(stats, rows=None):
    """rouge1/2/L (mean F x 100), bleu, chrf (corpus, 0-100) and n over `rows` (default: all, in order)."""
    idx = np.arange(len(stats["rouge1"])) if rows is None else np.asarray(rows)
    out = {k: 100.0 * float(stats[k][idx].mean()) for k in ROUGE}
    out["bleu"] = BLEU()._compute_score_from_stats(stats["bleu"][idx].sum(0).tolist()).score
    out["chrf"] = CHRF()._compute_score_from_stats(stats["chrf"][idx].sum(0).tolist()).score
    out["n"] = len(idx)
    return out


class GenerationScores(evaluate.Metric):
    """evaluate.Metric wrapper; `.sentence_stats(...)` and `.scores_from_stats(...)` are plain functions."""

    sentence_stats = staticmethod(sentence_stats)
    scores_from_stats = staticmethod(scores_from_stats)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        return scores_from_stats(sentence_stats(predictions, references, use_stemmer))
