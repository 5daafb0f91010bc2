"""Matplotlib pictures of a deployment plan: the Step Functions state machine (states by
distance from StartAt, coloured by type; Catch edges dashed red, the polling loop curved) and
the cost per day by item."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

TYPE_COLOURS = {"Task": "#90caf9", "Wait": "#e0e0e0", "Choice": "#fff59d", "Pass": "#e0e0e0",
                "Succeed": "#a5d6a7", "Fail": "#ef9a9a", "Parallel": "#ce93d8", "Map": "#ce93d8"}


def _flow(state: dict) -> list[tuple[str, str]]:
    """(target, label) of a state's normal transitions (not Catch)."""
    out = []
    if "Next" in state:
        out.append((state["Next"], ""))
    for c in state.get("Choices", []):
        value = c.get("StringEquals", "") or " / ".join(x.get("StringEquals", "") for x in c.get("Or", []))
        out.append((c["Next"], value))
    if "Default" in state:
        out.append((state["Default"], "default"))
    return out


def state_machine(doc: dict[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """Draw an ASL document: one column per step from StartAt along normal transitions,
    states only reached by Catch in a row below."""
    states = doc["States"]
    depth, todo = {doc["StartAt"]: 0}, [doc["StartAt"]]
    while todo:
        name = todo.pop(0)
        for target, _ in _flow(states[name]):
            if target in states and target not in depth:
                depth[target] = depth[name] + 1
                todo.append(target)
    caught = [n for n in states if n not in depth]
    cols: dict[int, list[str]] = {}
    for n, d in depth.items():
        cols.setdefault(d, []).append(n)
    pos = {n: (c, -i) for c, ns in cols.items() for i, n in enumerate(ns)}
    low = min(p[1] for p in pos.values()) - 1.4
    for i, n in enumerate(caught):
        pos[n] = ((max(cols) * (i + 1)) / (len(caught) + 1), low)
    ax = ax or plt.subplots(figsize=(2.4 * (max(cols) + 1) + 1, 2.2 + 1.2 * (-low)))[1]
    boxes = {}
    for n, st in states.items():
        x, y = pos[n]
        extra = st.get("Resource", "").removeprefix("arn:aws:states:::").replace("aws-sdk:", "")
        if st["Type"] == "Wait":
            extra = f"{st.get('Seconds', '?')} s"
        timeout = f"\ntimeout {st['TimeoutSeconds']} s" if "TimeoutSeconds" in st and st["Type"] == "Task" else ""
        retry = f", retry x{st['Retry'][0].get('MaxAttempts', 3)}" if st.get("Retry") else ""
        boxes[n] = ax.text(x, y, f"{n}\n{st['Type']}" + (f": {extra}" if extra else "") + timeout + retry,
                           ha="center", va="center", fontsize=7, zorder=3,
                           bbox={"boxstyle": "round,pad=0.4", "fc": TYPE_COLOURS.get(st["Type"], "#fff"), "ec": "#333"})
    for n, st in states.items():
        for target, label in _flow(st):
            back = pos[target][0] <= pos[n][0]
            # a loop back (the polling) arcs over the boxes, from top to top
            ax.annotate("", xy=(0.5, 1) if back else (0, 0.5), xycoords=boxes[target],
                        xytext=(0.5, 1) if back else (1, 0.5), textcoords=boxes[n], zorder=2,
                        arrowprops={"arrowstyle": "->", "color": "#333", "shrinkA": 3, "shrinkB": 3,
                                    "connectionstyle": "arc3,rad=0.4" if back else "arc3"})
            if label:
                (x0, y0), (x1, y1) = pos[n], pos[target]
                ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.62 if back else 0.12), label, fontsize=6.5,
                        ha="center", color="#333")
        for c in st.get("Catch", []):
            ax.annotate("", xy=(0.5, 1), xycoords=boxes[c["Next"]], xytext=(0.5, 0), textcoords=boxes[n], zorder=1,
                        arrowprops={"arrowstyle": "->", "ls": "--", "color": "#c62828", "alpha": 0.6,
                                    "shrinkA": 3, "shrinkB": 3})
    ax.set_xlim(-0.7, max(p[0] for p in pos.values()) + 0.7)
    ax.set_ylim(low - 0.8, max(p[1] for p in pos.values()) + 1.0)
    ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=TYPE_COLOURS[t]) for t in ("Task", "Wait", "Choice", "Succeed", "Fail")]
    handles.append(plt.Line2D([0], [0], ls="--", color="#c62828"))
    ax.legend(handles, ["Task", "Wait", "Choice", "Succeed", "Fail", "Catch"], loc="lower left", fontsize=7, ncol=6)
    ax.set_title(doc.get("Comment", "state machine"), fontsize=9)
    return ax


def costs(plan: dict[str, Any], ax: plt.Axes | None = None) -> plt.Axes:
    """USD per day by item, from plan.json."""
    rows = sorted(plan["costs_per_day"], key=lambda r: r["usd_per_day"])
    ax = ax or plt.subplots(figsize=(7, 0.45 * len(rows) + 1))[1]
    ax.barh([r["item"] for r in rows], [r["usd_per_day"] for r in rows], color="#5c6bc0")
    for i, r in enumerate(rows):
        ax.text(r["usd_per_day"], i, f" {r['usd_per_day']:.2f} ({r['quantity']})", va="center", fontsize=7)
    ax.set_xlabel("USD per day")
    ax.set_title(f"{plan['total_usd_per_day']:.2f} USD per day (on-demand, the plan's price table)", fontsize=9)
    ax.margins(x=0.35)
    return ax
