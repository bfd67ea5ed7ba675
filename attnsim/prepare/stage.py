"""Stage `prepare`: corpus -> windows (token ids, sentence ids, spans) and the shard plan, in the store.

Partitions of documents are packed independently (``map_partitions`` fans them out: Ray tasks in
`attnsim.executors`, a plain loop in tests); the driver then creates every array of the store at its final
shape and writes the token arrays. A store already prepared with the same settings is kept as it
is (a resumed run); one prepared with other settings is refused, untouched.

Example::

    result = prepare(RunConfig(), loaded_model_info, map_partitions=local_map)
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from attnsim import FORMAT_VERSION, __version__
from attnsim.config import RunConfig
from attnsim.errors import UserError
from attnsim.prepare.sources import Problems, read_documents
from attnsim.prepare.windows import WindowPacker, WindowRows
from attnsim.store.io import CHECKSUM_ALGORITHM, UnitArrays, consolidate, create_store, open_store, read_meta, store_exists, unit_checksum
from attnsim.store.meta import MASS_CATEGORIES, STORE_SETTINGS, TOKEN_ARRAYS, Layout, StoreMeta

FINAL_PUNCT = {".", "!", "?", "\u2026", "\u3002", "\uff01", "\uff1f"}

MapPartitions = Callable[[Callable, list], Iterable]


@dataclass
class PrepareResult:
    url: str
    n_windows: int
    n_tokens: int
    n_documents: int
    problems: dict
    reused: bool  # the store was already prepared with the same settings


def local_map(fn: Callable, items: list) -> Iterable:
    return map(fn, items)


@functools.lru_cache(maxsize=4)
def _packer(model: str, trust_remote_code: bool, max_tokens: int, separator: str) -> WindowPacker:
    from attnsim.model.loading import load_tokenizer  # torch, imported by loading: only where packing runs

    return WindowPacker(load_tokenizer(model, trust_remote_code), max_tokens, separator)


def pack_partition(args: tuple) -> tuple[WindowRows, Problems]:
    """Pack one partition of (doc_id, name, text); runs in a Ray task or in process.

    A document that the tokenizer reduces to nothing (only control or zero-width characters, say)
    is counted as a problem here: it passed the readers' emptiness check but yields no window.
    """
    (model, trust_remote_code, max_tokens, separator), docs = args
    packer = _packer(model, trust_remote_code, max_tokens, separator)
    rows, problems = WindowRows(), Problems()
    for doc_id, name, text in docs:
        packed = packer.pack(doc_id, text)
        if len(packed) == 0:
            problems.add("no_tokens", name)
        rows.extend(packed)
    return rows, problems


def token_classes(tokenizer) -> dict:
    """Ids of the special and punctuation tokens, stored so later stages need no tokenizer."""
    vocab = tokenizer.get_vocab()
    punct, final = [], []
    for token, idx in vocab.items():
        bare = token.removeprefix("##").lstrip("\u0120\u2581")  # WordPiece / BPE / SentencePiece marks
        if bare and all(unicodedata.category(ch).startswith("P") for ch in bare):
            punct.append(idx)
            if bare in FINAL_PUNCT:
                final.append(idx)
    return {
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "punct": sorted(punct),
        "final_punct": sorted(final),
    }


def run_settings(cfg: RunConfig, model_info: dict, corpus_fingerprint: str) -> dict:
    """The values of STORE_SETTINGS for this run: what must match to write into an existing store."""
    derived = {"weights_sha256": model_info["weights_sha256"], "corpus": corpus_fingerprint}
    values = {key: derived[key] if key in derived else getattr(cfg, key) for key in STORE_SETTINGS}
    values["tiers"] = list(values["tiers"])
    return values


def check_settings(url: str, settings: dict) -> bool:
    """True if the store exists and was prepared with these settings; raises if it differs."""
    if not store_exists(url):
        return False
    attrs = dict(open_store(url).attrs)
    if not attrs.get("prepared"):
        return False  # a prepare that was killed: start it again
    stored = attrs.get("settings", {})
    for key, value in settings.items():
        if stored.get(key) != value:
            was, now = stored.get(key), value
            if key == "corpus":  # fingerprints alone do not tell the user which corpus it was
                was = f"{attrs.get('corpus', {}).get('spec')!r} (fingerprint {was})"
                now = f"one with fingerprint {now}"
            else:
                was, now = repr(was), repr(now)
            raise UserError(f"store {url!r} was made with {key}={was}, not {now}; use a new --out (or delete the store) to start a different run")
    return True


def prepare(cfg: RunConfig, model_info: dict, map_partitions: MapPartitions = local_map) -> PrepareResult:
    """Create the store with the corpus's windows, or reuse it when already prepared identically."""
    if cfg.max_tokens > model_info["max_tokens"]:
        raise UserError(
            f"--max-tokens {cfg.max_tokens} is above the limit of model {cfg.model!r} ({model_info['max_tokens']}); "
            f"use --max-tokens {model_info['max_tokens']} or less"
        )
    problems = Problems()
    docs = _read_corpus(cfg, problems)
    fingerprint = corpus_fingerprint((doc_id, text) for doc_id, _, text in docs)
    settings = run_settings(cfg, model_info, fingerprint)
    url = cfg.store_url
    if check_settings(url, settings):
        c = read_meta(open_store(url)).corpus
        return PrepareResult(url, c.windows, c.tokens, c.documents, c.problems, reused=True)

    rows = _pack(cfg, docs, map_partitions, problems)
    n_tokens = int(sum(len(ids) for ids in rows.input_ids))
    corpus_info = {
        "spec": cfg.corpus,
        "fingerprint": fingerprint,
        "documents": len(docs),
        "windows": len(rows),
        "tokens": n_tokens,
        "problems": problems.to_dict(),
    }
    meta = store_meta(cfg, model_info, settings, corpus_info)
    layout = meta.layout
    root = create_store(url, layout, meta.to_attrs())
    # What `attnsim verify` checks the token arrays against: one checksum per unit, as stored.
    root.attrs["token_checksums"] = {"algorithm": CHECKSUM_ALGORITHM, "units": write_token_units(root, layout, rows, cfg.max_tokens)}
    root.attrs["prepared"] = True  # last: a store without it is prepared again from scratch
    consolidate(url)
    return PrepareResult(url, len(rows), n_tokens, len(docs), problems.to_dict(), reused=False)


def write_token_units(root, layout: Layout, rows: WindowRows, max_tokens: int) -> list[str]:
    """Write every unit's token arrays; returns each unit's checksum of them (as stored: store dtypes)."""
    checksums, units = [], UnitArrays(root, layout)
    for unit in range(layout.n_units):
        # Padded per unit, not for the whole corpus at once: millions of short documents make
        # millions of windows, and (windows x max_tokens) padded arrays would not fit in memory.
        start, stop = layout.unit_windows(unit)
        part = WindowRows(rows.input_ids[start:stop], rows.sentence_id[start:stop], rows.char_span[start:stop], rows.doc_id[start:stop])
        arrays = part.to_arrays(max_tokens)
        tokens = {name: np.asarray(arrays[name], dtype=units.array(name).dtype) for name in TOKEN_ARRAYS}
        units.write(unit, tokens, replace=False)
        checksums.append(unit_checksum(tokens))
    return checksums


def _read_corpus(cfg: RunConfig, problems: Problems) -> list[tuple[int, str, str]]:
    """(doc_id, name, text) of every readable document; none at all is a user error."""
    docs = [
        (d.doc_id, d.name, d.text)
        for d in read_documents(cfg.corpus, text_column=cfg.text_column, one_per_line=cfg.one_per_line, hf_split=cfg.hf_split, problems=problems)
    ]
    if not docs:
        raise UserError(f"corpus {cfg.corpus!r} has no text to analyse (every document is empty or unreadable)")
    return docs


def _pack(cfg: RunConfig, docs: list, map_partitions: MapPartitions, problems: Problems) -> WindowRows:
    """Every document's windows, packed per partition (Ray tasks or in process), in document order."""
    key = (cfg.model, cfg.trust_remote_code, cfg.max_tokens, cfg.sentence_separator)
    parts = [docs[i : i + cfg.docs_per_partition] for i in range(0, len(docs), cfg.docs_per_partition)]
    rows = WindowRows()
    if len(parts) == 1:  # one partition gains nothing from a remote task: its worker's start and imports
        map_partitions = local_map  # took 14 s for lee's prepare vs 4 s in process (2 s of a whole run)
    for part_rows, part_problems in map_partitions(pack_partition, [(key, p) for p in parts]):
        rows.extend(part_rows)
        problems.merge(part_problems)
    if len(rows) == 0:
        raise UserError(f"corpus {cfg.corpus!r} has no text to analyse (every document is empty or unreadable)")
    return rows


def store_meta(cfg: RunConfig, model_info: dict, settings: dict, corpus_info: dict) -> StoreMeta:
    """The root attributes of a store prepared now (`prepared` is set once its token arrays are in)."""
    layout = Layout(
        n_windows=corpus_info["windows"],
        max_tokens=cfg.max_tokens,
        n_layers=model_info["layers"],
        n_heads=model_info["heads"],
        head_size=model_info["head_size"],
        k=cfg.k,
        n_categories=len(MASS_CATEGORIES),
        windows_per_shard=cfg.windows_per_shard,
        tiers=tuple(cfg.tiers),
    )
    return StoreMeta(
        format_version=FORMAT_VERSION,
        layout=layout,
        windows_per_shard=layout.windows_per_shard,
        n_units=layout.n_units,
        prepared=False,
        settings=settings,
        model={k: v for k, v in model_info.items() if k != "token_classes"},
        tokenizer={"source": model_info["source"], "token_classes": model_info["token_classes"]},
        windows={"max_tokens": cfg.max_tokens, "sentence_separator": cfg.sentence_separator, "splitter": "pysbd", "stride": 0},
        similarity_kind=cfg.similarity_kind,
        k=cfg.k,
        tiers=list(cfg.tiers),
        mass_categories=list(MASS_CATEGORIES),
        corpus=corpus_info,
        code_version=__version__,
        config=cfg.model_dump(mode="json"),
    )


def corpus_fingerprint(docs: Iterable[tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for doc_id, text in docs:
        h.update(f"{doc_id}:{len(text)}:".encode())
        h.update(text.encode("utf-8", errors="surrogatepass"))
    return h.hexdigest()[:16]
