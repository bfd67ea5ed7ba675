"""What `attnsim segment` does: read a text or a corpus, segment it, write text or JSON lines; or evaluate.

Example::

    attnsim segment notes.txt                          # segments as text on stdout
    attnsim segment --corpus lee --jsonl segments.jsonl
    attnsim segment --eval --samples 100               # Pk / WindowDiff table on the `lee` corpus
    attnsim segment --eval --corpus wiki:dev           # ... on real articles, sections as truth
    attnsim segment --eval --corpus docs.jsonl --segments-column sections
    attnsim segment --corpus docs.jsonl --segments-column n_sections --jsonl out.jsonl
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from attnsim.errors import UserError
from attnsim.segment.segmenter import SegmentConfig, Segmenter, heads_from_stats

DOCS_PER_BATCH = 64  # corpus mode: documents segmented per model call (bounds memory, streams output)


def parse_heads(spec: str | None) -> list[tuple[int, int]] | None:
    """'5:0,5:3' -> [(5, 0), (5, 3)]."""
    if not spec:
        return None
    try:
        return [(int(a), int(b)) for a, b in (item.split(":") for item in spec.split(",") if item.strip())]
    except ValueError:
        raise UserError(f"--heads {spec!r} is not a list of LAYER:HEAD pairs like 5:0,5:3") from None


def parse_layers(spec: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--layers {spec!r} is not a comma list of layer numbers like -1 or 4,5") from None


def make_config(*, layers: str, heads: str | None, head_stats: str | None, head_label: str, **rest) -> SegmentConfig:
    chosen = parse_heads(heads)
    if head_stats:
        if chosen:
            raise UserError("give --heads or --head-stats, not both")
        chosen = heads_from_stats(head_stats, head_label)
    return SegmentConfig(layers=parse_layers(layers), heads=chosen, **rest)


def segment_command(  # long: keyword-only options of the command, one a line
    console,
    *,
    source: str | None,
    corpus: str | None,
    model: str,
    jsonl: str | None,
    n_segments: int | None,
    cfg: SegmentConfig,
    text_column: str,
    one_per_line: bool,
    segments_column: str | None = None,
) -> None:
    """Segment one text (a file, or - for stdin) or every document of a corpus.

    ``segments_column``: each document of a .jsonl/.parquet corpus gives its own segment count there.
    """
    from attnsim.model.loading import load_model
    from attnsim.prepare.sources import Document, Problems, read_documents, resolve_corpus

    if (source is None) == (corpus is None):
        raise UserError("give one text file (or - for standard input) or --corpus, not both or neither; or --eval")
    if n_segments is not None and n_segments < 1:
        raise UserError(f"--segments {n_segments} must be at least 1")
    if segments_column and (corpus is None or n_segments is not None):
        raise UserError("--segments-column takes each count from a --corpus .jsonl/.parquet file; give --corpus and no --segments")
    if source is not None:
        if source == "-":
            docs = [Document(0, "<stdin>", sys.stdin.read())]
        else:
            path = Path(source)
            if not path.is_file():
                raise UserError(f"text file {source!r} not found; give an existing file, - for stdin, or --corpus")
            docs = [Document(0, str(path), path.read_text(encoding="utf-8", errors="replace"))]
        documents = iter(docs)
    problems = Problems()
    counts: dict[int, int] = {}  # doc_id -> segments wanted, from --segments-column
    if corpus is not None and segments_column:
        from attnsim.segment.corpus import read_counted

        rows = read_counted(corpus, text_column, segments_column)
        documents = iter([Document(i, name, text) for i, (name, text, _) in enumerate(rows)])
        counts = {i: k for i, (_, _, k) in enumerate(rows)}
    elif corpus is not None:
        resolve_corpus(corpus)  # a missing corpus fails here, before any output file is created
        documents = read_documents(corpus, text_column=text_column, one_per_line=one_per_line, problems=problems)
    segmenter = Segmenter(load_model(model), cfg)
    with contextlib.ExitStack() as stack:
        out = sys.stdout if jsonl == "-" else (stack.enter_context(open(jsonl, "w", encoding="utf-8")) if jsonl else None)
        batch: list = []
        for doc in documents:
            batch.append(doc)
            if len(batch) == DOCS_PER_BATCH:
                _emit(console, segmenter, batch, [counts.get(d.doc_id, n_segments) for d in batch], out, jsonl == "-")
                batch = []
        if batch:
            _emit(console, segmenter, batch, [counts.get(d.doc_id, n_segments) for d in batch], out, jsonl == "-")
    for kind, n in sorted(problems.counts.items()):
        print(f"skipped or repaired {n} documents: {kind} (e.g. {problems.examples[kind][0]})", file=sys.stderr)
    if jsonl and jsonl != "-":
        console.print(f"segments written to {jsonl}")


def _emit(console, segmenter, docs, n_segments: list[int | None], out, quiet) -> None:
    for doc, pieces in zip(docs, segmenter.segment_texts([d.text for d in docs], n_segments)):
        for p in pieces:
            if out is not None:
                out.write(json.dumps({"doc_id": doc.doc_id, "name": doc.name, **p.to_dict()}, ensure_ascii=False) + "\n")
        if quiet:
            continue
        console.print(f"[bold]{doc.name}[/]: {len(pieces)} segment{'' if len(pieces) == 1 else 's'}", highlight=False)
        for p in pieces:
            head = f"--- segment {p.index} · chars {p.start}-{p.end} · sentences {p.first_sentence}-{p.last_sentence}"
            console.print(head, style="dim", highlight=False)
            console.print(p.text, highlight=False, markup=False)


def eval_command(
    console, *, corpus: str, model: str, cfg: SegmentConfig, n_samples: int, seed: int, json_path: str | None, text_column: str, one_per_line: bool
) -> None:
    """Print (and optionally save) the Pk / WindowDiff table of attnsim, TextTiling and random."""
    from rich.table import Table

    from attnsim.model.loading import load_model
    from attnsim.prepare.sources import read_documents
    from attnsim.prepare.windows import SentenceSplitter
    from attnsim.segment.evaluate import METHODS, SUBSETS, corpus_sentences, evaluate

    if n_samples < 1:
        raise UserError(f"--samples {n_samples} must be at least 1")
    started = time.time()
    documents = corpus_sentences(read_documents(corpus, text_column=text_column, one_per_line=one_per_line), SentenceSplitter())
    segmenter = Segmenter(load_model(model), cfg)
    rows = evaluate(
        segmenter,
        documents,
        n_samples=n_samples,
        seed=seed,
        progress=lambda name: console.print(f"subset {name} done ({time.time() - started:.0f} s)", style="dim"),
    )
    table = Table(title=f"Pk / WindowDiff (lower is better) · {n_samples} samples per subset · corpus {corpus} · seed {seed}")
    table.add_column("method", no_wrap=True)
    for name in SUBSETS:
        table.add_column(f"{name} sentences", justify="right", no_wrap=True)
    table.add_column("boundaries", justify="right", no_wrap=True)
    for method in METHODS:
        mine = [r for r in rows if r.method == method]
        cells = {r.subset: f"{r.pk:.3f} / {r.windowdiff:.3f}" for r in mine}
        count = sum(r.boundaries for r in mine) / max(len(mine), 1)
        table.add_row(method, *[cells.get(name, "") for name in SUBSETS], f"{count:.1f}")
    console.print(table)
    console.print(
        f"heads: {', '.join(f'{l}:{h}' for l, h in segmenter.heads)} · {cfg.similarity} · block {cfg.block} · "
        f"{'one sentence per window' if not cfg.window else f'{cfg.window}-token windows'} · {time.time() - started:.0f} s",
        highlight=False,
    )
    console.print("boundaries: mean predicted per sample over the subsets (the truth has 9)", style="dim")
    if json_path:
        payload = {
            "corpus": corpus,
            "model": model,
            "samples": n_samples,
            "seed": seed,
            "config": cfg.__dict__,
            "heads": segmenter.heads,
            "rows": [r.__dict__ for r in rows],
        }
        Path(json_path).write_text(json.dumps(payload, indent=2))


def structured_eval_command(
    console, *, corpus: str | None, model: str, cfg: SegmentConfig, n_samples: int, seed: int, json_path: str | None, segments_column: str | None
) -> None:
    """Pk / WindowDiff on real structured documents (a built-in set or the user's), sections as truth."""
    import hashlib

    from rich.table import Table

    from attnsim.model.loading import load_model
    from attnsim.prepare.windows import SentenceSplitter
    from attnsim.segment.corpus import read_structured
    from attnsim.segment.devset import is_builtin, structured_documents
    from attnsim.segment.structured import evaluate_structured, structured_samples

    if n_samples < 1:
        raise UserError(f"--samples {n_samples} must be at least 1")
    if not corpus:
        raise UserError("--eval --segments-column needs --corpus: a .jsonl/.parquet file whose column lists each document's sections")
    started = time.time()
    docs = structured_documents(corpus) if is_builtin(corpus) else read_structured(corpus, segments_column or "sections")
    # A seeded sample of documents that does not depend on their order in the file.
    docs = sorted(docs, key=lambda d: hashlib.sha1(f"{seed}:{d.name}".encode()).digest())
    samples = structured_samples(docs, SentenceSplitter(), limit=n_samples)
    segmenter = Segmenter(load_model(model), cfg)
    rows = evaluate_structured(segmenter, samples, name=corpus, seed=seed)
    truth = sum(len(s.boundaries) for s in samples) / len(samples)
    n_sentences = sum(len(s.sentences) for s in samples)
    table = Table(title=f"Pk / WindowDiff (lower is better) · {len(samples)} documents ({n_sentences} sentences) · {corpus} · seed {seed}")
    for name in ("method", "Pk", "WindowDiff", "boundaries"):
        table.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r.method, f"{r.pk:.3f}", f"{r.windowdiff:.3f}", f"{r.boundaries:.1f}")
    console.print(table)
    console.print(
        f"boundaries: mean predicted per document (the truth has {truth:.1f}) · cutoff {_rule(cfg)} "
        f"· min fraction {cfg.fraction} · {time.time() - started:.0f} s",
        highlight=False,
    )
    if json_path:
        payload = {
            "corpus": corpus,
            "model": model,
            "documents": [s.name for s in samples],
            "seed": seed,
            "config": cfg.__dict__,
            "heads": segmenter.heads,
            "truth_boundaries": truth,
            "rows": [r.__dict__ for r in rows],
        }
        Path(json_path).write_text(json.dumps(payload, indent=2))


def _rule(cfg: SegmentConfig) -> str:
    """The count rule in words, for the table's footer."""
    if cfg.cutoff == "penalty":
        return f"penalty {cfg.penalty} · ln(sentences) a boundary"
    return f"{cfg.cutoff} {cfg.threshold} σ" if cfg.cutoff == "depth" else cfg.cutoff
