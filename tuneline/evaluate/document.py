"""A small document model for reports, rendered to one self-contained HTML page and to Markdown.

A report is a list of `Section`s holding blocks: `Paragraph`, `Callout` (good/bad/warn),
`Table` (rows may be marked good/bad/warn) and `Figure` (PNG bytes). `render_html` embeds
every figure as a base64 data URI and the stylesheet inline (templates/report.css into
templates/report.html), and sets a Content-Security-Policy that forbids loading anything from
outside the page, so it opens offline and requests nothing. `render_markdown` writes the same
content as GitHub-flavoured Markdown with figures referenced as files (`write_figures`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Literal

from tuneline.data.records import write_atomic

Tone = Literal["good", "bad", "warn"]
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class Paragraph:
    text: str
    note: bool = False
    """Rendered smaller and grey (an explanation rather than a finding)."""


@dataclass
class Callout:
    text: str
    tone: Tone = "warn"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[object]]
    caption: str = ""
    tones: list[Tone | None] = field(default_factory=list)
    """Per row: highlight good/bad/warn, or None."""
    text_columns: tuple[int, ...] = ()
    """Column indexes holding free text (wrapped, monospace)."""


@dataclass
class Figure:
    name: str
    """File name stem for the Markdown copy (`<name>.png`); unique within a report."""
    png: bytes
    caption: str = ""


Block = Paragraph | Callout | Table | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def fmt(value: object, digits: int = 4) -> str:
    """Numbers for tables: ints with thousands separators, floats with `digits` decimals (fewer from 10 up),
    None as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:  # sizes, throughputs: fewer decimals
            digits = 1
        elif abs(value) >= 10:
            digits = 2
        return f"{value:,.{digits}f}"
    return str(value)


def _is_num(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        or bool(isinstance(value, str) and re.fullmatch(r"[-+]?[\d,]*\.?\d+%?", value))
    )


# --------------------------------------------------------------------------- HTML
def _html_block(b: Block) -> str:
    e = html.escape
    if isinstance(b, Paragraph):
        return f'<p class="{"note" if b.note else ""}">{e(b.text)}</p>'
    if isinstance(b, Callout):
        return f'<div class="callout {b.tone}">{e(b.text)}</div>'
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        return (
            f'<figure id="fig-{e(b.name)}"><img alt="{e(b.caption or b.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(b.caption)}</figcaption></figure>"
        )
    if isinstance(b, Table):
        head = "".join(f"<th>{e(str(c))}</th>" for c in b.columns)
        body = []
        for i, row in enumerate(b.rows):
            tone = b.tones[i] if i < len(b.tones) else None
            cells = []
            for j, v in enumerate(row):
                cls = "text" if j in b.text_columns else ("num" if _is_num(v) else "")
                cells.append(f'<td class="{cls}">{e(fmt(v))}</td>' if cls else f"<td>{e(fmt(v))}</td>")
            body.append(
                f'<tr class="{tone}">' + "".join(cells) + "</tr>" if tone else "<tr>" + "".join(cells) + "</tr>"
            )
        caption = f'<p class="caption">{e(b.caption)}</p>' if b.caption else ""
        return (
            f'{caption}<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(title: str, sections: list[Section], subtitle: str = "") -> str:
    """One self-contained page: inline CSS, figures as data URIs, no external references."""
    page = Template((TEMPLATES / "report.html").read_text(encoding="utf-8"))
    nav = "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{html.escape(s.id)}">\n<h2>{html.escape(s.title)}</h2>\n'
        + "\n".join(_html_block(b) for b in s.blocks)
        + "\n</section>"
        for s in sections
    )
    return page.substitute(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        style=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        nav=nav,
        body=body,
    )


# --------------------------------------------------------------------------- Markdown
def _md_cell(v: object) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block, figure_dir: str) -> str:
    if isinstance(b, Paragraph):
        return f"_{b.text}_" if b.note else b.text
    if isinstance(b, Callout):
        mark = {"bad": "**REGRESSION / PROBLEM:**", "good": "**OK:**", "warn": "**Note:**"}[b.tone]
        return f"> {mark} {b.text}"
    if isinstance(b, Figure):
        return f"![{b.caption or b.name}]({figure_dir}/{b.name}.png)" + (f"\n\n_{b.caption}_" if b.caption else "")
    if isinstance(b, Table):
        lines = [f"_{b.caption}_", ""] if b.caption else []
        cols = list(b.columns) + (["flag"] if any(b.tones) else [])
        lines.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
        lines.append(
            "|"
            + "|".join("---:" if b.rows and _is_num(b.rows[0][i]) else "---" for i in range(len(b.columns)))
            + ("|---" if any(b.tones) else "")
            + "|"
        )
        for i, row in enumerate(b.rows):
            cells = [_md_cell(v) for v in row]
            if any(b.tones):
                tone = b.tones[i] if i < len(b.tones) else None
                cells.append({"bad": "**worse**", "good": "better", "warn": "check", None: ""}[tone])
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(title: str, sections: list[Section], subtitle: str = "", figure_dir: str = "figures") -> str:
    """The same report as Markdown; figures are linked as `<figure_dir>/<name>.png`."""
    out = [f"# {title}", ""]
    if subtitle:
        out += [subtitle, ""]
    out += ["Contents: " + " · ".join(f"[{s.title}](#{s.id})" for s in sections), ""]
    for s in sections:
        out += [f'<a id="{s.id}"></a>', f"## {s.title}", ""]
        for b in s.blocks:
            out += [_md_block(b, figure_dir), ""]
    return "\n".join(out).rstrip() + "\n"


def figures_of(sections: list[Section]) -> list[Figure]:
    return [b for s in sections for b in s.blocks if isinstance(b, Figure)]


def write_figures(sections: list[Section], directory: str | Path) -> list[Path]:
    """Write every figure as `<directory>/<name>.png` (atomic), for the Markdown report."""
    paths = []
    names = [f.name for f in figures_of(sections)]
    if len(names) != len(set(names)):
        raise ValueError(f"figure names must be unique: {names}")
    for f in figures_of(sections):
        paths.append(write_atomic(Path(directory) / f"{f.name}.png", lambda tmp, data=f.png: tmp.write_bytes(data)))
    return paths
