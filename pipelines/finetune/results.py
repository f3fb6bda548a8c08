"""The fine-tuning results: the run's summary (``summarize``) and its table (``task_table``), the lines of
``results.md`` that the finetune stage writes and that the report stage puts under its pretraining lines.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.finetune import glue, metrics

if TYPE_CHECKING:
    from pipelines.finetune.config import FinetuneConfig

SCRATCH = " (from scratch)"
"""The suffix of a task's from-random-init row (its ``scratch_baseline``)."""


def summarize(results: dict[str, dict], cfg: FinetuneConfig) -> dict:
    """The run's summary. Every score is on dev sets (the GLUE test labels are private), so both GLUE
    averages are dev averages: ``glue_score`` the leaderboard's all-task macro-average over the GLUE tasks
    present (WNLI included), ``glue_paper_average`` the BERT paper's Table 1 Average (WNLI left out)."""
    ok = {name: r for name, r in results.items() if r.get("status") != "failed" and r.get("score") is not None}
    glue_scores = {name: r["score"] for name, r in ok.items() if name in glue.GLUE_TASKS}
    paper, paper_evals = metrics.paper_glue_average({name: r["dev"] for name, r in ok.items()
                                                     if name in glue.GLUE_TASKS})
    return {"tasks": results, "glue_tasks": sorted(glue_scores),
            "glue_score": metrics.glue_score(glue_scores) if glue_scores else None,
            "glue_paper_average": paper, "glue_paper_evals": paper_evals, "split": "dev",
            "num_failed": sum(r.get("status") == "failed" for r in results.values())}


_SQUAD_V2_KEYS = ("f1", "exact_match", "null_threshold", "null_threshold_tuned_on_dev", "f1_at_threshold_0",
                  "exact_match_at_threshold_0", "best_f1")


def _dev_cell(evals: dict[str, dict[str, float]]) -> str:
    """Every dev metric; a SQuAD v2.0 eval says where its null threshold came from and scores threshold 0 too."""
    cells = []
    for ev, m in evals.items():
        v2 = "f1_at_threshold_0" in m
        rest = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if not (v2 and k in _SQUAD_V2_KEYS))
        if v2:
            source = "tuned on this dev set" if m["null_threshold_tuned_on_dev"] else "set in the config"
            rest = (f"f1 {m['f1']:.4g}, exact_match {m['exact_match']:.4g} at null threshold {m['null_threshold']:.4g} "
                    f"({source}); at threshold 0: f1 {m['f1_at_threshold_0']:.4g}, exact_match "
                    f"{m['exact_match_at_threshold_0']:.4g}" + (f"; {rest}" if rest else ""))
        cells.append(f"{ev}: {rest}")
    return "; ".join(cells)


def _glue_footer(summary: dict) -> list[str]:
    lines = []
    if summary["glue_score"] is not None:
        lines.append(f"\nGLUE score ({len(summary['glue_tasks'])} of {len(glue.GLUE_TASKS)} tasks: "
                     f"{', '.join(summary['glue_tasks'])}; dev; all-task average as the leaderboard takes it, "
                     f"WNLI included when present): **{summary['glue_score']:.4f}**")
    if summary.get("glue_paper_average") is not None:
        lines.append(f"\nGLUE average as the BERT paper computes it (dev; {', '.join(summary['glue_paper_evals'])}; "
                     f"one number per dev set, MNLI-m and -mm apart; F1 for MRPC/QQP, Spearman for STS-B, Matthews "
                     f"for CoLA, accuracy elsewhere; WNLI excluded): **{summary['glue_paper_average']:.4f}**")
    return lines


def _task_row(name: str, status: str, dev: dict, score: float, lr: float, spe: float | None, bad) -> str:
    return (f"| {name} | {status} | {_dev_cell(dev)} | {score:.4f} | {lr:g} | "
            f"{f'{spe:.1f}' if spe is not None else ''} | {bad} |")


def task_table(summary: dict) -> list[str]:
    """The fine-tuning table's lines: one row per task (status, every dev metric, the task score, best lr
    and time per epoch), under a task with a ``scratch_baseline`` the same fine-tuning from random init
    (``{task} (from scratch)``), then the per-type entity F1 of NER tasks and the two GLUE averages, each
    labelled dev."""
    lines = ["| task | status | dev metrics | score | lr | s/epoch | bad rows |", "|---|---|---|---|---|---|---|"]
    by_type = []
    for name, r in summary["tasks"].items():
        if r.get("status") == "failed":
            lines.append(f"| {name} | failed | {r['error'].splitlines()[-1][:120]} | | | | |")
            continue
        bad = sum(rep.get("num_bad", 0) for rep in r.get("data_reports", []))
        lines.append(_task_row(name, r["status"], r["dev"], r["score"], r["best_learning_rate"],
                               r.get("seconds_per_epoch"), bad))
        if "scratch" in r:  # the same fine-tuning from random init: what pretraining bought
            s = r["scratch"]
            lines.append(_task_row(f"{name}{SCRATCH}", r["status"], s["dev"], s["score"], s["learning_rate"],
                                   s.get("seconds_per_epoch"), bad))
        for ev, detail in (r.get("dev_detail") or {}).items():
            types = ", ".join(f"{t} {d['f1']:.4f} (P {d['precision']:.4f}, R {d['recall']:.4f}, {d['num_gold']} gold)"
                              for t, d in detail["per_type"].items())
            by_type.append(f"- {ev} (dev) entity F1 by type: {types}; {detail.get('num_truncated_words', 0)} words "
                           f"past max_seq_length and {detail.get('num_empty_words', 0)} without a WordPiece are "
                           f"predicted O and scored")
    if by_type:
        lines += [""] + by_type
    lines += _glue_footer(summary)
    return lines
