"""Data validation with great-expectations: a suite built from params, a plain summary, an offline report.

`build_suite` turns `validate` params and the label set into a great-expectations suite of real
expectations, each tagged with a short check name in its `meta`:

  columns_present      the record schema's columns exist         expect_table_columns_to_match_set
  <column>_type        str / int / bool per column               expect_column_values_to_be_of_type (int:
                                                                 expect_column_values_to_be_in_type_list)
  <column>_not_null    no nulls in any schema column             expect_column_values_to_not_be_null
  text_not_blank       text has a non-whitespace character       expect_column_values_to_match_regex (\\S)
  text_length          min_chars <= len(text) <= max_chars       expect_column_value_lengths_to_be_between
  label_in_set         label in classification.labels            expect_column_values_to_be_in_set
  id_unique            ids are unique                            expect_column_values_to_be_unique
  min_rows_<label>     >= min_rows_per_class rows per label      expect_table_row_count_to_be_between
                                                                 with row_condition Column("label") == label
  no_<pattern>_left    no e-mail / phone / card pattern in text  expect_column_values_to_not_match_regex
                                                                 (tuneline.data.pii.leaks.LEAK_PATTERNS, the
                                                                 patterns clean's safety net replaces)

`validate_records` runs the suite on a DataFrame in an ephemeral context (nothing written to
disk) and `summarize` reduces `result.to_json_dict()` to a plain dict: per check its name,
expectation, column, success, unexpected count and up to `max_examples` offending row ids. The
summary never holds cell values (they may be personal data that survived cleaning): only ids,
counts, dtype names and column names. `render_html` draws it as one self-contained page (inline
CSS, no scripts, nothing fetched): great-expectations' own Data Docs load assets from CDNs.
"""

from __future__ import annotations

import html
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column

from tuneline.params import ValidateParams
from tuneline.data.pii.leaks import LEAK_PATTERNS

SCHEMA: dict[str, str] = {
    "id": "str",
    "text": "str",
    "label": "str",
    "source": "str",
    "row": "int",
    "pii_replaced": "bool",
    "pii_count": "int",
}
"""Columns of data/clean/records.parquet and their kind (see tuneline.records)."""

INT_DTYPES = ["int64", "int32"]
PATTERN_NAMES = {"email": "e-mail address", "phone": "phone number", "credit_card": "card number"}


def _check(name: str, description: str, expectation: type[gxe.Expectation], **kwargs: Any) -> gxe.Expectation:
    """An expectation tagged with our check name (meta.check) and a readable description."""
    meta = {"check": name, **kwargs.pop("meta", {})}
    return expectation(meta=meta, description=description, **kwargs)


def build_suite(p: ValidateParams, labels: list[str], name: str = "records") -> gx.ExpectationSuite:
    """The expectation suite for cleaned records, in report order."""
    checks: list[gxe.Expectation] = [
        _check("columns_present", f"columns {', '.join(SCHEMA)} exist",
               gxe.ExpectTableColumnsToMatchSet, column_set=list(SCHEMA), exact_match=False),
    ]
    for col, kind in SCHEMA.items():
        desc = f"{col} holds {kind} values"
        if kind == "int":
            checks.append(_check(f"{col}_type", desc, gxe.ExpectColumnValuesToBeInTypeList, column=col,
                                 type_list=INT_DTYPES))
        else:
            checks.append(_check(f"{col}_type", desc, gxe.ExpectColumnValuesToBeOfType, column=col, type_=kind))
    for col in SCHEMA:
        checks.append(_check(f"{col}_not_null", f"{col} is never null", gxe.ExpectColumnValuesToNotBeNull, column=col))
    checks += [
        _check("text_not_blank", "text is not empty or whitespace-only",
               gxe.ExpectColumnValuesToMatchRegex, column="text", regex=r"\S"),
        _check("text_length", f"text is {p.min_chars} to {p.max_chars} characters long",
               gxe.ExpectColumnValueLengthsToBeBetween, column="text", min_value=p.min_chars,
               max_value=p.max_chars),
        _check("label_in_set", f"label is one of {', '.join(labels)}",
               gxe.ExpectColumnValuesToBeInSet, column="label", value_set=list(labels)),
        _check("id_unique", "ids are unique", gxe.ExpectColumnValuesToBeUnique, column="id"),
    ]
    for label in labels:
        checks.append(_check(
            f"min_rows_{label}", f"at least {p.min_rows_per_class} rows with label {label}",
            gxe.ExpectTableRowCountToBeBetween, min_value=p.min_rows_per_class,
            row_condition=Column("label") == label, meta={"label": label},
        ))
    for kind in p.forbid_pii_patterns:
        checks.append(_check(f"no_{kind}_left", f"no {PATTERN_NAMES[kind]} pattern left in text",
                             gxe.ExpectColumnValuesToNotMatchRegex, column="text", regex=LEAK_PATTERNS[kind]))
    return gx.ExpectationSuite(name=name, expectations=checks)


def validate_records(df: pd.DataFrame, p: ValidateParams, labels: list[str]) -> dict[str, Any]:
    """Run the suite on `df` in an ephemeral great-expectations context; return `summarize`'s dict."""
    df = df.reset_index(drop=True)  # unexpected indices are then positions, mapped back to ids
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("records").add_dataframe_asset("records")
             .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(build_suite(p, labels))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="records", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": df},
                            result_format={"result_format": "SUMMARY", "partial_unexpected_count": p.max_examples})
    return summarize(result.to_json_dict(), df, p, labels)


def summarize(result: dict[str, Any], df: pd.DataFrame, p: ValidateParams, labels: list[str]) -> dict[str, Any]:
    """Plain, value-free summary of a suite validation result (`to_json_dict()`).

    `df` must be the validated frame with a RangeIndex (validate_records resets it).
    """
    order = {e.meta["check"]: i for i, e in enumerate(build_suite(p, labels).expectations)}
    checks = []
    for r in result["results"]:
        cfg = r["expectation_config"]
        meta = cfg.get("meta") or {}
        res = r.get("result") or {}
        column = cfg["kwargs"].get("column")
        check: dict[str, Any] = {
            "name": meta.get("check", cfg["type"]),
            "expectation": cfg["type"],
            "column": column,
            "description": cfg.get("description", ""),
            "success": bool(r["success"]),
            "unexpected_count": res.get("unexpected_count"),
            "example_ids": [],
        }
        error = _exception_message(r.get("exception_info"))
        if error is not None:
            if column is not None and column not in df.columns:
                error = f"column {column!r} is missing"
            check["error"] = error
        if "label" in meta:  # min rows per class: the observed count, and the rows that do exist
            check["observed"] = res.get("observed_value")
            if "label" in df.columns and check["observed"] is not None and not check["success"]:
                rows = df.index[df["label"] == meta["label"]][: p.max_examples]
                check["example_ids"] = [_row_ref(df, i) for i in rows]
        elif cfg["type"] == "expect_table_columns_to_match_set":
            check["observed"] = res.get("observed_value")
            missing = ((res.get("details") or {}).get("mismatched") or {}).get("missing")
            if missing:
                check["missing_columns"] = missing
        elif "observed_value" in res:  # dtype checks on typed columns: a dtype name, never a value
            check["observed"] = res["observed_value"]
        if not check["success"] and res.get("partial_unexpected_index_list"):
            refs = [_row_ref(df, i) for i in res["partial_unexpected_index_list"]]
            check["example_ids"] = list(dict.fromkeys(refs))[: p.max_examples]  # duplicate ids appear once
        checks.append(check)
    checks.sort(key=lambda c: order.get(c["name"], len(order)))
    failed = [c["name"] for c in checks if not c["success"]]
    label_counts = (df["label"].value_counts().to_dict() if "label" in df.columns else {})
    return {
        "success": bool(result["success"]) and not failed,
        "rows": len(df),
        "labels": {str(k): int(v) for k, v in sorted(label_counts.items(), key=lambda kv: str(kv[0]))},
        "expectations": {"evaluated": len(checks), "passed": len(checks) - len(failed), "failed": len(failed)},
        "failed": failed,
        "checks": checks,
        "great_expectations_version": gx.__version__,
    }


def _row_ref(df: pd.DataFrame, i: Any) -> str:
    """The id of row position `i`, or a position reference when the id itself is missing."""
    i = int(i)
    if "id" in df.columns and 0 <= i < len(df):
        rid = df["id"].iat[i]
        if rid is not None and not pd.isna(rid):
            return str(rid)
    return f"(no id, row {i})"


def _exception_message(info: Any) -> str | None:
    """great-expectations reports errors either flat or keyed by metric: first message, or None."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return (info.get("exception_message") or "raised an exception") if info["raised_exception"] else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception", True):
            return str(value.get("exception_message") or "raised an exception").splitlines()[0]
    return None


def failure_message(summary: dict[str, Any], report: str = "reports/validation.html") -> str:
    """Names each failed check, where, how many rows and example ids, and what to do."""
    failed = [c for c in summary["checks"] if not c["success"]]
    lines = [f"{len(failed)} of {summary['expectations']['evaluated']} expectations failed on "
             f"{summary['rows']} rows:"]
    for c in failed:
        lines.append("  - " + _describe_failure(c))
    lines.append(f"See {report}. Fix the data upstream (collect/clean params, or the source itself) "
                 "or, if the expectation is wrong, change the validate section of params.yaml; "
                 "then run dvc repro.")
    return "\n".join(lines)


def _describe_failure(c: dict[str, Any]) -> str:
    where = f" on column {c['column']!r}" if c.get("column") else ""
    text = f"{c['name']} ({c['expectation']}{where}): {c['description']}"
    if c.get("error"):
        text += f"; could not run: {c['error']}"
    elif c.get("missing_columns"):
        text += f"; missing columns {c['missing_columns']}"
    elif c.get("unexpected_count") is not None:
        n = c["unexpected_count"]
        text += f"; {n} offending row{'' if n == 1 else 's'}"
    elif "observed" in c:
        text += f"; observed {c['observed']}"
    if c.get("example_ids"):
        text += f"; example ids: {', '.join(c['example_ids'])}"
    return text


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:1.75rem 0 .5rem}
.muted{color:#59636e}.banner{padding:.75rem 1rem;border-radius:6px;font-weight:600;margin:1rem 0}
.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #d1d9e0;padding:.35rem .5rem;
text-align:left;vertical-align:top}
th{background:#f6f8fa}tr.fail td{background:#fff5f5}
.tag{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:.8rem;font-weight:600}
.tag.ok,.tag.bad{border:none}
code,.ids{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0}dt{font-weight:600}dd{margin:0}
ul{margin:.25rem 0 0 1.2rem;padding:0}
"""


def render_html(summary: dict[str, Any], source: str = "data/clean/records.parquet") -> str:
    """One self-contained HTML page: inline CSS, no scripts, no external resources."""
    e = html.escape
    ok = summary["success"]
    counts = summary["expectations"]
    banner = ("All expectations passed" if ok else
              f"{counts['failed']} of {counts['evaluated']} expectations failed: the pipeline stops here")
    labels = ", ".join(f"{e(k)}: {v}" for k, v in summary["labels"].items()) or "none"
    failed = [c for c in summary["checks"] if not c["success"]]
    rows = []
    for c in summary["checks"]:
        status = '<span class="tag ok">pass</span>' if c["success"] else '<span class="tag bad">FAIL</span>'
        unexpected = "" if c.get("unexpected_count") is None else str(c["unexpected_count"])
        notes = []
        if c.get("error"):
            notes.append(f"could not run: {e(c['error'])}")
        if c.get("missing_columns"):
            notes.append(f"missing columns: {e(', '.join(c['missing_columns']))}")
        if c.get("observed") is not None:
            obs = c["observed"]
            notes.append(f"observed: {e(', '.join(map(str, obs)) if isinstance(obs, list) else str(obs))}")
        rows.append(
            f'<tr class="{"pass" if c["success"] else "fail"}"><td>{status}</td><td><code>{e(c["name"])}</code></td>'
            f'<td>{e(c["description"])}</td><td><code>{e(c["expectation"])}</code></td>'
            f'<td>{e(c["column"] or "(table)")}</td><td>{unexpected}</td>'
            f'<td class="ids">{"<br>".join(e(i) for i in c["example_ids"])}</td><td>{"<br>".join(notes)}</td></tr>'
        )
    failed_list = "".join(f"<li>{e(_describe_failure(c))}</li>" for c in failed)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data validation: {"passed" if ok else "FAILED"}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Data validation</h1>
<p class="muted">{e(source)} checked with great-expectations {e(summary["great_expectations_version"])}</p>
<div class="banner {"ok" if ok else "bad"}">{e(banner)}</div>
<h2>Summary</h2>
<dl>
<dt>Rows</dt><dd>{summary["rows"]}</dd>
<dt>Rows per label</dt><dd>{labels}</dd>
<dt>Expectations</dt><dd>{counts["evaluated"]} evaluated, {counts["passed"]} passed, {counts["failed"]} failed</dd>
</dl>
{f"<h2>Failed expectations</h2><ul>{failed_list}</ul>" if failed else ""}
<h2>Expectations</h2>
<p class="muted">Example ids name offending rows in {e(source)}; cell values are never shown,
since text that failed a personal-data check may still hold personal data.</p>
<table>
<thead><tr><th>Result</th><th>Check</th><th>What is expected</th><th>Expectation</th><th>Column</th>
<th>Unexpected rows</th><th>Example ids</th><th>Notes</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""
