"""Read a corpus into documents, whatever its form, and report bad documents without stopping.

A corpus is the alias `lee`, a folder or glob of `.txt` files (one document per file, or per line
with ``one_per_line``), `.jsonl` or `.parquet` files with a text column, or ``hf:NAME`` for a
Hugging Face dataset. Whole-run problems (nothing found, a missing column) raise UserError;
per-document problems (binary, invalid UTF-8, not JSON, empty, an unreadable file) are counted in a
`Problems` tally, reported at the end of a run and kept in the store's attributes.

Example::

    problems = Problems()
    for doc in read_documents("corpus/*.txt", problems=problems):
        print(doc.doc_id, doc.name, len(doc.text))
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from attnsim.errors import UserError

_SURROGATE = re.compile("[\ud800-\udfff]")
CORPUS_ALIASES = {"lee": ("gensim", "test/test_data/lee_background.cor")}
SUFFIXES = (".txt", ".jsonl", ".parquet", ".cor")


@dataclass
class Document:
    doc_id: int  # position of the document in the corpus, counting skipped ones
    name: str  # where it came from: path, path:line
    text: str


@dataclass
class Problems:
    """Per-document problems, counted by kind, with the first few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(where)

    def merge(self, other: "Problems") -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
            for where in other.examples.get(kind, []):
                if len(self.examples.setdefault(kind, [])) < 5:
                    self.examples[kind].append(where)

    def to_dict(self) -> dict:
        return {kind: {"count": n, "examples": self.examples.get(kind, [])} for kind, n in sorted(self.counts.items())}


def resolve_corpus(spec: str) -> list[Path] | str:
    """The files of a corpus spec, sorted; or the dataset name for ``hf:NAME``."""
    if spec.startswith("hf:"):
        return spec[3:]
    if spec in CORPUS_ALIASES:
        package, rel = CORPUS_ALIASES[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise UserError(f"corpus alias {spec!r} needs the package {package}; install it with `pip install {package}`")
        return [Path(found.submodule_search_locations[0]) / rel]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    elif any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"corpus {spec!r} not found; give an existing file, folder or glob, or `lee`")
    if not files:
        raise UserError(f"corpus {spec!r} holds no .txt, .jsonl or .parquet files; check the path or glob")
    return files


def read_documents(
    spec: str,
    *,
    text_column: str = "text",
    one_per_line: bool = False,
    hf_split: str = "train",
    problems: Problems | None = None,
) -> Iterator[Document]:
    """Yield every readable, non-empty document of the corpus in a fixed order."""
    problems = problems if problems is not None else Problems()
    source = resolve_corpus(spec)
    counter = iter(range(1 << 62))
    if isinstance(source, str):
        yield from _keep(_hf_texts(source, text_column, hf_split, problems), counter, problems)
        return
    for path in source:
        per_line = one_per_line or path.suffix == ".cor" or spec in CORPUS_ALIASES
        if path.suffix == ".jsonl":
            texts = _jsonl_texts(path, text_column, problems)
        elif path.suffix == ".parquet":
            texts = _parquet_texts(path, text_column, problems)
        else:
            texts = _txt_texts(path, per_line, problems)
        yield from _keep(_guard_file(path, texts, problems), counter, problems)


def _guard_file(path: Path, texts, problems: Problems):
    """A file that cannot be read (permissions, vanished, damaged) is one problem, not the run's end."""
    try:
        yield from texts
    except OSError as e:
        problems.add("unreadable_file", f"{path} ({type(e).__name__}: {e.strerror or e})")


def _keep(texts, counter, problems: Problems) -> Iterator[Document]:
    for name, text in texts:
        doc_id = next(counter)
        if text is None:  # already reported by the reader
            continue
        if not isinstance(text, str):
            problems.add("no_text", name)  # a number or a list in the text column
            continue
        if not text.strip():
            problems.add("empty", name)
            continue
        if _SURROGATE.search(text):
            # Lone surrogates (JSON "\ud800" escapes) are not text and crash the tokenizer.
            problems.add("invalid_utf8", name)
            text = _SURROGATE.sub("\ufffd", text)
        yield Document(doc_id, name, text)


def _decode(raw: bytes, where: str, problems: Problems) -> str | None:
    if b"\x00" in raw[:8192]:
        problems.add("binary", where)
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.add("invalid_utf8", where)  # kept, with U+FFFD for the bad bytes
        return raw.decode("utf-8", errors="replace")


def _txt_texts(path: Path, per_line: bool, problems: Problems):
    if not per_line:
        yield str(path), _decode(path.read_bytes(), str(path), problems)
        return
    with open(path, "rb") as f:
        number = 0
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            yield where, _decode(raw.rstrip(b"\r\n"), where, problems)
    if number == 0:
        problems.add("empty_file", str(path))


def _jsonl_texts(path: Path, column: str, problems: Problems):
    records = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            records += 1
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                problems.add("bad_json", where)
                yield where, None
                continue
            text = record.get(column) if isinstance(record, dict) else None
            if not isinstance(text, str):
                problems.add("no_text", where)
                yield where, None
                continue
            yield where, text
    if records == 0:
        problems.add("empty_file", str(path))


def _parquet_texts(path: Path, column: str, problems: Problems):
    import polars as pl

    try:
        schema = pl.read_parquet_schema(path)
        if column in schema:
            texts = pl.read_parquet(path, columns=[column])[column].to_list()
    except (pl.exceptions.PolarsError, OSError) as e:  # not Parquet, truncated, unreadable
        first = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
        problems.add("unreadable_file", f"{path} ({type(e).__name__}: {first})")
        return
    if column not in schema:
        # A missing column is the user's setting, not damage to one file: the whole run stops.
        raise UserError(f"parquet file {str(path)!r} has no column {column!r} (columns: {', '.join(schema)}); pass --text-column")
    if not texts:
        problems.add("empty_file", str(path))
    for number, text in enumerate(texts):
        yield f"{path}#{number}", _null_is_no_text(text, f"{path}#{number}", problems)


def _hf_texts(name: str, column: str, split: str, problems: Problems):
    if importlib.util.find_spec("datasets") is None:
        raise UserError("corpus hf:... needs the `datasets` package; install it with `pip install datasets`")
    import datasets

    try:
        data = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - any hub failure is the user's to fix (name, network)
        raise UserError(f"dataset {name!r} could not be loaded ({str(e).splitlines()[0][:160]}); check the name and network") from None
    for number, record in enumerate(data):
        if number == 0 and column not in record:
            raise UserError(f"dataset {name!r} has no column {column!r} (columns: {', '.join(record)}); pass --text-column")
        yield f"{name}#{number}", _null_is_no_text(record[column], f"{name}#{number}", problems)


def _null_is_no_text(text, where: str, problems: Problems):
    """A null cell is a document without text (None tells _keep it is already counted)."""
    if text is None:
        problems.add("no_text", where)
    return text
