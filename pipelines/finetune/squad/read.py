"""SQuAD's official JSON (v1.1 or v2.0) -> one ``SquadExample`` per question; bad questions (empty
context or question, answer text not at its ``answer_start``, an answerable question without
answers) are counted in the read report, or raise with ``on_bad_row="raise"``.
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


def read_squad(uri: str, on_bad_row: Literal["count", "raise"] = "count") -> tuple[list[SquadExample], ReadReport]:
    """Questions of an official SQuAD JSON file (v1.1 or v2.0); bad ones are counted in the report."""
    data = storage.read_json(uri)
    if not isinstance(data, dict) or "data" not in data:
        raise BadRowError(f"{uri}: not a SQuAD file (no top-level 'data')")
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
