"""SQuAD's official JSON (v1.1 or v2.0) -> one ``SquadExample`` per question; bad questions (empty
context or question, answer text not at its ``answer_start``, an answerable question without
answers) are counted in the read report, or raise with ``on_bad_row="raise"``.

Given the task's ``version``, a file of the other version is refused before anything trains, naming
the file and the field that tells: the top-level ``version`` ("1.1" / "v2.0"), or, in a file without
one, a question's ``is_impossible`` (only v2.0 has it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines import storage
from pipelines.finetune.glue import MAX_BAD_SAMPLES, BadRowError, ReadReport


@dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    """(text, answer_start) gold answers; empty for an unanswerable v2.0 question."""
    is_impossible: bool = False
    answer_ok: bool = True
    """False when some answer's text is not at its answer_start in the context."""


class SquadVersionError(ValueError):
    """A v2.0 file given to a v1.1 task or the reverse; the message names the file and the field."""


_VERSIONS = {"1.1": "v1.1", "v1.1": "v1.1", "2.0": "v2.0", "v2.0": "v2.0"}


def check_version(data: dict, uri: str, version: str) -> None:
    """Raise ``SquadVersionError`` unless the parsed file ``data`` is a SQuAD ``version`` file."""
    declared = data.get("version")
    if declared is not None:
        if _VERSIONS.get(str(declared)) != version:
            raise SquadVersionError(f"{uri}: field 'version' is {declared!r}, but this task reads SQuAD {version} "
                                    f"files (set squad.version to match the file, or give the {version} file)")
        return
    flagged = next(((a, p, qa.get("id", "?")) for a, article in enumerate(data.get("data", []))
                    for p, para in enumerate(article.get("paragraphs", [])) for qa in para.get("qas", [])
                    if "is_impossible" in qa), None)
    if version == "v1.1" and flagged is not None:
        a, p, qid = flagged
        raise SquadVersionError(f"{uri}: field 'is_impossible' at data[{a}].paragraphs[{p}] question {qid} "
                                f"makes this a SQuAD v2.0 file, but this task reads v1.1 files")
    if version == "v2.0" and flagged is None:
        raise SquadVersionError(f"{uri}: no field 'version' and no question has 'is_impossible': a SQuAD v1.1 "
                                f"file, but this task reads v2.0 files")


def read_squad(uri: str, on_bad_row: Literal["count", "raise"] = "count", version: str | None = None,
               ) -> tuple[list[SquadExample], ReadReport]:
    """Questions of an official SQuAD JSON file (v1.1 or v2.0); bad ones are counted in the report.
    With ``version`` the file must be of that version (``check_version``)."""
    data = storage.read_json(uri)
    if not isinstance(data, dict) or "data" not in data:
        raise BadRowError(f"{uri}: not a SQuAD file (no top-level 'data')")
    if version is not None:
        check_version(data, uri, version)
    report, examples = ReadReport(uri), []

    def bad(reason: str, where: str) -> None:
        if on_bad_row == "raise":
            raise BadRowError(f"{uri}: {where}: {reason}")
        report.bad[reason] += 1
        if len(report.samples) < MAX_BAD_SAMPLES:
            report.samples.append(f"{uri}: {where}: {reason}")

    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context", "")
            for qa in para.get("qas", []):
                report.num_rows += 1
                where = f"data[{a}].paragraphs[{p}] question {qa.get('id', '?')}"
                if not context.strip():
                    bad("empty context", where)
                    continue
                if not qa.get("question", "").strip():
                    bad("empty question", where)
                    continue
                answers = [(x["text"], int(x["answer_start"])) for x in qa.get("answers", [])]
                impossible = bool(qa.get("is_impossible", False))
                ok = all(context[s:s + len(t)] == t for t, s in answers)
                if not ok:
                    bad("answer text not at answer_start", where)
                if not impossible and not answers:
                    bad("answerable question without answers", where)
                    continue
                examples.append(SquadExample(qa["id"], qa["question"], context, answers, impossible, ok))
    report.num_kept = len(examples)
    return examples, report
