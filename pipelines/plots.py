"""The run's report: a loss-curve PNG (pretraining MLM/NSP loss per step and phase, fine-tuning train
loss per epoch) and a results table (markdown + JSON), written under ``{root}/report/{key}/``.

    from pipelines.plots import plot_loss_curves
    plot_loss_curves({"phase0": rows}, {"movie_sentiment": epochs}, "loss.png")
"""
from __future__ import annotations

import io
import json
import posixpath
from typing import Any

from pipelines import storage


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


def results_table(summary: dict[str, Any], pretrain: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: the last pretraining metrics of each phase, then the fine-tuning table of ``results.md``
    (one row per task, labelled dev, with both GLUE averages)."""
    lines = ["| pretraining | steps | MLM loss | MLM acc | NSP loss | NSP acc |", "|---|---|---|---|---|---|"]
    for phase, rows in pretrain.items():
        if rows:
            r = rows[-1]
            lines.append(f"| {phase} | {r['step']} | {r['mlm_loss']:.3f} | {r['mlm_accuracy']:.3f} | "
                         f"{r['nsp_loss']:.3f} | {r['nsp_accuracy']:.3f} |")
    from pipelines.finetune.jobs import results_markdown  # one fine-tuning table for both reports

    return "\n".join(lines) + "\n\n" + results_markdown(summary)


def write_report(root: str, key: str, inputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """The ``report`` stage: results.md, results.json and loss_curves.png under ``{root}/report/{key}/``."""
    out = storage.join(root, "report", key)
    summary = storage.read_json(inputs["finetune"]["output"])
    pretrain = pretrain_curves(inputs["pretrain"]["output"])
    table = results_table(summary, pretrain)
    storage.write_bytes_atomic(storage.join(out, "results.md"), table.encode("utf-8"))
    storage.write_json_atomic(storage.join(out, "results.json"), {
        "finetune": summary, "pretrain_final": {p: rows[-1] for p, rows in pretrain.items() if rows}})
    png = plot_loss_curves(pretrain, finetune_curves(summary), storage.join(out, "loss_curves.png"),
                           title=f"run {root}")
    return {"output": storage.join(out, "results.md"), "plot": png, "json": storage.join(out, "results.json")}
