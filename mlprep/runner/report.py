"""``report.html``: one self-contained page for a run — the stages (status, time, notebook, the
error of a failed one), what they reported (``summary``), and the figures they kept
(``outputs.figure``) inlined as PNG."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from mlprep.masking import Masker

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}.succeeded{color:#2e7d32}.skipped{color:#1565c0}.failed,.interrupted{color:#c62828}.not_run,.not_selected{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:8px;overflow:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = ""
    for r in rows:
        cells = ""
        for c in cols:
            v = r.get(c, "")
            cls = f' class="{v}"' if c == "status" else ""
            cells += f"<td{cls}>{html.escape(str(v if v is not None else ''))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict | list):
        return f"<pre>{html.escape(json.dumps(v, indent=1, default=str)[:3000])}</pre>"
    return html.escape(str(v))


def write(folder: Path, summary: dict, results: list, masker: Masker) -> Path:
    parts = [f"<h1>mlprep run {html.escape(summary['run_id'])}: "
             f"<span class=\"{summary['status']}\">{html.escape(summary['status'])}</span></h1>"]
    rows = []
    for s in summary["stages"]:
        nb = s.get("notebook")
        rows.append({**s, "notebook": Path(nb).name if nb else "", "seconds": f"{s.get('seconds', 0):.1f}"})
    parts.append("<h2>Stages</h2>" + _table(rows, ["name", "status", "seconds", "attempts", "notebook", "error"]))
    facts = {k: v for k, v in summary.items() if k not in ("run_id", "status", "updated", "stages", "outputs")}
    if facts:
        parts.append("<h2>Results</h2><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{_value(v)}</td></tr>" for k, v in facts.items()) + "</table>")
    for r in results:
        figs = [Path(f) for f in r.outputs.get("figures", []) if Path(f).is_file()]
        if not figs:
            continue
        parts.append(f"<h2>{html.escape(r.name)}</h2>")
        for f in figs:
            data = base64.b64encode(f.read_bytes()).decode()
            title = f.stem.split("_", 1)[-1].replace("_", " ")
            parts.append(f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>mlprep run {html.escape(summary['run_id'])}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    out = folder / "report.html"
    out.write_text(masker.text(page), encoding="utf-8")
    return out
