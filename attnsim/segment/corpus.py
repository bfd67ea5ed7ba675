"""A user's corpus with per-document segment information: sections (to evaluate) or counts (to segment).

Both read JSON lines (.jsonl) or Parquet (.parquet), one document per row:

- `read_structured`: ``column`` holds the document's sections, a list of texts; the text the
  segmenter sees is the sections joined by single spaces. ``attnsim segment --eval --corpus
  docs.jsonl --segments-column sections``.
- `read_counted`: ``column`` holds the number of segments wanted for that document (an integer, or
  a list whose length is taken); ``attnsim segment --corpus docs.jsonl --segments-column n``.

Example::

    docs = read_structured("docs.jsonl", "sections")   # [StructuredDoc(name, sections), ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from attnsim.errors import UserError
from attnsim.segment.devset import StructuredDoc


def _rows(path: str, column: str) -> list[dict]:
    p = Path(path)
    if not p.is_file() or p.suffix not in (".jsonl", ".parquet"):
        raise UserError(f"corpus {path!r} is not an existing .jsonl or .parquet file; --segments-column needs one")
    if p.suffix == ".parquet":
        import polars as pl

        rows = pl.read_parquet(p).to_dicts()
    else:
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{n} is not valid JSON; each line must be one document") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or column not in row:
            raise UserError(f"{path}: document {n} has no {column!r} field; give --segments-column")
    return rows


def read_structured(path: str, column: str) -> list[StructuredDoc]:
    """Documents whose ``column`` is a list of section texts (empty sections dropped)."""
    docs = []
    for n, row in enumerate(_rows(path, column), 1):
        sections = row[column]
        if not isinstance(sections, list) or not all(isinstance(s, str) for s in sections):
            raise UserError(f"{path}: document {n}'s {column!r} is not a list of section texts")
        kept = [" ".join(s.split()) for s in sections if s.strip()]
        if kept:
            docs.append(StructuredDoc(str(row.get("name", n)), kept))
    if not docs:
        raise UserError(f"{path!r} holds no document with a non-empty {column!r} list")
    return docs


def read_counted(path: str, text_column: str, column: str) -> list[tuple[str, str, int]]:
    """(name, text, segments wanted) of each document; a list in ``column`` counts its items."""
    out = []
    for n, row in enumerate(_rows(path, column), 1):
        text, count = row.get(text_column), row[column]
        if isinstance(count, list):
            count = len(count)
        if not isinstance(text, str):
            raise UserError(f"{path}: document {n} has no text in {text_column!r}; give --text-column")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(f"{path}: document {n}'s {column!r} is {count!r}, not a segment count of at least 1")
        out.append((str(row.get("name", n)), text, count))
    return out


def write_jsonl(docs: list[StructuredDoc], path: str) -> None:
    """Documents as JSON lines {"name", "sections"}: the form `read_structured` reads back."""
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"name": d.name, "sections": d.sections}, ensure_ascii=False) + "\n")
