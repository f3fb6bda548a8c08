"""The ``report`` stage: a loss-curve PNG (pretraining MLM/NSP loss per step and phase, fine-tuning train
loss per epoch) and the results table (markdown + JSON), written under ``{root}/report/{key}/``. The
table writer (``results_markdown``) is also the one the fine-tuning stage writes its ``results.md`` with.

    from pipelines.report import plot_loss_curves
    plot_loss_curves({"phase0": rows}, {"movie_sentiment": epochs}, "loss.png")
"""
from __future__ import annotations

import io
import json
import posixpath
from typing import Any

from pipelines import storage
from pipelines.finetune import glue


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storage.read_bytes(uri).decode("utf-8").splitlines() if line.strip()]


def pretrain_curves(export_uri: str) -> dict[str, list[dict[str, Any]]]:
    """Metric rows per phase of the pretraining run whose last export is ``export_uri``
    (layout ``{run}/phase{k}/export`` with ``{run}/phase{k}/metrics.jsonl``)."""
    run = posixpath.dirname(posixpath.dirname(export_uri.rstrip("/")))
    curves = {}
    k = 0
    while storage.exists(storage.join(run, f"phase{k}", "export")):
        metrics = storage.join(run, f"phase{k}", "metrics.jsonl")
        curves[f"phase{k}"] = read_jsonl(metrics) if storage.exists(metrics) else []
        k += 1
    return curves


def finetune_curves(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per task, the epochs (train_loss, dev metrics) of its best learning rate."""
    curves = {}
    for name, result in summary.get("tasks", {}).items():
        if result.get("status") == "failed":
            continue
        lr = result.get("best_learning_rate")
        if lr is None:
            continue
        uri = storage.join(result["output_uri"], f"lr_{lr:g}", "metrics.json")
        if storage.exists(uri):
            curves[name] = storage.read_json(uri).get("epochs", [])
    return curves


def plot_loss_curves(pretrain: dict[str, list[dict[str, Any]]], finetune: dict[str, list[dict[str, Any]]],
                     out_uri: str, title: str = "") -> str:
    """Two panels: pretraining MLM and NSP loss against the global step, and fine-tuning loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_pre, ax_ft) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for phase, rows in pretrain.items():
        steps = [offset + r["step"] for r in rows]
        if rows:
            ax_pre.plot(steps, [r["mlm_loss"] for r in rows], label=f"MLM loss ({phase})")
            ax_pre.plot(steps, [r["nsp_loss"] for r in rows], "--", label=f"NSP loss ({phase})")
            offset = steps[-1]
    ax_pre.set(xlabel="optimizer step", ylabel="loss", title="pretraining")
    for task, epochs in finetune.items():
        ax_ft.plot([e["epoch"] for e in epochs], [e["train_loss"] for e in epochs], "o-", label=task)
    ax_ft.set(xlabel="epoch", ylabel="train loss", title="fine-tuning")
    for ax in (ax_pre, ax_ft):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes_atomic(out_uri, buf.getvalue())
    return out_uri


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


def results_markdown(summary: dict, pretrain: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The results table (markdown), the one both ``results.md`` files hold: with ``pretrain`` (metric rows
    per phase) first the last pretraining metrics of each phase; then one row per fine-tuning task:
    status, every dev metric, the task score, best lr and time per epoch, and under a task with a
    ``scratch_baseline`` the same fine-tuning from random init (``{task} (from scratch)``); then the per-type
    entity F1 of NER tasks and the two GLUE averages, each labelled dev."""
    head = _pretrain_rows(pretrain) + [""] if pretrain is not None else []
    lines = head + ["| task | status | dev metrics | score | lr | s/epoch | bad rows |", "|---|---|---|---|---|---|---|"]
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
            lines.append(_task_row(f"{name} (from scratch)", r["status"], s["dev"], s["score"], s["learning_rate"],
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
    return "\n".join(lines) + "\n"


def _pretrain_rows(pretrain: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| pretraining | steps | MLM loss | MLM acc | NSP loss | NSP acc |", "|---|---|---|---|---|---|"]
    for phase, rows in pretrain.items():
        if rows:
            r = rows[-1]
            lines.append(f"| {phase} | {r['step']} | {r['mlm_loss']:.3f} | {r['mlm_accuracy']:.3f} | "
                         f"{r['nsp_loss']:.3f} | {r['nsp_accuracy']:.3f} |")
    return lines


def write_report(root: str, key: str, inputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """The ``report`` stage: results.md, results.json and loss_curves.png under ``{root}/report/{key}/``."""
    out = storage.join(root, "report", key)
    summary = storage.read_json(inputs["finetune"]["output"])
    pretrain = pretrain_curves(inputs["pretrain"]["output"])
    table = results_markdown(summary, pretrain)
    storage.write_bytes_atomic(storage.join(out, "results.md"), table.encode("utf-8"))
    storage.write_json_atomic(storage.join(out, "results.json"), {
        "finetune": summary, "pretrain_final": {p: rows[-1] for p, rows in pretrain.items() if rows}})
    png = plot_loss_curves(pretrain, finetune_curves(summary), storage.join(out, "loss_curves.png"),
                           title=f"run {root}")
    return {"output": storage.join(out, "results.md"), "plot": png, "json": storage.join(out, "results.json")}


# --- the BERT DAG's adapter (``pipelines.bert_dag``) --------------------------------------------------
def dag_adapter(ctx) -> dict[str, str]:
    return write_report(ctx.root, ctx.stage_hash, ctx.inputs)
