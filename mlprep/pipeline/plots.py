"""Matplotlib figures of a pipeline execution: the DAG coloured by step status, ROC and PR
curves, the confusion matrix and feature importances (from evaluation.json)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from mlprep.pipeline.definition import Definition

COLOURS = {"Succeeded": "#4caf50", "Failed": "#e53935", "Executing": "#fbc02d", "NotRun": "#bdbdbd"}


def dag(d: Definition, steps: dict[str, Any] | list[dict], ax: plt.Axes | None = None) -> plt.Axes:
    """Steps as boxes by dependency depth (columns); branches of a condition stacked; colour =
    status (grey: not run); cache hits marked."""
    if isinstance(steps, dict):
        steps = steps.get("PipelineExecutionSteps", [])
    status = {s["StepName"]: s for s in steps}
    depth: dict[str, int] = {}
    for name in d.order:
        ups = d.steps[name].upstream
        depth[name] = 1 + max((depth[u] for u in ups), default=-1)
    cols: dict[int, list[str]] = {}
    for name in d.order:
        cols.setdefault(depth[name], []).append(name)
    pos = {n: (c, -i + (len(ns) - 1) / 2) for c, ns in cols.items() for i, n in enumerate(ns)}
    ax = ax or plt.subplots(figsize=(2.3 * len(cols) + 1, 1.2 * max(len(v) for v in cols.values()) + 1.5))[1]
    boxes = {}
    for name, step in d.steps.items():
        x, y = pos[name]
        s = status.get(name, {})
        st = s.get("StepStatus", "NotRun")
        label = f"{name}\n{step.type}" + ("\n(cache hit)" if s.get("CacheHitResult") else "")
        boxes[name] = ax.text(x, y, label, ha="center", va="center", fontsize=7.5, zorder=3, bbox={
            "boxstyle": "round,pad=0.4", "fc": COLOURS.get(st, "#90caf9"), "ec": "#333", "alpha": 0.95})
    for name, step in d.steps.items():
        # a branch step fed by another step of its branch hangs off that one, not the condition
        in_branch = {u for u in step.upstream if d.steps[u].branch == step.branch and step.branch}
        for u in step.upstream:
            branch_edge = bool(step.branch) and step.branch[0] == u
            if branch_edge and in_branch:
                continue
            # from the right edge of the upstream box to the left edge of this one
            ax.annotate("", xy=(0, 0.5), xycoords=boxes[name], xytext=(1, 0.5), textcoords=boxes[u], zorder=2,
                        arrowprops={"arrowstyle": "->", "ls": "--" if branch_edge else "-", "color": "#555",
                                    "shrinkA": 4, "shrinkB": 4})
            if branch_edge:
                (ux, uy), (x, y) = pos[u], pos[name]
                ax.text((x + ux) / 2, (y + uy) / 2 + 0.1, "if" if step.branch[1] else "else", fontsize=7,
                        ha="center", color="#555")
    ax.set_xlim(-0.6, max(cols) + 0.6)
    ax.set_ylim(min(p[1] for p in pos.values()) - 0.8, max(p[1] for p in pos.values()) + 0.8)
    ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c) for c in COLOURS.values()]
    ax.legend(handles, list(COLOURS), loc="lower right", fontsize=7, ncol=4)
    return ax


def roc_pr(evaluation: dict, ax: Any = None, label: str = "model") -> Any:
    """ROC and precision-recall curves side by side; returns the two axes."""
    axes = ax if ax is not None else plt.subplots(1, 2, figsize=(10, 4))[1]
    m, c = evaluation["binary_classification_metrics"], evaluation["curves"]
    first = not axes[0].lines  # reference lines once, when several models share the axes
    axes[0].plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{label} (AUC {m['roc_auc']['value']:.3f})")
    if first:
        axes[0].plot([0, 1], [0, 1], ls=":", color="grey")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes[1].plot(c["pr"]["recall"], c["pr"]["precision"], label=f"{label} (AP {m['pr_auc']['value']:.3f})")
    base = m["positives"] / max(m["test_rows"], 1)
    if first:
        axes[1].axhline(base, ls=":", color="grey", label=f"base rate {base:.3f}")
    axes[1].set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for a in axes:
        a.legend(fontsize=8)
    return axes


def confusion(evaluation: dict, ax: plt.Axes | None = None) -> plt.Axes:
    m = evaluation["binary_classification_metrics"]
    cm = m["confusion_matrix"]
    ax = ax or plt.subplots(figsize=(3.6, 3.2))[1]
    ax.imshow(cm, cmap="Blues")
    for i in range(2):
        for j in range(2):
            dark = cm[i][j] > max(max(r) for r in cm) / 2
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=11, color="white" if dark else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["legit", "fraud"], yticklabels=["legit", "fraud"],
           xlabel="predicted", ylabel="actual", title=f"Confusion at p >= {m['threshold']}")
    return ax


def importances(evaluation: dict, top: int = 15, ax: plt.Axes | None = None) -> plt.Axes:
    imp = list(evaluation.get("feature_importance", {}).items())[:top][::-1]
    ax = ax or plt.subplots(figsize=(6, 0.3 * len(imp) + 1))[1]
    ax.barh([k for k, _ in imp], [v for _, v in imp], color="#5c6bc0")
    ax.set(xlabel="drop in test ROC AUC when shuffled", title="Permutation importance")
    return ax
