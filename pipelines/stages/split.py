"""DOCUMENTS -> SENTENCES: a rule-based English sentence splitter.

A line break ends a sentence (BERT-format input puts sentences or paragraphs on lines). Inside a
line, a boundary is ``.``/``!``/``?``/``…`` (runs allowed, closing quotes/brackets kept with the
sentence) followed by whitespace and a character that can start a sentence (capital, digit, opening
quote or bracket). It is not a boundary after a known abbreviation (``e.g.``, ``Dr.``, ``Fig.``),
a single-letter initial (``J. R. R. Tolkien``) or a dotted acronym (``U.S.``); decimals (``3.14``)
never qualify because a boundary needs whitespace. An ellipsis followed by a lower-case word
continues the sentence.
"""
from __future__ import annotations

import dataclasses
import re

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_exec, stage_store

STAGE = "split"

ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft vs etc al e.g i.e cf viz approx ca fig figs eq eqs no nos vol vols
pp p ch sec secs dept est inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec
gen col lt sgt capt rev hon gov sen rep ed eds op ibid resp incl
""".split())
# Abbreviations that often end a sentence too: split after them when a capital follows.
SENTENCE_FINAL_ABBREVIATIONS = frozenset({"etc", "inc", "ltd", "co", "corp", "al"})

_BOUNDARY = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9\u00c0-\u00de])")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    min_sentence_chars: int = 2
    """Shorter pieces are joined to the sentence before them."""


def _is_false_boundary(line: str, end: int, punct: str) -> bool:
    """Whether the ``.`` ending at ``end`` belongs to an abbreviation, an initial or an acronym."""
    if punct != ".":
        return False
    start = end - 1
    while start > 0 and not line[start - 1].isspace() and line[start - 1] not in "(\"'\u201c":
        start -= 1
    word = line[start:end - 1]
    if not word:
        return False
    lower = word.lower()
    if lower in ABBREVIATIONS and lower not in SENTENCE_FINAL_ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # initial: "J. Smith"
    return bool(re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word))  # acronym: "U.S.", "e.g."


def split_line(line: str) -> list[str]:
    out, start = [], 0
    for m in _BOUNDARY.finditer(line):
        if _is_false_boundary(line, m.start(1) + 1, m.group(1)):
            continue
        out.append(line[start:m.end(2)].strip())
        start = m.end()
    out.append(line[start:].strip())
    return [s for s in out if s]


def split_sentences(text: str, min_sentence_chars: int = 2) -> list[str]:
    sentences: list[str] = []
    for line in text.split("\n"):
        for s in split_line(line):
            if sentences and len(s) < min_sentence_chars:
                sentences[-1] += " " + s
            else:
                sentences.append(s)
    return sentences


def core(table: pa.Table, cfg: SplitConfig) -> pa.Table:
    """DOCUMENTS -> SENTENCES, order kept; documents with no sentence are dropped."""
    schemas.check_schema(table, schemas.DOCUMENTS, "split")
    ids, docs = [], []
    for doc_id, text in zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()):
        sentences = split_sentences(text, cfg.min_sentence_chars)
        if sentences:
            ids.append(doc_id)
            docs.append(sentences)
    return pa.table({"doc_id": ids, "sentences": docs}, schema=schemas.SENTENCES)


def split_shard(table: pa.Table, cfg: SplitConfig) -> tuple[pa.Table, dict[str, int]]:
    """``core`` on one shard, with its counts."""
    out = core(table, cfg)
    lengths = pc.list_value_length(out.column("sentences"))
    return out, {"documents": out.num_rows, "sentences": pc.sum(lengths).as_py() or 0,
                 "single_sentence_documents": pc.sum(pc.equal(lengths, 1)).as_py() or 0}


def run_split(cfg: SplitConfig, documents_uri: str, root: str, *, concurrency: int | None = None) -> str:
    """Split the cleaned DOCUMENTS at ``documents_uri`` into ``{root}/split/{key}/``: a Ray Data read
    task per input shard, which writes its output shard; ``concurrency`` caps the tasks (speed only)."""
    def produce(writer: stage_store.StageWriter) -> None:
        stats, _ = stage_exec.map_units(writer, stage_store.shard_units(documents_uri), worker=stage_exec.Apply,
                                        worker_args=(split_shard, cfg), schema=schemas.SENTENCES, desc="split",
                                        concurrency=concurrency)
        if not stats.get("sentences"):
            raise ValueError(f"split: no sentence in {documents_uri}")
        writer.stats.update(stats)

    return stage_store.run_stage(root, STAGE, cfg, (stage_store.input_identity(documents_uri),), produce, version=2)
