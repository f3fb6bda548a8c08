"""A multiple-choice file (JSONL or CSV, as its ``ChoiceSpec`` says) -> one ``ChoiceExample`` per question.

Bad rows are counted by reason in a ``ReadReport`` with the first few located as ``file:line`` (or
raise, naming file and line, with ``on_bad_row="raise"``), as the GLUE and SQuAD readers do: a row that
is not JSON, an empty context, a missing or empty choice, a missing label, a label that names no choice,
a choice text repeated within the question (unless the spec allows it). A row with another number of
choices than the task's is not a bad row but a file for another task: it always raises, naming the
file, the line and the field.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from pipelines import storage
from pipelines.finetune.glue import MAX_BAD_SAMPLES, BadRowError, ReadReport, _BadRow
from pipelines.finetune.multiple_choice.spec import ChoiceSpec


@dataclass(frozen=True)
class ChoiceExample:
    guid: str
    """``file:line``."""
    context: str
    choices: tuple[str, ...]
    label: int
    """Index of the right choice."""


class ChoiceCountError(BadRowError):
    """A row with a different number of choices than the task's; the message names file, line and field."""


def _rows(uri: str, spec: ChoiceSpec) -> Iterator[tuple[int, Any]]:
    """(line number, row): a dict, or the raw line when it is not JSON."""
    lines = storage.iter_lines(uri, encoding="utf-8-sig")
    if spec.file_format == "csv":
        reader = csv.DictReader(lines)
        for row in reader:
            yield reader.line_num, row
        return
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                yield lineno, line


def _field(row: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _choices(row: dict, spec: ChoiceSpec, where: str) -> tuple[list[str], list[str | None]]:
    """The choice texts and, for choice objects, their labels."""
    if spec.choice_list:
        items = _field(row, spec.choice_list)
        if not isinstance(items, list):
            raise _BadRow("missing choice", f"field {spec.choice_list!r} is not a list")
        if len(items) != spec.num_choices:
            raise ChoiceCountError(f"{where}: field {spec.choice_list!r} has {len(items)} choices, task {spec.name} "
                                   f"has {spec.num_choices}")
        texts = [_text(i.get("text") if isinstance(i, dict) else i) for i in items]
        labels = [i.get("label") if isinstance(i, dict) else None for i in items]
    else:
        present = [f for f in spec.choices if _field(row, f) is not None]
        if not present:
            raise ChoiceCountError(f"{where}: none of the choice fields {list(spec.choices)} of task {spec.name}")
        texts, labels = [_text(_field(row, f)) for f in spec.choices], [None] * len(spec.choices)
    if spec.choice_prefix:
        prefix = _text(_field(row, spec.choice_prefix))
        texts = [f"{prefix} {t}".strip() if t else "" for t in texts]
    missing = [i for i, t in enumerate(texts) if not t]
    if missing:
        names = [spec.choices[i] if spec.choices else f"{spec.choice_list}[{i}]" for i in missing]
        raise _BadRow("missing choice", ", ".join(names))
    if not spec.allow_duplicate_choices and len(set(texts)) < len(texts):
        raise _BadRow("duplicated choice text", repr(next(t for t in texts if texts.count(t) > 1)[:40]))
    return texts, labels


def _label(row: dict, spec: ChoiceSpec, choice_labels: list[str | None]) -> int:
    raw = _field(row, spec.label)
    if raw is None or str(raw).strip() == "":
        raise _BadRow("missing label", spec.label)
    raw = str(raw).strip()
    if any(lab is not None for lab in choice_labels):
        if raw in choice_labels:
            return choice_labels.index(raw)
    elif spec.label_values:
        if raw in spec.label_values:
            return spec.label_values.index(raw)
    elif raw.lstrip("-").isdigit() and 0 <= int(raw) < spec.num_choices:
        return int(raw)
    raise _BadRow("label names no choice", f"{spec.label} {raw!r}")


def _parse(row: Any, spec: ChoiceSpec, where: str) -> tuple[str, tuple[str, ...], int]:
    if not isinstance(row, dict):
        raise _BadRow("not a JSON object")
    parts = [_text(_field(row, f)) for f in spec.context]
    if not all(parts):
        raise _BadRow("empty context", ", ".join(f for f, p in zip(spec.context, parts) if not p))
    if spec.cue_field:
        cue = dict(spec.cues).get(_text(_field(row, spec.cue_field)))
        if cue is None:
            raise _BadRow("unknown cue", f"{spec.cue_field} {_field(row, spec.cue_field)!r}")
        parts.append(cue)
    texts, choice_labels = _choices(row, spec, where)
    return " ".join(parts), tuple(texts), _label(row, spec, choice_labels)


def read_choices(uri: str, spec: ChoiceSpec, on_bad_row: Literal["count", "raise"] = "count",
                 ) -> tuple[list[ChoiceExample], ReadReport]:
    """The questions of one file; bad rows counted in the report (or raised, naming file:line)."""
    report, examples = ReadReport(uri), []
    for lineno, row in _rows(uri, spec):
        report.num_rows += 1
        where = f"{uri}:{lineno}"
        try:
            context, choices, label = _parse(row, spec, where)
        except _BadRow as e:
            if on_bad_row == "raise":
                raise BadRowError(f"{where}: {e}") from None
            report.bad[e.reason] += 1
            if len(report.samples) < MAX_BAD_SAMPLES:
                report.samples.append(f"{where}: {e}")
            continue
        examples.append(ChoiceExample(where, context, choices, label))
    report.num_kept = len(examples)
    return examples, report


def read_choice_data(spec: ChoiceSpec, data_uri: str, on_bad_row: Literal["count", "raise"] = "count",
                     ) -> tuple[list[ChoiceExample], list[ChoiceExample], list[dict]]:
    """Train and dev questions with their read reports; both files read in full (``bert-pipeline finetune``
    does it before any training)."""
    out = []
    for name in (spec.train_file, spec.dev_file):
        uri = storage.join(data_uri, name)
        if not storage.exists(uri):
            raise FileNotFoundError(f"{uri}: missing (task {spec.name} reads {name} from {data_uri})")
        out.append(read_choices(uri, spec, on_bad_row))
    (train_rows, train_rep), (dev_rows, dev_rep) = out
    if not train_rows:
        raise ValueError(f"{train_rep.uri}: no usable training questions ({train_rep.num_bad} bad rows)")
    return train_rows, dev_rows, [train_rep.to_dict(), dev_rep.to_dict()]
