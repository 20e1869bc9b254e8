"""The self-contained HTML report: sections of text, tables and inline PNG figures.

The page embeds every figure as base64 PNG and uses no external CSS or scripts, so it reads
offline. Figures are also written next to it as PNG files.
"""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

__all__ = ["Section", "write_report", "figure_png"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #345;padding-bottom:.2em}
h2{margin-top:2em;color:#234}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#eef2f6}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.note{color:#555;font-size:.9em}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dl.summary dt{font-weight:600}
"""


@dataclass
class Section:
    """One part of the report."""

    title: str
    text: str = ""
    summary: dict = field(default_factory=dict)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, object]] = field(default_factory=list)  # (caption, Figure)


def figure_png(fig) -> bytes:
    """Render a matplotlib Figure (a plain ``matplotlib.figure.Figure``, no pyplot) to PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_report(out_dir: str | Path, sections: list[Section], *,
                 title: str = "deepscope report") -> Path:
    """Write ``index.html`` (self-contained) and one PNG per figure into ``out_dir``."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p class='note'>generated {stamp}</p>"]
    used: set[str] = set()
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            parts.extend(f"<p>{html.escape(p)}</p>" for p in sec.text.split("\n\n"))
        if sec.summary:
            parts.append("<dl class='summary'>" + "".join(
                f"<dt>{html.escape(str(k))}</dt><dd>{_fmt(v)}</dd>"
                for k, v in sec.summary.items()) + "</dl>")
        for caption, df in sec.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(df.to_html(index=False, float_format=lambda x: f"{x:.4g}",
                                    na_rep="", border=0))
        for caption, fig in sec.figures:
            png = figure_png(fig)
            name = _slug(f"{sec.title}-{caption}")
            while name in used:
                name += "-x"
            used.add(name)
            (out / "figures" / f"{name}.png").write_bytes(png)
            b64 = base64.b64encode(png).decode()
            parts.append(f"<figure><img alt='{html.escape(caption)}' "
                         f"src='data:image/png;base64,{b64}'><figcaption>"
                         f"{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
