"""ROUGE-1/2/L (rouge-score), corpus BLEU and chrF (sacrebleu) of generated texts against references.

A local `evaluate` metric module (loads offline: `evaluate.load("<this folder>")`), a thin wrapper
that calls the reference implementations directly, so the numbers equal theirs:
  - ROUGE: `rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=...)`,
    F-measure averaged over examples (x 100);
  - BLEU: `sacrebleu.corpus_bleu(predictions, [references])` (13a tokenizer, 0-100);
  - chrF: `sacrebleu.corpus_chrf(predictions, [references])` (chrF2, 0-100).
"""

import datasets
import evaluate
import sacrebleu
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-1/2/L, BLEU and chrF of predictions against one reference each."
_KWARGS = """
Args:
    predictions (list[str]): generated texts.
    references (list[str]): one reference text per prediction.
    use_stemmer (bool): Porter stemming in ROUGE (default False).
Returns:
    rouge1, rouge2, rougeL (mean F-measure x 100), bleu, chrf (corpus scores, 0-100), n.
"""


class GenerationScores(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, use_stemmer=False):
        if not predictions:
            raise ValueError("no predictions")
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
        sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        for p, r in zip(predictions, references):
            s = scorer.score(r, p)  # score(target, prediction)
            for k in sums:
                sums[k] += s[k].fmeasure
        out = {k: 100.0 * v / len(predictions) for k, v in sums.items()}
        out["bleu"] = sacrebleu.corpus_bleu(predictions, [references]).score
        out["chrf"] = sacrebleu.corpus_chrf(predictions, [references]).score
        out["n"] = len(predictions)
        return out
