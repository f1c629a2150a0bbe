"""The champion/challenger gate: may a freshly trained candidate replace the production model?

A pure function of scores, so every rule is tested without a model. Scores are metric dicts
({metric: value, "n": rows}) of each model on:
  test        the current test split, without rows the production model was trained on
              (a growing dataset reshuffles splits; a model is never judged on its own training rows)
  regression  the frozen regression set (test rows kept from earlier data at the first
              promotion), without rows the candidate was trained on: the forgetting check

Rules, in order (every failed rule is a reason; any reason rejects):
  changed             the candidate's weights differ from production's (sha256 of the folder)
  no production yet   promote if candidate test metric >= min_score (with >= min_eval_rows rows)
  evidence            both models scored on >= min_eval_rows comparable rows
  better              candidate test metric > production test metric + margin
  no forgetting       candidate regression metric >= production regression metric - max_regression
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from tuneline.params import GateParams


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    metric: str
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why the candidate was rejected (empty when promoted)."""
        return [c.detail for c in self.checks if not c.passed]

    @property
    def summary(self) -> str:
        if self.promote:
            return "promote: " + "; ".join(c.detail for c in self.checks)
        return "reject: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "metric": self.metric, "summary": self.summary, "reasons": self.reasons,
                "checks": [asdict(c) for c in self.checks]}


def _value(scores: dict | None, metric: str) -> float | None:
    if not scores:
        return None
    v = scores.get(metric)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def decide(candidate: dict, production: dict | None, p: GateParams) -> Decision:
    """candidate/production: {"test": scores, "regression": scores or None, "sha256": weights hash or None};
    production None = no production model yet."""
    m = p.metric
    checks: list[Check] = []
    cand_test = _value(candidate.get("test"), m)
    n_test = int((candidate.get("test") or {}).get("n", 0))
    if cand_test is None:
        return Decision(False, m, [Check("scored", False, f"candidate has no test {m} (no rows scored?)")])
    if production is not None and candidate.get("sha256") and candidate.get("sha256") == production.get("sha256"):
        return Decision(False, m, [Check("changed", False, "the candidate is the production model itself "
                                                           "(same weights): nothing new to promote")])

    if production is None:
        checks.append(Check("evidence", n_test >= p.min_eval_rows,
                            f"{n_test} test rows scored (need >= {p.min_eval_rows})"))
        checks.append(Check("first model", cand_test >= p.min_score,
                            f"no production model yet; candidate test {m} {cand_test:.4f} "
                            f"{'>=' if cand_test >= p.min_score else '<'} min_score {p.min_score}"))
        return Decision(all(c.passed for c in checks), m, checks)

    prod_test = _value(production.get("test"), m)
    n_prod = int((production.get("test") or {}).get("n", 0))
    n = min(n_test, n_prod)
    checks.append(Check("evidence", n >= p.min_eval_rows,
                        f"{n} comparable test rows (need >= {p.min_eval_rows})"))
    if prod_test is None:
        checks.append(Check("better", True, f"production has no test {m}; candidate {cand_test:.4f}"))
    else:
        delta = cand_test - prod_test
        better = delta > p.margin
        checks.append(Check("better", better,
                            f"test {m}: candidate {cand_test:.4f} vs production {prod_test:.4f} "
                            f"(delta {delta:+.4f}, needs > {p.margin:+.4f})"))

    cand_reg, prod_reg = _value(candidate.get("regression"), m), _value(production.get("regression"), m)
    if cand_reg is None or prod_reg is None:
        checks.append(Check("no forgetting", True,
                            "no regression set scored yet (it is frozen at the first promotion)"))
    else:
        n_reg = min(int(candidate["regression"].get("n", 0)), int(production["regression"].get("n", 0)))
        drop = prod_reg - cand_reg
        ok = drop <= p.max_regression
        checks.append(Check("regression evidence", n_reg >= p.min_eval_rows,
                            f"{n_reg} regression rows the candidate did not train on (need >= {p.min_eval_rows})"))
        checks.append(Check("no forgetting", ok,
                            f"regression {m}: candidate {cand_reg:.4f} vs production {prod_reg:.4f} "
                            f"(drop {drop:+.4f}, allowed <= {p.max_regression:.4f})"
                            + ("" if ok else ": the candidate forgets earlier data")))
    return Decision(all(c.passed for c in checks), m, checks)


def comparable_rows(test: pd.DataFrame, regression: pd.DataFrame | None, production_seen: set[str],
                    candidate_seen: set[str]) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The rows both models can be judged on fairly, and how many were left out.

    test: the current test split minus rows the production model trained on (the candidate never
    trained on its own test split). regression: the frozen set minus rows the candidate trained on.
    """
    seen_by_prod = test["id"].isin(production_seen)
    fair_test = test[~seen_by_prod].reset_index(drop=True)
    info = {"test_rows": int(len(test)), "test_rows_seen_by_production": int(seen_by_prod.sum()),
            "test_rows_compared": int(len(fair_test))}
    fair_reg = None
    if regression is not None:
        seen_by_cand = regression["id"].isin(candidate_seen)
        fair_reg = regression[~seen_by_cand].reset_index(drop=True)
        info.update({"regression_rows": int(len(regression)),
                     "regression_rows_seen_by_candidate": int(seen_by_cand.sum()),
                     "regression_rows_compared": int(len(fair_reg))})
    return fair_test, fair_reg, info
