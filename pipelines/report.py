"""The ``report`` stage: a loss-curve PNG and the results table (markdown + JSON), written under
``{root}/report/{key}/``. The table writer (``results_markdown``) is also the one the fine-tuning stage
writes its ``results.md`` with.

Every signal is drawn and tabled beside its baseline: the held-out MLM loss beside a unigram predictor's
on the same masked positions, NSP accuracy beside chance (``pipelines.pretrain.heldout``), fine-tuning
from the pretrained export beside the same fine-tuning from random init (a task's ``scratch_baseline``);
the table opens with one plain line saying what they show (``headline``).

    from pipelines.report import plot_loss_curves
    plot_loss_curves({"phase0": rows}, {"movie_sentiment": epochs}, "loss.png", baselines={"phase0": heldout})
"""
from __future__ import annotations

import io
import json
import posixpath
from typing import Any

from pipelines import storage
from pipelines.finetune.results import SCRATCH, task_table


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


def pretrain_baselines(export_uri: str) -> dict[str, dict[str, Any]]:
    """Per phase with a held-out check, its baselines (``{run}/phase{k}/heldout.json``)."""
    from pipelines.pretrain.heldout import read_baselines

    run = posixpath.dirname(posixpath.dirname(export_uri.rstrip("/")))
    out = {}
    k = 0
    while storage.exists(storage.join(run, f"phase{k}", "export")):
        if (base := read_baselines(storage.join(run, f"phase{k}"))) is not None:
            out[f"phase{k}"] = base
        k += 1
    return out


def finetune_curves(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per task, the epochs (train_loss, dev metrics) of its best learning rate, and of its from-scratch
    run (``{task} (from scratch)``) where it has one."""
    curves = {}
    for name, result in summary.get("tasks", {}).items():
        if result.get("status") == "failed":
            continue
        lr = result.get("best_learning_rate")
        if lr is None:
            continue
        runs = [(name, storage.join(result["output_uri"], f"lr_{lr:g}", "metrics.json"))]
        if "scratch" in result:
            runs.append((name + SCRATCH, storage.join(result["output_uri"], "scratch",
                                                      f"lr_{result['scratch']['learning_rate']:g}", "metrics.json")))
        for label, uri in runs:
            if storage.exists(uri):
                curves[label] = storage.read_json(uri).get("epochs", [])
    return curves


def plot_loss_curves(pretrain: dict[str, list[dict[str, Any]]], finetune: dict[str, list[dict[str, Any]]],
                     out_uri: str, title: str = "", baselines: dict[str, dict[str, Any]] | None = None) -> str:
    """The report's PNG (``loss_figure``) written to ``out_uri``."""
    import matplotlib.pyplot as plt

    fig = loss_figure(pretrain, finetune, title, baselines)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes_atomic(out_uri, buf.getvalue())
    return out_uri


def loss_figure(pretrain: dict[str, list[dict[str, Any]]], finetune: dict[str, list[dict[str, Any]]],
                title: str = "", baselines: dict[str, dict[str, Any]] | None = None):
    """Four panels (a matplotlib Figure): pretraining MLM loss (training batches; held-out rows, with the
    unigram predictor's loss on the same positions) and NSP accuracy (with chance) against the global
    step; fine-tuning train loss and dev score per epoch, each task from the pretrained export (solid)
    and from random init (dashed, same colour)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    baselines = baselines or {}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_mlm, ax_nsp), (ax_loss, ax_dev) = axes
    _plot_pretraining(ax_mlm, ax_nsp, pretrain, baselines)
    _plot_finetuning(ax_loss, ax_dev, finetune)
    ax_mlm.set(xlabel="optimizer step", ylabel="MLM loss (nats)", title="pretraining: masked-word loss")
    ax_nsp.set(xlabel="optimizer step", ylabel="NSP accuracy", title="pretraining: next-sentence accuracy")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="fine-tuning: train loss")
    ax_dev.set(xlabel="epoch", ylabel="dev score", title="fine-tuning: dev score (pretrained vs from scratch)")
    for ax in (ax_loss, ax_dev):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.ravel():
        ax.margins(x=0.03, y=0.08)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _plot_pretraining(ax_mlm, ax_nsp, pretrain: dict[str, list[dict[str, Any]]],
                      baselines: dict[str, dict[str, Any]]) -> None:
    offset, heldout_losses = 0, []
    for phase, rows in pretrain.items():
        if not rows:
            continue
        steps = [offset + r["step"] for r in rows]
        held = [(offset + r["step"], r) for r in rows if "heldout_mlm_loss" in r]
        ax_mlm.plot(steps, [r["mlm_loss"] for r in rows], color="tab:blue", alpha=0.45, lw=1,
                    label=f"training batches ({phase})")
        nsp = "nsp_accuracy" in rows[0]  # the MLM-only objective has none
        if nsp:
            ax_nsp.plot(steps, [r["nsp_accuracy"] for r in rows], color="tab:blue", alpha=0.45, lw=1,
                        label=f"training batches ({phase})")
        if held:
            x = [s for s, _ in held]
            heldout_losses += [r["heldout_mlm_loss"] for _, r in held]
            ax_mlm.plot(x, [r["heldout_mlm_loss"] for _, r in held], "o-", color="tab:red", ms=4,
                        label=f"held-out rows ({phase})")
            if nsp:
                ax_nsp.plot(x, [r["heldout_nsp_accuracy"] for _, r in held], "o-", color="tab:red", ms=4,
                            label=f"held-out rows ({phase})")
        if phase in baselines:
            base = baselines[phase]
            ax_mlm.plot([steps[0], steps[-1]], [base["unigram_loss"]] * 2, "--", color="black", lw=1.2,
                        label=f"unigram predictor on the held-out words ({base['unigram_loss']:.2f})")
            if nsp:
                ax_nsp.plot([steps[0], steps[-1]], [base["nsp_majority"]] * 2, ":", color="black", lw=1.2,
                            label=f"always the commoner label, held-out ({base['nsp_majority']:.2f})")
            heldout_losses.append(base["unigram_loss"])
        offset = steps[-1]
    if offset and any(rows and "nsp_accuracy" in rows[0] for rows in pretrain.values()):
        ax_nsp.axhline(0.5, color="black", ls="--", lw=1, label="chance (0.5)")
    elif offset:
        ax_nsp.text(0.5, 0.5, "MLM-only objective: no next-sentence task", ha="center", va="center",
                    transform=ax_nsp.transAxes)
    if heldout_losses:
        # The first steps' loss (about ln(vocabulary size)) would squeeze the part that matters: the
        # held-out curve against the unigram line. Training batches above the cut run off the top.
        low, high = min(heldout_losses + [r["mlm_loss"] for rows in pretrain.values() for r in rows]), max(heldout_losses)
        ax_mlm.set_ylim(low - 0.15, high + 0.6)


def _plot_finetuning(ax_loss, ax_dev, finetune: dict[str, list[dict[str, Any]]]) -> None:
    colours = {}
    for label, epochs in finetune.items():
        task = label.removesuffix(SCRATCH)
        colour = colours.setdefault(task, f"C{len(colours)}")
        style = "s--" if label.endswith(SCRATCH) else "o-"
        name = label if label.endswith(SCRATCH) else f"{task} (pretrained)"
        x = [e["epoch"] for e in epochs]
        ax_loss.plot(x, [e["train_loss"] for e in epochs], style, color=colour, label=name)
        metric = _first_dev_metric(epochs)
        if metric is not None:
            ev, key = metric
            ax_dev.plot(x, [e["dev"][ev][key] for e in epochs], style, color=colour, label=f"{name}: {key}")


def _first_dev_metric(epochs: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(dev set, metric) drawn for a task: the first of its first dev set, when every epoch has it."""
    if not epochs or not epochs[0].get("dev"):
        return None
    ev, metrics = next(iter(epochs[0]["dev"].items()))
    key = next(iter(metrics), None)
    if key is None or not all(isinstance(e.get("dev", {}).get(ev, {}).get(key), (int, float)) for e in epochs):
        return None
    return ev, key


def results_markdown(summary: dict, pretrain: dict[str, list[dict[str, Any]]] | None = None,
                     baselines: dict[str, dict[str, Any]] | None = None) -> str:
    """The results table (markdown), the one both ``results.md`` files hold: with ``pretrain`` (metric rows
    per phase) first one plain line saying what the run shows (``headline``), the last pretraining metrics
    of each phase and, for a phase with ``baselines`` (its ``heldout.json``), its held-out scores beside
    them; then one row per fine-tuning task:
    status, every dev metric, the task score, best lr and time per epoch, and under a task with a
    ``scratch_baseline`` the same fine-tuning from random init (``{task} (from scratch)``); then the per-type
    entity F1 of NER tasks and the two GLUE averages, each labelled dev."""
    head = []
    if pretrain is not None:
        line = headline(summary, pretrain, baselines or {})
        head = ([line, ""] if line else []) + _pretrain_rows(pretrain) + [""]
        head += [row for phase, base in (baselines or {}).items() for row in _heldout_rows(phase, pretrain, base)]
    return "\n".join(head + task_table(summary)) + "\n"


def _last_heldout(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in reversed(rows) if "heldout_mlm_loss" in r), None)


def headline(summary: dict, pretrain: dict[str, list[dict[str, Any]]], baselines: dict[str, dict[str, Any]]) -> str:
    """One plain sentence: held-out MLM loss against the unigram predictor's, NSP accuracy against chance
    (with the noise of that many rows), each from-scratch fine-tuning against the pretrained one; empty
    when there is none of them."""
    parts = []
    scored = [(p, base, _last_heldout(pretrain.get(p, []))) for p, base in baselines.items()]
    scored = [(p, base, row) for p, base, row in scored if row is not None]
    if scored:
        phase, base, row = scored[-1]
        gap = base["unigram_loss"] - row["heldout_mlm_loss"]
        verdict = ("the model predicts from context, beyond word frequency" if gap > 0.05 else
                   "worse than word frequency alone" if gap < -0.05 else "no better than word frequency alone")
        parts.append(f"held-out MLM loss {row['heldout_mlm_loss']:.2f} vs {base['unigram_loss']:.2f} for a unigram "
                     f"predictor on the same masked words ({abs(gap):.2f} nats {'lower' if gap >= 0 else 'higher'}: "
                     f"{verdict})")
        # Beside chance, the constant guess of the commoner label: the rows need not be half random-next.
        noise = 1 / base["rows"] ** 0.5  # two standard errors of an accuracy near 0.5
        nsp, majority = row.get("heldout_nsp_accuracy"), base["nsp_majority"]
        if nsp is not None:  # the MLM-only objective has no NSP
            parts.append(f"NSP accuracy {nsp:.2f} vs chance 0.50 and {majority:.2f} for always guessing the commoner "
                         f"label (" + ("above both" if nsp - majority > noise else
                                       f"within +-{noise:.2f} of that guess over {base['rows']} rows: not learned") + ")")
    for name, r in summary.get("tasks", {}).items():
        if "scratch" not in r or r.get("status") == "failed":
            continue
        ev, key = next(iter(r["dev"])), next(iter(next(iter(r["dev"].values()))))
        ours, scratch = r["dev"][ev][key], r["scratch"]["dev"][ev][key]
        verdict = ("pretraining helped" if ours > scratch else "pretraining did not help" if ours < scratch
                   else "no difference")
        parts.append(f"fine-tuning {name}: dev {key} {ours:.4f} from the pretrained model vs {scratch:.4f} from "
                     f"random init ({verdict})")
    return ("What this shows: " + "; ".join(parts) + ".") if parts else ""


def _heldout_rows(phase: str, pretrain: dict[str, list[dict[str, Any]]], base: dict[str, Any]) -> list[str]:
    row = _last_heldout(pretrain.get(phase, []))
    if row is None:
        return []
    return [f"| held-out ({phase}, step {row['step']}: {base['rows']} rows, {base['masked_positions']} masked words) "
            f"| model | baseline |", "|---|---|---|",
            f"| MLM loss | {row['heldout_mlm_loss']:.3f} | {base['unigram_loss']:.3f} (unigram predictor on the same "
            f"words; corpus unigram entropy {base['unigram_entropy']:.3f}) |",
            f"| MLM acc | {row['heldout_mlm_accuracy']:.3f} | {base['unigram_accuracy']:.3f} (always the most "
            f"frequent piece) |"] + ([
            f"| NSP acc | {row['heldout_nsp_accuracy']:.3f} | 0.500 (chance; the commoner label "
            f"{base['nsp_majority']:.3f}) |"] if "heldout_nsp_accuracy" in row else []) + [""]


def _pretrain_rows(pretrain: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The last metrics line of each phase, and over the whole phase: the share of the computed positions
    that were real tokens (the rest padding to the batch's width) and real tokens per second."""
    lines = ["| pretraining | steps | MLM loss | MLM acc | NSP loss | NSP acc | real tokens | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for phase, rows in pretrain.items():
        if rows:
            r = rows[-1]
            nsp = (f"{r['nsp_loss']:.3f} | {r['nsp_accuracy']:.3f}" if "nsp_loss" in r else "- | -")
            share = [x["real_token_share"] for x in rows if "real_token_share" in x]
            rate = [x["tokens_per_s"] for x in rows if "tokens_per_s" in x]
            share_text = f"{100 * sum(share) / len(share):.1f}%" if share else "-"
            rate_text = f"{sum(rate) / len(rate):,.0f}" if rate else "-"
            lines.append(f"| {phase} | {r['step']} | {r['mlm_loss']:.3f} | {r['mlm_accuracy']:.3f} | {nsp} | "
                         f"{share_text} | {rate_text} |")
    return lines


def write_report(root: str, key: str, inputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """The ``report`` stage: results.md, results.json and loss_curves.png under ``{root}/report/{key}/``."""
    out = storage.join(root, "report", key)
    summary = storage.read_json(inputs["finetune"]["output"])
    pretrain = pretrain_curves(inputs["pretrain"]["output"])
    baselines = pretrain_baselines(inputs["pretrain"]["output"])
    table = results_markdown(summary, pretrain, baselines)
    storage.write_bytes_atomic(storage.join(out, "results.md"), table.encode("utf-8"))
    storage.write_json_atomic(storage.join(out, "results.json"), {
        "finetune": summary, "pretrain_final": {p: rows[-1] for p, rows in pretrain.items() if rows},
        "pretrain_heldout": {p: {"baselines": base, "last": _last_heldout(pretrain.get(p, []))}
                             for p, base in baselines.items()}})
    png = plot_loss_curves(pretrain, finetune_curves(summary), storage.join(out, "loss_curves.png"),
                           title=f"run {root}", baselines=baselines)
    return {"output": storage.join(out, "results.md"), "plot": png, "json": storage.join(out, "results.json")}
