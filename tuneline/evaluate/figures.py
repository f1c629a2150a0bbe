"""Figures for the calibrate, evaluate and report stages, as PNG bytes.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch, no
display). PNGs carry no timestamp or software tag, so the same numbers give the same bytes and
DVC does not see a change where there is none.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

PALETTE = {"before": "#c0504d", "after": "#2e75b6", "grid": "#dddddd", "ink": "#333333"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def reliability_diagram(panels: dict[str, list[dict]], n_bins: int, title: str = "") -> bytes:
    """One panel per curve (e.g. before/after): accuracy per confidence bin against the diagonal.

    `panels`: name -> rows with lower, upper, count, confidence, accuracy (tuneline.evaluate.metrics.reliability_bins).
    The bar spans its bin; the red part shows the gap to the bin's mean confidence.
    """
    fig = _figure(4.2 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    width = 1.0 / n_bins
    for ax, (name, rows) in zip(axes, panels.items()):
        total = sum(r["count"] for r in rows) or 1
        ece = sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows)
        lowers = [r["lower"] for r in rows]
        ax.bar(
            lowers,
            [r["accuracy"] for r in rows],
            width=width,
            align="edge",
            color=PALETTE["after"],
            edgecolor="white",
            label="accuracy",
        )
        ax.bar(
            lowers,
            [r["confidence"] - r["accuracy"] for r in rows],
            bottom=[r["accuracy"] for r in rows],
            width=width,
            align="edge",
            color=PALETTE["before"],
            alpha=0.35,
            edgecolor=PALETTE["before"],
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.2%}", fontsize=11)
        ax.grid(color=PALETTE["grid"], lw=0.5)
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    return _png(fig)


def confusion_matrix_plot(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> bytes:
    """Rows: true class, columns: predicted; colour = share of the true class, text = count."""
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(labels)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(max(3.5, 0.38 * k + 2.5), 13)
    fig = _figure(size + 0.8, size)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fontsize = 10 if k <= 6 else max(6, 10 - k // 5)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if share[i, j] > 0.6 else PALETTE["ink"],
                )
    ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    if title:
        ax.set_title(title)
    return _png(fig)


def roc_pr_curves(curves: dict[str, dict[str, list]], title: str = "", auc: dict[str, float] | None = None) -> bytes:
    """ROC and precision-recall side by side (`curves` from tuneline.evaluate.metrics.binary_curves)."""
    auc = auc or {}
    fig = _figure(8.4, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    roc, pr = curves["roc"], curves["pr"]
    ax1.plot(
        roc["fpr"],
        roc["tpr"],
        color=PALETTE["after"],
        label=f"ROC-AUC {auc['roc_auc']:.4f}" if "roc_auc" in auc else None,
    )
    ax1.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    ax2.step(
        pr["recall"],
        pr["precision"],
        where="pre",
        color=PALETTE["after"],
        label=f"PR-AUC {auc['pr_auc']:.4f}" if "pr_auc" in auc else None,
    )
    ax2.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    for ax in (ax1, ax2):
        ax.grid(color=PALETTE["grid"], lw=0.5)
        if auc:
            ax.legend(loc="lower right" if ax is ax1 else "lower left", fontsize=9)
    if title:
        fig.suptitle(title)
    return _png(fig)


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str = ""
) -> bytes:
    """Several named (x, y) lines on one axis, e.g. training and validation loss per step."""
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) <= 30 else None, ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(color=PALETTE["grid"], lw=0.5)
    if len(series) > 1:
        ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return _png(fig)


def tradeoff_chart(rows: Sequence[dict], y: str, xs: Sequence[str], title: str = "") -> bytes:
    """One scatter per x metric (e.g. size_mb, latency_p50_ms) against `y` (e.g. macro_f1), points named."""
    xs = [x for x in xs if any(isinstance(r.get(x), (int, float)) for r in rows)]
    fig = _figure(4.2 * max(len(xs), 1), 3.8)
    axes = fig.subplots(1, max(len(xs), 1), squeeze=False)[0]
    for ax, x in zip(axes, xs):
        pts = [
            (r[x], r[y], str(r.get("name", "")))
            for r in rows
            if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))
        ]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=PALETTE["after"])
        for px, py, name in pts:
            ax.annotate(name, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(xlabel=x, ylabel=y)
        ax.grid(color=PALETTE["grid"], lw=0.5)
    if title:
        fig.suptitle(title)
    return _png(fig)
