"""A small document model rendered twice: to Markdown (figures linked) and to one self-contained HTML
file (figures embedded as base64 PNG, inline CSS, no external resource).

Inline markup in text: `code` and **bold** only; everything else is escaped.

Example::

    doc = Doc("attnsim report")
    doc.heading("Claims"); doc.table(["finding", "verdict"], [["...", "holds"]])
    doc.figure("decay.png", png_bytes, "P(d) per layer")
    Path("report.md").write_text(doc.markdown()); Path("report.html").write_text(doc.html())
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.86em; }
th, td { border: 1px solid #c8c8c8; padding: 3px 7px; vertical-align: top; }
th { background: #efefef; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { background: #f1f1f1; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; margin-top: .4em; }
.holds { color: #0b5d1e; font-weight: bold; } .does-not-hold { color: #a11; font-weight: bold; }
.inconclusive { color: #555; font-weight: bold; }
"""
_NUMERIC = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?(\s*\[.*\])?$|^n/a$|^-$")  # right-aligned cells


def inline_html(text: str) -> str:
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def md_cell(text) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", text, lang))

    def table(self, header: list[str], rows: list[list], classes: dict[int, callable] | None = None) -> None:
        """classes: column -> function(cell) giving an HTML class for that cell (e.g. verdict colours)."""
        self.blocks.append(("table", list(header), [[str(c) for c in r] for r in rows], classes or {}))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.blocks.append(("figure", name, png, caption))

    # ------------------------------------------------------------------ Markdown
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "para":
                out += [block[1], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "code":
                out += [f"```{block[2]}", block[1].rstrip("\n"), "```", ""]
            elif kind == "table":
                _, header, rows, _ = block
                out.append("| " + " | ".join(md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "figure":
                _, name, _, caption = block
                out += [f"![{md_cell(caption.split('.')[0])}]({name})", "", f"*{caption}*", ""]
        return "\n".join(out)

    # ------------------------------------------------------------------ HTML
    def html(self) -> str:
        body = [f"<h1>{inline_html(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f"<h{block[1]}>{inline_html(block[2])}</h{block[1]}>")
            elif kind == "para":
                body.append(f"<p>{inline_html(block[1])}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
            elif kind == "table":
                _, header, rows, classes = block
                head = "".join(f"<th>{inline_html(h)}</th>" for h in header)
                lines = []
                for row in rows:
                    cells = []
                    for n, cell in enumerate(row):
                        names = [classes[n](cell)] if n in classes else []
                        if _NUMERIC.match(cell.strip()):
                            names.append("num")
                        attr = f' class="{" ".join(c for c in names if c)}"' if any(names) else ""
                        cells.append(f"<td{attr}>{inline_html(cell)}</td>")
                    lines.append("<tr>" + "".join(cells) + "</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>")
            elif kind == "figure":
                _, name, png, caption = block
                data = base64.b64encode(png).decode("ascii")
                body.append(
                    f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption.split(".")[0])}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{inline_html(caption)}</figcaption></figure>'
                )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
        )
