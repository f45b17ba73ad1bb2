"""Plain table rendering (Markdown and escaped HTML) with one number format for every output."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    import pandas as pd


def fmt_value(value: object, digits: int = 4) -> str:
    """A cell as text: floats with ``digits`` significant digits, NaN/None as an em dash."""
    if value is None:
        return "—"
    try:
        import pandas as pd

        if value is pd.NA:
            return "—"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        value = float(value)  # type: ignore[arg-type]
        if not math.isfinite(value):
            return "—"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 10 ** digits else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


_HTML_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=[A-Za-z#])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def md_escape(text: object) -> str:
    """Text safe inside a Markdown table cell.

    Pipes, backslashes, backticks and ``*`` are escaped, newlines become spaces, and the HTML that
    GitHub would interpret (``<`` opening a tag, ``&`` opening an entity) is escaped, so a model
    named ``<script>`` stays text; ``<=`` and ``>=`` stay readable.
    """
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    s = _CONTROL.sub("", s.replace("\n", " ").replace("\r", " "))
    return _HTML_START.sub("&lt;", _ENTITY.sub("&amp;", s))


def md_code(text: object) -> str:
    """Text as a Markdown code span inside a table cell (literal on GitHub; pipes escaped)."""
    s = str(text).replace("`", "'").replace("\n", " ").replace("\r", " ").replace("|", "\\|")
    return f"`{s}`"


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table; every cell escaped."""
    data = df.reset_index() if index else df
    header = [md_escape(c) for c in data.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in data.itertuples(index=False):
        lines.append("| " + " | ".join(md_escape(fmt_value(v)) for v in row) + " |")
    return "\n".join(lines)


def html_table(df: pd.DataFrame, index: bool = False, titles: pd.DataFrame | None = None) -> Markup:
    """An HTML table with every header and cell escaped; ``titles`` (same shape) become tooltips."""
    data = df.reset_index() if index else df
    out = ['<table class="data"><thead><tr>']
    out += [f"<th>{escape(str(c))}</th>" for c in data.columns]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(data.itertuples(index=False)):
        out.append("<tr>")
        for j, v in enumerate(row):
            num = isinstance(v, float) or type(v).__name__.startswith(("float", "int"))
            cls = ' class="num"' if num and not isinstance(v, bool) else ""
            tip = ""
            if titles is not None:
                t = titles.iat[i, j - (1 if index else 0)] if (j > 0 or not index) else None
                if isinstance(t, str) and t:
                    tip = f' title="{escape(t)}"'
            out.append(f"<td{cls}{tip}>{escape(fmt_value(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return Markup("".join(out))


def html_document(title: str, body: str | Markup) -> str:
    """A minimal standalone HTML page (no scripts, no network) around an escaped title and a body."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;"
        "padding:2px 6px}td.num{text-align:right}</style></head>\n<body>\n"
        f"{body}\n</body></html>\n"
    )
