"""Build a BERT-format English corpus (one paragraph per line, a blank line between documents) from
the reStructuredText / POD sources of Debian documentation packages.

    python -m pipelines.demo.make_corpus                       # the shipped demo corpus
    python -m pipelines.demo.make_corpus --source python --source linux --source perl \\
        --out /tmp/corpus --max-mb 0 --shards 16               # the >= 50 MB benchmark corpus

Sources (Debian packages): ``python3.11-doc`` (/usr/share/doc/python3.11/html/_sources, PSF licence),
``linux-doc-6.1`` (/usr/share/doc/linux-doc-6.1/Documentation, GPL-2.0), ``perl-doc``
(/usr/share/perl/5.36/pod, Artistic/GPL), and the paragraphs (``<p>``) of the HTML pages of
``python-django-doc`` (BSD-3-Clause), ``python-scipy-doc`` (BSD-3-Clause), ``postgresql-doc-15``
(PostgreSQL licence), ``git-doc`` (GPL-2.0) and ``gnucash-docs`` (English; GFDL), and the plain-text kernel documents. Markup is stripped roughly here (directives, code blocks,
headings' underlines, inline roles); the clean stage still has work to do. A document is one section
of one source file. Output is deterministic (files sorted, no timestamps in the gzip header).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import os
import re
from html.parser import HTMLParser

SOURCES = {
    "python": ("/usr/share/doc/python3.11/html/_sources", "**/*.rst.txt", "python3.11-doc"),
    "linux": ("/usr/share/doc/linux-doc-6.1/Documentation", "**/*.rst.gz", "linux-doc-6.1"),
    "perl": ("/usr/share/perl/5.36/pod", "*.pod", "perl-doc"),
    "django": ("/usr/share/doc/python-django-doc/html", "**/*.html", "python-django-doc"),
    "scipy": ("/usr/share/doc/python-scipy-doc/html", "**/*.html", "python-scipy-doc"),
    "postgresql": ("/usr/share/doc/postgresql-doc-15/html", "*.html", "postgresql-doc-15"),
    "git": ("/usr/share/doc/git-doc", "**/*.html", "git-doc"),
    "python-html": ("/usr/share/doc/python3.11/html", "**/*.html", "python3.11-doc"),
    "gnucash": ("/usr/share/doc/gnucash-docs", "gnucash-*-en/*.html", "gnucash-docs"),
    "linux-txt": ("/usr/share/doc/linux-doc-6.1/Documentation", "**/*.txt.gz", "linux-doc-6.1"),
}
HERE = os.path.dirname(os.path.abspath(__file__))

_ROLE = re.compile(r":[\w:-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_LITERAL = re.compile(r"``([^`]+)``")
_POD = re.compile(r"[BCIFLESXZ]<+\s*([^<>]*?)\s*>+")
_EMPH = re.compile(r"\*\*?([^*]+)\*\*?|`([^`]+)`_*")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_.:])\1{2,}\s*$")


def _inline(text: str) -> str:
    for _ in range(2):
        text = _POD.sub(r"\1", text)
    text = _ROLE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return _EMPH.sub(lambda m: m.group(1) or m.group(2), text)


def documents_of(text: str) -> list[list[str]]:
    """Sections of one rst/pod file, each a list of prose paragraphs (one line each)."""
    docs: list[list[str]] = [[]]
    para: list[str] = []
    skip_indent: int | None = None  # inside a directive or literal block: skip deeper lines

    def flush() -> None:
        if para:
            docs[-1].append(_inline(" ".join(para)))
            para.clear()

    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not stripped:
            flush()
        elif _UNDERLINE.match(stripped) or stripped.startswith("=head"):
            flush()
            if docs[-1]:
                docs.append([])
        elif _UNDERLINE.match(nxt.strip()) and len(nxt.strip()) >= len(stripped) > 0:
            flush()  # a heading's text line: not prose
        elif stripped.startswith((".. ", "=", ">>>", "$ ", "|", "+-")) or line.startswith((" ", "\t")) and not para:
            flush()
            skip_indent = indent
        else:
            if stripped.endswith("::"):
                para.append(stripped[:-2].rstrip() + ("" if stripped == "::" else ":"))
                flush()
                skip_indent = indent
                continue
            para.append(stripped)
    flush()
    return [d for d in docs if d]


class _Paragraphs(HTMLParser):
    """The text of each ``<p>`` of an HTML page, with inline markup dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._depth = 0
        self._parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            self._depth += 1

    def handle_endtag(self, tag):
        if tag == "p" and self._depth:
            self._depth -= 1
            text = " ".join("".join(self._parts).split())
            if text:
                self.paragraphs.append(text)
            self._parts = []

    def handle_data(self, data):
        if self._depth:
            self._parts.append(data)


def html_documents(text: str) -> list[list[str]]:
    parser = _Paragraphs()
    parser.feed(text)
    return [parser.paragraphs] if parser.paragraphs else []


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def build(sources: list[str], out_dir: str, max_mb: float, shards: int) -> list[str]:
    texts: list[str] = []
    total = 0
    for name in sources:
        base, pattern, package = SOURCES[name]
        files = sorted(glob.glob(os.path.join(base, pattern), recursive=True))
        if not files:
            raise SystemExit(f"no {pattern} under {base}: apt-get install -y {package}")
        for path in files:
            parse = html_documents if path.endswith(".html") else documents_of
            for doc in parse(_read(path)):
                block = "\n".join(doc) + "\n\n"
                texts.append(block)
                total += len(block.encode("utf-8"))
                if max_mb and total >= max_mb * 1e6:
                    break
            if max_mb and total >= max_mb * 1e6:
                break
    os.makedirs(out_dir, exist_ok=True)
    per_shard = -(-len(texts) // shards)
    paths = []
    for s in range(shards):
        path = os.path.join(out_dir, f"{'-'.join(sources)}-{s:03d}.txt.gz")
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write("".join(texts[s * per_shard:(s + 1) * per_shard]).encode("utf-8"))
        paths.append(path)
    print(f"{len(texts)} documents, {total / 1e6:.1f} MB of text in {shards} file(s) under {out_dir}")
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", action="append", choices=sorted(SOURCES), help="default: python")
    p.add_argument("--out", default=os.path.join(HERE, "corpus"))
    p.add_argument("--max-mb", type=float, default=4.0, help="stop after this much text (0: no limit)")
    p.add_argument("--shards", type=int, default=2)
    args = p.parse_args(argv)
    build(args.source or ["python"], args.out, args.max_mb, args.shards)


if __name__ == "__main__":
    main()
