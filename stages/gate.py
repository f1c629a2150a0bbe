"""Champion/challenger gate: should the model just trained replace the production model?

Reads: ${paths.models}/finetuned + calibrated (the candidate), data/splits/{train,test}.parquet,
       ${paths.models}/production.json (the production pointer as the snapshot stage saw it) and,
       through it, the production version folder and the frozen regression set in
       ${paths.registry} (both immutable once written, so the pointer's hash stands for them)
Writes: reports/metrics/gate.json: the decision (promote or reject, every check with its
        numbers), both models' scores on the current test split, on the frozen regression set
        (old data) and on the feedback rows of the test split (new data), and row counts
Params: classification, paths, gate      Run: dvc repro gate   (or: python -m stages.gate)

The stage only decides; promoting (copying the candidate into the registry and moving the
pointer) is the retraining flow's job (flows/retrain.py), after the whole pipeline succeeded.
Each model is judged only on rows it did not train on (see tuneline.deploy.gate.comparable_rows).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.errors import run_main
from tuneline.data.assets import tree_sha256
from tuneline.evaluate.scoring import score_texts
from tuneline.deploy.gate import comparable_rows, decide
from tuneline.logs import setup_logging
from tuneline.params import ClassificationParams, GateParams, Paths, load_params
from tuneline.tasks.labels import LabelSet
from tuneline.deploy.predictor import Predictor
from tuneline.data.records import read_json, read_parquet, write_json
from tuneline.deploy.registry import Registry

log = logging.getLogger("tuneline.deploy.gate")
FEEDBACK_SOURCE = "feedback"
GATE_METRICS = ("accuracy", "macro_f1", "ece", "nll")


def score(pred: Predictor, frame, labels: LabelSet, batch_size: int) -> dict | None:
    """Headline metrics of a model (calibrated probabilities) on a frame with text/label columns; None: no rows."""
    if frame is None or len(frame) == 0:
        return None
    labels.require(pred.labels, f"model {pred.version}", "a model trained on another label set cannot be compared")
    m = score_texts(pred.model, pred.tokenizer, frame["text"].tolist(), frame["label"].tolist(), labels.list,
                    pred.calibrator, max_length=pred.max_length, batch_size=batch_size).metrics
    return {"n": int(len(frame)), **{k: float(m[k]) for k in GATE_METRICS if k in m}}


def _scores(pred: Predictor, test, regression, labels: LabelSet, batch_size: int) -> dict:
    feedback = test[test["source"] == FEEDBACK_SOURCE] if "source" in test else test.iloc[:0]
    return {"test": score(pred, test, labels, batch_size),
            "regression": score(pred, regression, labels, batch_size),
            "feedback": score(pred, feedback, labels, batch_size)}


def run(p: GateParams, task: ClassificationParams, paths: Paths) -> dict:
    labels = LabelSet.of(task)
    models = Path(paths.models)
    pointer = read_json(models / "production.json")
    test = read_parquet(Path(paths.splits) / "test.parquet")
    train = read_parquet(Path(paths.splits) / "train.parquet")
    registry = Registry(paths.registry)

    candidate = Predictor.load(models, "candidate", cache_dir=paths.cache)
    candidate_sha = tree_sha256(models / "finetuned")
    candidate_seen = set(train["id"])
    production = None
    production_seen: set[str] = set()
    regression = None
    if pointer.get("version"):
        version = pointer["version"]
        production = Predictor.load(registry.version_dir(version), version, cache_dir=paths.cache)
        production_seen = registry.train_ids(version)
        if candidate.meta.get("init_from") == "production":
            candidate_seen |= production_seen  # it inherits everything production learned
        regression = registry.regression_set()

    fair_test, fair_reg, rows = comparable_rows(test, regression, production_seen, candidate_seen)
    cand_scores = {**_scores(candidate, fair_test, fair_reg, labels, p.batch_size), "sha256": candidate_sha}
    prod_scores = None
    if production is not None:
        prod_scores = {**_scores(production, fair_test, fair_reg, labels, p.batch_size),
                       "sha256": pointer.get("finetuned_sha256")}
    decision = decide(cand_scores, prod_scores, p)
    out = {
        "decision": decision.to_dict(),
        "candidate": {"calibrated": candidate.calibrated, "init_from": candidate.meta.get("init_from", "base"),
                      **cand_scores},
        "production": None if prod_scores is None else {"version": pointer["version"],
                                                       "calibrated": production.calibrated, **prod_scores},
        "rows": rows,
    }
    write_json(out, Path(paths.metrics) / "gate.json")
    log.info("gate: %s", decision.summary)
    return out


def main() -> None:
    setup_logging()
    params = load_params()
    run(params.gate, params.classification, params.paths)


if __name__ == "__main__":
    run_main(main)
