"""CoNLL-2003 NER files (IOB1 or IOB2) -> sentences of (word, tag), checked against the declared scheme.

    from pipelines.finetune.conll import ConllParams, read_conll
    sentences, report = read_conll("s3://bucket/conll2003/iob2/train.txt", ConllParams(scheme="iob2"))
    text = format_predictions(sentences, predicted_tags)     # what conlleval.pl reads

The layout is the shared task's: one token per line, whitespace-separated columns (word POS chunk NER),
the NER tag in the last column; a blank line ends a sentence; a ``-DOCSTART-`` line separates
documents and is never a sentence (it also ends one that lacks its blank line).

Bad rows: a row whose column count differs from the file's first token row, or whose tag is not one of
``labels(params)``, is counted by reason as in ``glue.ReadReport`` (whose ``num_rows``/``num_kept``
count sentences here) and its whole sentence is dropped, because a sentence with a token missing would train
on misaligned text; ``on_bad_row="raise"`` raises instead, naming ``file:line``.

Schemes. IOB2 opens every chunk with B-. IOB1 opens a chunk with I-, and uses B- only for a chunk that
directly follows a chunk of the same type. A chunk whose opening tag breaks the declared scheme is a
scheme violation. A file with more violations than ``max_scheme_violations`` (a fraction of its chunks)
is in another scheme: ``SchemeError``, naming the file and the first offending lines, at read time,
before any training. Below it they are kept as tagged (conlleval reads B- and I- at a chunk start
alike) and listed in the report: the official IOB1 ``eng.train`` has two (``B-MISC`` after ``O`` at
lines 152428 and 175436) among 23,499 chunks, a file in the other scheme breaks it at nearly every chunk.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

from pipelines import storage
from pipelines.finetune import metrics
from pipelines.finetune.glue import MAX_BAD_SAMPLES, BadRowError, ReadReport

DOCSTART = "-DOCSTART-"
DEFAULT_FILES = {"iob2": ("train.txt", "valid.txt"), "iob1": ("eng.train", "eng.testa")}
"""(train, dev) file names of each scheme's folder under ``shared/data/conll2003``."""


@dataclass(frozen=True)
class ConllParams:
    """How to read a CoNLL-format tagging task."""

    scheme: Literal["iob1", "iob2"] = "iob2"
    """Tag scheme the files are declared to be in; a file in another scheme is rejected at read time."""
    entity_types: tuple[str, ...] = ("PER", "ORG", "LOC", "MISC")
    """Chunk types; the labels are O then B-/I- of each (CoNLL-2003's order as in Hugging Face's conll2003)."""
    train_file: str = ""
    """Default: ``train.txt`` (iob2) or ``eng.train`` (iob1)."""
    dev_file: str = ""
    """Default: ``valid.txt`` (iob2) or ``eng.testa`` (iob1)."""
    max_scheme_violations: float = 0.001
    """Fraction of a file's chunks whose opening tag may break the scheme (kept and reported) before the
    file is rejected as being in another scheme. 0 = strict."""

    def __post_init__(self) -> None:
        if self.scheme not in DEFAULT_FILES:
            raise ValueError(f"ConllParams.scheme must be iob1 or iob2, got {self.scheme!r}")
        if not self.entity_types or any(not t or t == "O" or any(c.isspace() for c in t) for t in self.entity_types):
            raise ValueError(f"ConllParams.entity_types must be non-empty names, got {self.entity_types}")
        if not 0 <= self.max_scheme_violations < 1:
            raise ValueError(f"ConllParams.max_scheme_violations must be in [0, 1), got {self.max_scheme_violations}")

    @property
    def files(self) -> tuple[str, str]:
        train, dev = DEFAULT_FILES[self.scheme]
        return self.train_file or train, self.dev_file or dev


def labels(params: ConllParams) -> tuple[str, ...]:
    return ("O",) + tuple(f"{p}-{t}" for t in params.entity_types for p in ("B", "I"))


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int
    """1-based line of its first token (``file:line`` in messages and the predictions file)."""
    document: int
    """0-based index of its ``-DOCSTART-`` document (0 when the file has none)."""


class SchemeError(ValueError):
    """The file's tags are not in the declared scheme; the message names the file and lines."""


def _bad_reason(fields: list[str], num_columns: int, known: set[str]) -> str:
    if len(fields) != num_columns or len(fields) < 2:
        return f"wrong column count: {len(fields)} instead of {num_columns}"
    return f"unknown tag: {fields[-1]!r}" if fields[-1] not in known else ""


def read_conll(uri: str, params: ConllParams, on_bad_row: Literal["count", "raise"] = "count",
               ) -> tuple[list[Sentence], dict]:
    """Every sentence of one file (bad-row sentences dropped, or raised) and its read report as a dict:
    ``glue.ReadReport``'s fields counting sentences, plus tokens, documents and tolerated violations.
    The scheme is checked over the whole file before it returns."""
    known = set(labels(params))
    report = ReadReport(uri)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    bad, start, document, num_columns = False, 0, -1, 0

    def end_sentence() -> None:
        nonlocal words, tags, bad
        if words or bad:
            report.num_rows += 1
            if not bad:
                sentences.append(Sentence(tuple(words), tuple(tags), start, max(document, 0)))
        words, tags, bad = [], [], False

    for lineno, line in enumerate(storage.iter_lines(uri), start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            end_sentence()
            document += bool(fields)
            continue
        if not words and not bad:
            start = lineno
        num_columns = num_columns or len(fields)  # the file's first token row sets the layout
        reason = _bad_reason(fields, num_columns, known)
        if reason:
            if on_bad_row == "raise":
                raise BadRowError(f"{uri}:{lineno}: {reason}")
            report.bad[reason.split(":")[0]] += 1
            if len(report.samples) < MAX_BAD_SAMPLES:
                report.samples.append(f"{uri}:{lineno}: {reason}")
            bad = True
            continue
        words.append(fields[0])
        tags.append(fields[-1])
    end_sentence()
    report.num_kept = len(sentences)
    tolerated = check_scheme(sentences, params, uri)
    return sentences, {**report.to_dict(), "unit": "sentences", "num_tokens": sum(len(s.words) for s in sentences),
                       "num_documents": document + 1 if document >= 0 else 0, "scheme": params.scheme,
                       "num_scheme_violations": len(tolerated), "scheme_violations": tolerated[:MAX_BAD_SAMPLES]}


def scheme_violations(tags: tuple[str, ...] | list[str], scheme: str) -> list[int]:
    """Positions of chunk-opening tags that break ``scheme`` (a sentence starts as if after ``O``)."""
    out, prev = [], "O"
    for i, tag in enumerate(tags):
        same = prev != "O" and prev[2:] == tag[2:]  # follows a tag of the same type
        if scheme == "iob2" and tag[0] == "I" and not same:
            out.append(i)  # a chunk opened by I-
        elif scheme == "iob1" and tag[0] == "B" and not same:
            out.append(i)  # B- with no same-type chunk right before it
        prev = tag
    return out


def check_scheme(sentences: list[Sentence], params: ConllParams, uri: str) -> list[str]:
    """Raise SchemeError if too many chunks open against the scheme; returns the tolerated ``file:line``s."""
    num_chunks = sum(len(metrics.conll_chunks([s.tags])) for s in sentences)
    where = [f"{uri}:{s.line + i}" for s in sentences for i in scheme_violations(s.tags, params.scheme)]
    if len(where) > params.max_scheme_violations * num_chunks:
        rule = ("every chunk opens with B-" if params.scheme == "iob2"
                else "B- opens only a chunk right after a chunk of the same type")
        raise SchemeError(f"{uri}: declared {params.scheme} ({rule}), but {len(where)} of {num_chunks} chunks break "
                          f"it, first at {', '.join(where[:3])}; is the file in the other scheme?")
    return where


def tag_counts(sentences: list[Sentence]) -> collections.Counter:
    return collections.Counter(t for s in sentences for t in s.tags)


def format_predictions(sentences: list[Sentence], predictions: list[list[str]]) -> str:
    """conlleval's input: ``word gold predicted`` per token, a blank line after each sentence."""
    out = []
    for s, pred in zip(sentences, predictions, strict=True):
        out += [f"{w} {g} {p}" for w, g, p in zip(s.words, s.tags, pred, strict=True)] + [""]
    return "\n".join(out) + ("\n" if out else "")
