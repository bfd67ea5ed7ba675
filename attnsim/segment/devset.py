"""Real structured documents for segmentation, built offline from what installed packages carry.

Every Python environment that runs attnsim holds two sources of sectioned prose:

- the long description (README) in each installed distribution's METADATA, Markdown or reST;
- CPython's help topics (`pydoc_data.topics`), plain text rendered from the reference manual,
  whose sections are underlined headings.

A document's sections are the text between headings (every heading level). Headings are removed and
so is what is not prose (code blocks, tables, HTML tags, images, directives, link targets); what is
left of each section is joined with single spaces, so whitespace says nothing about where a section
ends. A README is cut at its change log (version sections are not topics). Sections with fewer than
``MIN_SECTION_CHARS`` characters are dropped (a heading over one install command is not a topic);
documents need at least 3 sections. Documents go to the ``dev`` or ``test`` split by a hash of their
name, so the split does not depend on which other packages are installed.

Example::

    docs = structured_documents("dev")          # [StructuredDoc(name="pkg:typer", sections=[...]), ...]
    text = " ".join(docs[0].sections)           # what the segmenter sees
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from attnsim.errors import UserError

MIN_SECTION_CHARS = 200  # shorter sections are dropped (install lines, badges, one-line notes)
MIN_SECTIONS = 3
SPLITS = ("dev", "test")

_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+\S")  # Markdown "## Heading"
_UNDERLINE = re.compile(r"^([=\-~^*+#\"'`:._])\1{2,}\s*$")  # reST / setext / pydoc underline
_CHANGELOG = re.compile(r"change ?log|changes|history|release notes|what's new|news\b|^v?\d+\.\d+", re.I)
_FENCE = re.compile(r"^\s*(```|~~~)")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+(\S+::|_|\[|\|)|^\s*\.\.\s*$")  # .. image::, .. _target:, .. [1], .. |sub|
_HTML = re.compile(r"<[^>]{0,400}>")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_RST_LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_{1,2}")
_MARKUP = re.compile(r"`{1,2}|\*{1,2}|(?<!\w)_{1,2}(?=\w)|(?<=\w)_{1,2}(?!\w)|:\w+:(?=`)")
_URL_ONLY = re.compile(r"^\s*(https?://\S+|\[[^\]]*\]:\s*\S+)\s*$")
_TABLE = re.compile(r"^\s*(\||\+[-=+]+\+?\s*$)")
_BULLET = re.compile(r"^\s*([-*+•]|\d+[.)]|#\.)\s+")


@dataclass
class StructuredDoc:
    name: str
    sections: list[str]  # each section's prose, whitespace collapsed

    @property
    def text(self) -> str:
        return " ".join(self.sections)


def split_of(name: str) -> str:
    """'dev' or 'test' from a hash of the document's name (stable across machines)."""
    return SPLITS[hashlib.sha1(name.encode()).digest()[0] % 2]


def sections_of(markup: str, *, markdown: bool) -> list[tuple[int, str, str]]:
    """(level, heading, prose) of each section of a Markdown or reST/plain document, headings removed.

    Level 1 is the outermost heading: the number of # in Markdown; in reST and plain text, the
    order in which underline characters first appear (reST's own rule). Text before the first
    heading is a section of level 0.
    """
    lines = markup.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    out: list[tuple[int, str, list[str]]] = [(0, "", [])]
    styles: list[str] = []  # reST underline characters in order of first use
    i, in_fence, literal_indent = 0, False, None
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _FENCE.match(line):
            in_fence = not in_fence
        elif in_fence:
            pass
        elif literal_indent is not None and (not line.strip() or _indent(line) > literal_indent):
            pass  # inside a reST literal block or directive body (indented past its opener)
        elif markdown and _ATX.match(line):
            out.append((len(_ATX.match(line)[1]), line.strip("# \n"), []))
        elif line.strip() and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) * 0.6 and not _UNDERLINE.match(line):
            mark = nxt.strip()[0]
            styles += [] if mark in styles else [mark]
            level = {"=": 1, "-": 2}.get(mark, 3) if markdown else styles.index(mark) + 1
            out.append((level, line.strip(), []))
            i += 1  # skip the underline
        elif _UNDERLINE.match(line):
            pass  # an overline, or a horizontal rule
        else:
            literal_indent = None
            if _DIRECTIVE.match(line) or (not markdown and line.rstrip().endswith("::")):
                literal_indent = _indent(line)
                if line.rstrip().endswith("::") and not _DIRECTIVE.match(line):
                    out[-1][2].append(line.rstrip()[:-1])  # "Example::" keeps "Example:"
            elif (markdown and _indent(line) >= 4 and not _BULLET.match(line)) or line.lstrip().startswith(">>>") or "::=" in line:
                pass  # indented code, doctests, grammar rules
            elif not (_TABLE.match(line) or _URL_ONLY.match(line)):
                out[-1][2].append(line)
        i += 1
    return [(level, h, clean_prose("\n".join(body))) for level, h, body in out]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def clean_prose(text: str) -> str:
    """Markup removed, list markers dropped, whitespace collapsed to single spaces."""
    text = _HTML.sub(" ", _MD_IMAGE.sub(" ", text))
    text = _RST_LINK.sub(r"\1", _MD_LINK.sub(r"\1", text))
    text = "\n".join(_BULLET.sub("", line) for line in text.split("\n"))
    text = _MARKUP.sub("", text)
    return " ".join(text.split())


def document_from(name: str, markup: str, *, markdown: bool, coarse: bool = False) -> StructuredDoc | None:
    """A StructuredDoc, or None when fewer than MIN_SECTIONS sections hold enough prose.

    ``coarse``: only the outermost heading level that still gives MIN_SECTIONS sections cuts;
    deeper sections are joined to the section above them (long sections, as in long articles).
    """
    parts = []
    for level, heading, prose in sections_of(markup, markdown=markdown):
        if heading and _CHANGELOG.search(heading):
            break
        parts.append((level, prose))
    for top in sorted({level for level, _ in parts if level}) if coarse else [None]:
        kept: list[str] = []
        for level, prose in parts:
            if kept and top is not None and level > top:
                kept[-1] = f"{kept[-1]} {prose}".strip()
            else:
                kept.append(prose)
        kept = [k for k in kept if len(k) >= MIN_SECTION_CHARS]
        if len(kept) >= MIN_SECTIONS:
            return StructuredDoc(name, kept)
    return None


def package_documents() -> list[StructuredDoc]:
    """Installed distributions' long descriptions and CPython's help topics, one document each."""
    import importlib.metadata as md

    docs: dict[str, StructuredDoc] = {}
    for dist in md.distributions():
        meta = dist.metadata
        name = f"pkg:{(meta.get('Name') or '').lower()}"
        body = meta.get_payload() or meta.get("Description") or ""
        if name in docs or not body.strip():
            continue
        markdown = "markdown" in (meta.get("Description-Content-Type") or "").lower()
        doc = document_from(name, body, markdown=markdown)
        if doc is not None:
            docs[name] = doc
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python built without its docs
        topics = {}
    for topic, body in sorted(topics.items()):
        doc = document_from(f"pydoc:{topic}", body, markdown=False)
        if doc is not None:
            docs[doc.name] = doc
    return [docs[k] for k in sorted(docs)]


_WIKI_HEADING = re.compile(r"(?m)^(={2,6})[ \t]*(.*?)[ \t]*\1[ \t]*$")
_WIKI_END = re.compile(r"see also|references|external links|notes|further reading|bibliography|sources|citations", re.I)
_WIKI_QUOTES = re.compile(r"'{2,}|^[*#:;]+", re.M)  # bold/italic quotes, list and indent markers
WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"  # gensim's test data


def wiki_documents() -> list[StructuredDoc]:
    """The articles of gensim's shortened English Wikipedia dump; level-2 sections are the truth.

    Deeper sections are joined to their level-2 section; the article stops at its first reference
    section (See also, References, ...). Markup is removed with gensim's `filter_wiki`.
    """
    import bz2
    from xml.etree import ElementTree

    import gensim
    from gensim.corpora.wikicorpus import filter_wiki

    path = Path(gensim.__file__).parent / "test" / "test_data" / WIKI_DUMP
    if not path.is_file():
        raise UserError(f"gensim's Wikipedia test dump {path} is missing; reinstall gensim or use packages:dev")
    docs = []
    for _, el in ElementTree.iterparse(bz2.open(path)):
        if not el.tag.endswith("}page"):
            continue
        fields = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in el.iter()}
        el.clear()
        if fields.get("ns") != "0" or fields.get("text", "").lstrip().lower().startswith("#redirect"):
            continue
        parts = _WIKI_HEADING.split(fields["text"])  # body, (marks, heading, body)*
        sections = [parts[0]]
        for marks, heading, body in zip(parts[1::3], parts[2::3], parts[3::3]):
            if _WIKI_END.search(heading):
                break
            if len(marks) == 2:
                sections.append(body)
            else:
                sections[-1] += "\n" + body
        prose = [" ".join(_WIKI_QUOTES.sub("", filter_wiki(x)).split()) for x in sections]
        kept = [x for x in prose if len(x) >= MIN_SECTION_CHARS]
        if len(kept) >= MIN_SECTIONS:
            docs.append(StructuredDoc(f"wiki:{fields['title']}", kept))
    return docs


SOURCES = {"wiki": wiki_documents, "packages": package_documents}


def structured_documents(spec: str) -> list[StructuredDoc]:
    """A built-in set, ``SOURCE:SPLIT`` (wiki:dev, wiki:test, packages:dev, packages:test).

    'dev' chose the defaults; 'test' is held out for reporting.
    """
    source, _, split = spec.partition(":")
    if source not in SOURCES or split not in SPLITS:
        raise UserError(f"built-in set {spec!r} is not one of wiki:dev, wiki:test, packages:dev, packages:test")
    return [d for d in SOURCES[source]() if split_of(d.name) == split]


def is_builtin(spec: str) -> bool:
    return spec.partition(":")[0] in SOURCES and spec.partition(":")[2] in SPLITS


if __name__ == "__main__":  # python -m attnsim.segment.devset wiki:dev out.jsonl
    import sys

    from attnsim.segment.corpus import write_jsonl

    write_jsonl(structured_documents(sys.argv[1]), sys.argv[2])
