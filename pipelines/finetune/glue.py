"""GLUE task specs and readers for the official ``.tsv`` files, plus leaderboard prediction files.

Each official file is read by its own conventions: CoLA's train/dev have no header (4 fixed
columns), every other file has one and columns are found by name (MNLI's train and dev differ in
width; its gold label is the ``gold_label`` column); test files never have labels and carry an
``index`` (QQP: ``id``) that the leaderboard files echo. Fields are split on tab only, with no
quote processing, because GLUE text holds bare ``"`` characters.

A malformed row (wrong column count, missing or unknown label, non-numeric regression target,
empty text) is skipped and counted by reason in a ``ReadReport``, with the first few located as
``file:line``; ``on_bad_row="raise"`` raises instead, naming the file and line. A custom task is
just another ``TaskSpec`` (see ``pipelines/demo/task``).
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import Literal

from pipelines import storage

MAX_BAD_SAMPLES = 10


@dataclass(frozen=True)
class TaskSpec:
    """How to read one GLUE-format task and how to score it."""

    name: str
    """Task name; also the results-table row (e.g. ``cola``, ``mnli``)."""
    text_a: str
    """Header name of the first text column."""
    text_b: str | None = None
    """Header name of the second text column, or None for single-sentence tasks."""
    label: str = "label"
    """Header name of the label column in train/dev files."""
    labels: tuple[str, ...] = ()
    """Label strings in class-id order; empty means regression (a float target, as STS-B)."""
    metrics: tuple[str, ...] = ("accuracy",)
    """Names from ``pipelines.finetune.metrics.METRICS``; the task's GLUE score is their mean."""
    headerless_columns: tuple[str, ...] = ()
    """Column names for train/dev files that have no header row (CoLA); empty = files have a header."""
    test_id: str = "index"
    """Header name of the id column of the test file (echoed in leaderboard predictions)."""
    dirname: str = ""
    """Folder under the GLUE root holding the task's files (``CoLA``, ``SST-2`` ...)."""
    train_file: str = "train.tsv"
    # (typed as tuple[str, ...]: typed_config mis-checks fixed-length tuple[str, str]; length checked below)
    dev_files: tuple[tuple[str, ...], ...] = (("", "dev.tsv"),)
    """(suffix, file) per dev set; the suffix names the eval (MNLI: ``m``/``mm``)."""
    test_files: tuple[tuple[str, ...], ...] = (("", "test.tsv"),)
    """(leaderboard file stem, test file) pairs, e.g. ``("MNLI-m", "test_matched.tsv")``."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskSpec.name must not be empty")
        if self.headerless_columns and not {self.text_a, self.label} <= set(self.headerless_columns):
            raise ValueError(f"task {self.name}: headerless_columns must name {self.text_a!r} and {self.label!r}")
        if any(len(pair) != 2 for pair in self.dev_files + self.test_files):
            raise ValueError(f"task {self.name}: dev_files/test_files entries must be [suffix, file] pairs")
        if self.is_regression and any(m in ("accuracy", "f1", "matthews") for m in self.metrics):
            raise ValueError(f"task {self.name}: regression task cannot use classification metrics {self.metrics}")

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1


_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("cola", "sentence", labels=("0", "1"), metrics=("matthews",), dirname="CoLA",
             headerless_columns=("source", "label", "original_label", "sentence"), test_files=(("CoLA", "test.tsv"),)),
    TaskSpec("sst2", "sentence", labels=("0", "1"), dirname="SST-2", test_files=(("SST-2", "test.tsv"),)),
    TaskSpec("mrpc", "#1 String", "#2 String", label="Quality", labels=("0", "1"), metrics=("f1", "accuracy"),
             dirname="MRPC", test_files=(("MRPC", "test.tsv"),)),
    TaskSpec("stsb", "sentence1", "sentence2", label="score", metrics=("pearson", "spearman"), dirname="STS-B",
             test_files=(("STS-B", "test.tsv"),)),
    TaskSpec("qqp", "question1", "question2", label="is_duplicate", labels=("0", "1"), metrics=("f1", "accuracy"),
             test_id="id", dirname="QQP", test_files=(("QQP", "test.tsv"),)),
    TaskSpec("mnli", "sentence1", "sentence2", label="gold_label", labels=_NLI3, dirname="MNLI",
             dev_files=(("m", "dev_matched.tsv"), ("mm", "dev_mismatched.tsv")),
             test_files=(("MNLI-m", "test_matched.tsv"), ("MNLI-mm", "test_mismatched.tsv"))),
    TaskSpec("qnli", "question", "sentence", labels=_NLI2, dirname="QNLI", test_files=(("QNLI", "test.tsv"),)),
    TaskSpec("rte", "sentence1", "sentence2", labels=_NLI2, dirname="RTE", test_files=(("RTE", "test.tsv"),)),
    TaskSpec("wnli", "sentence1", "sentence2", labels=("0", "1"), dirname="WNLI", test_files=(("WNLI", "test.tsv"),)),
)}


@dataclass(frozen=True)
class Example:
    guid: str
    """``file:line`` for train/dev rows; the test file's id for test rows."""
    text_a: str
    text_b: str | None
    label: int | float | None
    """Class id, float target (regression), or None for test rows."""


@dataclass
class ReadReport:
    """What a read kept and skipped; ``bad`` counts skipped rows by reason."""

    uri: str
    num_rows: int = 0
    num_kept: int = 0
    bad: collections.Counter = field(default_factory=collections.Counter)
    samples: list[str] = field(default_factory=list)

    @property
    def num_bad(self) -> int:
        return sum(self.bad.values())

    def to_dict(self) -> dict:
        return {"uri": self.uri, "num_rows": self.num_rows, "num_kept": self.num_kept, "num_bad": self.num_bad,
                "bad_by_reason": dict(self.bad), "bad_samples": list(self.samples)}


class BadRowError(ValueError):
    """A malformed row under ``on_bad_row='raise'``; the message names file and line."""


class _BadRow(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def _parse_row(spec: TaskSpec, fields: list[str], col: dict[str, int], with_label: bool,
               ) -> tuple[str, str | None, int | float | None]:
    """One row -> (text_a, text_b, label); raises _BadRow for a bad row."""
    if len(fields) != len(col):
        raise _BadRow("wrong column count", f"{len(fields)} instead of {len(col)}")
    text_a = fields[col[spec.text_a]]
    text_b = fields[col[spec.text_b]] if spec.text_b is not None else None
    if not text_a.strip() or (text_b is not None and not text_b.strip()):
        raise _BadRow("empty text")
    if not with_label:
        return text_a, text_b, None
    raw = fields[col[spec.label]].strip()
    if raw == "":
        raise _BadRow("missing label")
    if spec.is_regression:
        try:
            return text_a, text_b, float(raw)
        except ValueError:
            raise _BadRow("non-numeric label", repr(raw[:30])) from None
    if raw not in spec.labels:
        raise _BadRow("unknown label", repr(raw[:30]))
    return text_a, text_b, spec.labels.index(raw)


def _column_index(spec: TaskSpec, names: list[str], uri: str, needed: list[str]) -> dict[str, int]:
    col = {name: i for i, name in enumerate(names)}
    missing = [n for n in needed if n not in col]
    if missing:
        raise BadRowError(f"{uri}:1: header {names} lacks column(s) {missing} that task {spec.name} needs")
    return col


def read_tsv(uri: str, spec: TaskSpec, split: Literal["train", "dev", "test"],
             on_bad_row: Literal["count", "raise"] = "count") -> tuple[list[Example], ReadReport]:
    """Read one official GLUE file; returns the good examples and a report of the skipped rows."""
    with_label = split != "test"
    report = ReadReport(uri)
    examples: list[Example] = []
    lines = storage.iter_lines(uri, encoding="utf-8-sig")  # -sig: drops a leading BOM (MRPC's files have one)
    headerless = bool(spec.headerless_columns) and with_label
    if headerless:
        names, first_line = list(spec.headerless_columns), 1
    else:
        header = next(lines, None)
        if header is None:
            raise BadRowError(f"{uri}:1: empty file, expected a header row")
        names, first_line = header.rstrip("\r\n").split("\t"), 2
    needed = [spec.text_a] + ([spec.text_b] if spec.text_b else []) + ([spec.label] if with_label else [spec.test_id])
    col = _column_index(spec, names, uri, needed)
    for lineno, line in enumerate(lines, start=first_line):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        report.num_rows += 1
        try:
            text_a, text_b, label = _parse_row(spec, line.split("\t"), col, with_label)
        except _BadRow as e:
            reason = e.reason
            if on_bad_row == "raise":
                raise BadRowError(f"{uri}:{lineno}: {e}") from None
            report.bad[reason] += 1
            if len(report.samples) < MAX_BAD_SAMPLES:
                report.samples.append(f"{uri}:{lineno}: {e}")
            continue
        guid = line.split("\t")[col[spec.test_id]] if not with_label else f"{uri}:{lineno}"
        examples.append(Example(guid, text_a, text_b, label))
    report.num_kept = len(examples)
    return examples, report


def task_uri(data_root: str, spec: TaskSpec, filename: str) -> str:
    return storage.join(data_root, spec.dirname, filename) if spec.dirname else storage.join(data_root, filename)


def format_predictions(spec: TaskSpec, ids: list[str], predictions: list) -> str:
    """A leaderboard submission file: header ``index\\tprediction``, labels as their strings."""
    rows = ["index\tprediction"]
    for i, p in zip(ids, predictions):
        value = f"{float(p):.3f}" if spec.is_regression else spec.labels[int(p)]
        rows.append(f"{i}\t{value}")
    return "\n".join(rows) + "\n"


# The real labelled task shipped in the repo for offline demos and tests (see pipelines/demo/task/README.md).
DEMO_TASK = TaskSpec("movie_sentiment", "sentence", labels=("0", "1"), metrics=("accuracy",))
DEMO_TASK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo", "task")
