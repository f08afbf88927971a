"""A small document model rendered two ways: Markdown (images as files beside it) and one self-contained HTML
file (images embedded as data URIs, no external requests).

Example:
    >>> doc = Document("Demo")
    >>> _ = doc.heading("Results").text("All good.").table(["a", "b"], [[1, 2.5]])
    >>> print(doc.markdown().splitlines()[6])
    | a |   b |
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from dtypelab._markdown import markdown_table

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d232a;line-height:1.45}
h1{border-bottom:2px solid #2b6cb0;padding-bottom:.2em}h2{margin-top:1.8em;color:#2b6cb0}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #cbd5e0;padding:.3em .6em}
th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even){background:#f7fafc}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #e2e8f0}figcaption{color:#4a5568;font-size:.9em}
.lead{background:#ebf8ff;border-left:4px solid #2b6cb0;padding:.6em 1em}
"""


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> Document:
        self.blocks.append(("heading", text))
        return self

    def text(self, text: str, lead: bool = False) -> Document:
        self.blocks.append(("text", text, lead))
        return self

    def table(self, header: list[str], rows: list[list[object]]) -> Document:
        self.blocks.append(("table", header, rows))
        return self

    def image(self, path: str | Path, caption: str) -> Document:
        self.blocks.append(("image", Path(path), caption))
        return self

    def markdown(self, relative_to: Path | None = None) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += [f"## {block[1]}", ""]
            elif kind == "text":
                out += [block[1], ""]
            elif kind == "table":
                out += [markdown_table(block[1], block[2]), ""]
            else:
                path = block[1].relative_to(relative_to) if relative_to else block[1]
                out += [f"![{block[2]}]({path.as_posix()})", "", f"*{block[2]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f"<h2>{html.escape(block[1])}</h2>")
            elif kind == "text":
                cls = ' class="lead"' if block[2] else ""
                body.append(f"<p{cls}>{html.escape(block[1])}</p>")
            elif kind == "table":
                body.append(_html_table(block[1], block[2]))
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def _html_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.6g}</td>'
        if isinstance(v, int):
            return f'<td class="num">{v}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
