"""Does a better pretraining loss give a better fine-tuned model? Named HF-layout exports (e.g. each recipe of
``bench.learning``), each fine-tuned by the project's own path (``pipelines.finetune.train.finetune_glue_task``,
the loop ``bert-pipeline finetune`` runs) on two tasks, over several seeds, beside a from-scratch row (the
first export's shape and tokenizer, random weights: the floor):

- **demo**: the task the bare demo fine-tunes (``movie_sentiment``, ``pipelines/demo/task``), with the demo
  preset's own fine-tuning hyper-parameters (``finetune.tasks[0]`` of ``pipelines/presets/demo.yaml``: lr 5e-4,
  batch 32, 3 epochs, 64 tokens, the first 2,000 training rows; all 1,164 dev rows);
- **rte**: GLUE RTE from ``../shared/data/glue_data/RTE`` (the official files: 2,490 train, 277 dev), the same
  hyper-parameters except ``--rte-max-seq`` tokens (128: sentence pairs) and every training row;
  ``--rte-epochs`` (default 3) can reduce it.

Each seed (``HyperParams.seed``: the fresh head's initialisation, dropout, shuffling; the scratch row's whole
initialisation) is run for every export in turn before the next seed (interleaved, so the box's load drifts over
all rows alike). Dev accuracy is the last epoch's (the figure ``bert-pipeline finetune`` reports). The held-out
MLM loss of each export is read from ``bench.learning`` reports (``--learning-report``: the contestant whose
``export`` is that path). Seconds: the wall time of each fine-tuning call (reading the task excluded); the load
averages (``os.getloadavg()``, 1/5/15 min) at the start and end of each task and, per row, the range of the 1-min
load before its runs.

    python -m bench.recipe_finetune \\
        --export padded=/tmp/bl/real/ours-padded-1303/pretrain/ce35f76950a06413/phase0/export \\
        --export binned=/tmp/bl/real/ours-binned-1457/pretrain/3e7b523e116f2a50/phase0/export \\
        --export packed=/tmp/bl/real/ours-packed-1607/pretrain/b39a3d0ed314ccac/phase0/export \\
        --export hf=/tmp/bl/hf748/hf/export \\
        --learning-report /tmp/bl/real.json /tmp/bl/hf748.json --out /tmp/rf.json
    python -m bench.recipe_finetune --export a=EXPORT --tasks demo --seeds 0 --no-scratch   # one run: the cost
    python -m bench.recipe_finetune ... --out /tmp/rf.json --resume     # skip the runs /tmp/rf.json already holds
    python -m bench.recipe_finetune ... --rte-epochs 2                   # REDUCED: RTE's schedule over 2 epochs
    # an export fine-tuned later by itself (--no-scratch), then one table of both runs:
    python -m bench.recipe_finetune --export hf=/tmp/bl/hf748/hf/export --no-scratch ... --out /tmp/rf_hf.json
    python -m bench.recipe_finetune --combine /tmp/rf.json /tmp/rf_hf.json --md /tmp/rf.md

Prints a markdown table per task (``--md`` writes them to a file); ``--out`` holds every run (per-epoch dev
accuracy included), written after each run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

from bench.finetune import shared_data_dir
from pipelines import storage

SCRATCH = "scratch"
TASKS = ("demo", "rte")


# --- pure helpers (tested) -------------------------------------------------------------------------
def parse_exports(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` items -> {name: path}, in order; names unique and not ``scratch``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--export takes NAME=PATH, got {item!r}")
        if name in out or name == SCRATCH:
            raise ValueError(f"--export name {name!r} is repeated or reserved")
        out[name] = path
    return out


def heldout_losses(reports: list[dict], exports: dict[str, str]) -> dict[str, float | None]:
    """Each export's held-out MLM loss from ``bench.learning`` reports: the contestant whose ``export`` is
    that path (normalised); None where no report has it."""
    by_path = {}
    for report in reports:
        for name in report.get("order", []):
            r = report.get(name, {})
            if r.get("export") and "heldout_mlm_loss" in r:
                by_path[os.path.normpath(r["export"])] = r["heldout_mlm_loss"]
    return {name: by_path.get(os.path.normpath(path)) for name, path in exports.items()}


def summarize(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"n": len(values), "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _load(v) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "?"


def load_span(info: dict) -> str:
    """'A at the start, B at the end' of a task, or of each part of a merged report."""
    parts = info.get("load_parts") or [[info.get("load_average_start"), info.get("load_average_end")]]
    return "; ".join(f"{_load(a)} at the start, {_load(b)} at the end" for a, b in parts)


def task_table(task: str, runs: list[dict], rows: list[str], seeds: list[int], losses: dict) -> str:
    """A markdown table for one task: per row the export's held-out MLM loss, dev accuracy (%) per seed, their
    mean +- sd, the mean seconds per run (and the mean CPU seconds of its training epochs, where every run has
    them) and the range of the 1-min load before its runs. ``runs``: dicts with task, row, seed, dev_accuracy
    (fraction), seconds, load_before, load_after, optionally cpu_seconds."""
    head = (["recipe", "held-out MLM loss"] + [f"dev acc seed {s}" for s in seeds]
            + ["mean +- sd", "s per run (CPU s)", "1-min load before runs"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        mine = {r["seed"]: r for r in runs if r["task"] == task and r["row"] == row}
        if not mine:
            continue
        cells = [row, "" if losses.get(row) is None else f"{losses[row]:.3f}"]
        cells += [f"{100 * mine[s]['dev_accuracy']:.2f}" if s in mine else "" for s in seeds]
        summary = summarize([100 * r["dev_accuracy"] for r in mine.values()])
        cells.append(f"{summary['mean']:.2f} +- {summary['sd']:.2f}")
        cpu = [r["cpu_seconds"] for r in mine.values() if "cpu_seconds" in r]
        cells.append(f"{statistics.mean(r['seconds'] for r in mine.values()):.0f}"
                     + (f" ({statistics.mean(cpu):.0f})" if len(cpu) == len(mine) else ""))
        loads = [r["load_before"][0] for r in mine.values()]
        cells.append(f"{min(loads):.2f}-{max(loads):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_reports(reports: list[dict]) -> dict:
    """Several runs of this bench (e.g. one export fine-tuned later, by itself) -> one report: rows in order of
    appearance, the scratch row last; every run; each task's settings from the first report that has it, and the
    load average at the start and end of every part (``load_parts``)."""
    rows, seeds, tasks, losses, runs, infos = [], [], [], {}, [], {}
    for report in reports:
        s = report["settings"]
        rows += [r for r in s["rows"] if r not in rows]
        seeds += [x for x in s["seeds"] if x not in seeds]
        tasks += [t for t in s["tasks"] if t not in tasks]
        losses.update({k: v for k, v in report["heldout_mlm_loss"].items() if v is not None or k not in losses})
        runs += report["runs"]
        for task, info in report["tasks"].items():
            merged = infos.setdefault(task, {**{k: v for k, v in info.items()
                                                if k not in ("load_average_start", "load_average_end")},
                                             "load_parts": []})
            if merged["hyper_params"] != info["hyper_params"]:
                raise ValueError(f"task {task}: the reports' hyper-parameters differ")
            merged["load_parts"].append([info.get("load_average_start"), info.get("load_average_end")])
    rows = [r for r in rows if r != SCRATCH] + [r for r in rows if r == SCRATCH]
    return {"settings": {**reports[0]["settings"], "rows": rows, "seeds": seeds, "tasks": tasks,
                         "exports": {k: v for r in reports for k, v in r["settings"]["exports"].items()}},
            "heldout_mlm_loss": losses, "tasks": infos, "runs": runs}


def majority_accuracy(labels: list) -> float:
    """The dev accuracy of always answering the commonest label."""
    return max(labels.count(v) for v in set(labels)) / len(labels)


# --- the runs -------------------------------------------------------------------------------------
def task_setup(task: str, args) -> tuple:
    """(spec, data, hyper-parameters without the seed) of ``demo`` or ``rte``."""
    from pipelines.finetune import glue, train
    from pipelines.presets import load_run_config
    from pipelines.storage import resolve_path

    job = load_run_config("demo", []).finetune.tasks[0]
    if task == "demo":
        return job.spec, train.read_task_data(job.spec, resolve_path(job.data_uri)), job.hyper_params
    spec = glue.GLUE_TASKS["rte"]
    data = train.read_task_data(spec, glue.task_uri(os.path.join(args.shared_data, "glue_data"), spec, ""),
                                on_bad_row="raise")
    hp = dataclasses.replace(job.hyper_params, max_seq_length=args.rte_max_seq, num_epochs=args.rte_epochs,
                             max_train_examples=0)
    return spec, data, hp


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", action="append", default=[], metavar="NAME=PATH",
                    help="an HF-layout export to fine-tune (repeat; the first also gives the scratch row its shape)")
    ap.add_argument("--learning-report", nargs="*", default=[], help="bench.learning JSON reports (held-out losses)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-scratch", action="store_true", help="leave out the from-scratch row")
    ap.add_argument("--rte-epochs", type=int, default=3)
    ap.add_argument("--rte-max-seq", type=int, default=128)
    ap.add_argument("--shared-data", default=shared_data_dir())
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="JSON of every run, rewritten after each")
    ap.add_argument("--resume", action="store_true", help="keep the runs --out already holds (same settings)")
    ap.add_argument("--md", default="", help="write the tables here too")
    ap.add_argument("--combine", nargs="+", default=[], metavar="JSON",
                    help="run nothing: the tables of these --out files together (--out, --md: where to write them)")
    args = ap.parse_args(argv)
    if args.combine:
        parts = []
        for path in args.combine:
            with open(path, encoding="utf-8") as f:
                parts.append(json.load(f))
        merged = merge_reports(parts)
        return _emit(merged, args.out, args.md)
    if not args.export:
        ap.error("--export NAME=PATH is required (or --combine)")

    import torch

    from pipelines.finetune import train

    torch.set_num_threads(args.threads)
    exports = parse_exports(args.export)
    reports = []
    for path in args.learning_report:
        with open(path, encoding="utf-8") as f:
            reports.append(json.load(f))
    losses = heldout_losses(reports, exports)
    rows = list(exports) + ([] if args.no_scratch else [SCRATCH])
    settings = {"exports": exports, "tasks": args.tasks, "seeds": args.seeds, "rows": rows,
                "rte_epochs": args.rte_epochs, "rte_max_seq": args.rte_max_seq, "threads": args.threads}
    report: dict = {"settings": settings, "heldout_mlm_loss": losses, "cpu_count": os.cpu_count(), "tasks": {},
                    "runs": []}
    if args.resume and args.out and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            old = json.load(f)
        if old["settings"] != settings:
            raise SystemExit(f"--resume: {args.out} was written with other settings: {old['settings']}")
        report = old
    done = {(r["task"], r["row"], r["seed"]) for r in report["runs"]}

    def save() -> None:
        if args.out:
            storage.write_json_atomic(args.out, report)

    for task in args.tasks:
        spec, data, hp = task_setup(task, args)
        info = report["tasks"].setdefault(task, {})
        dev = next(iter(data.dev.values()))
        info.update(spec=spec.name, hyper_params=dataclasses.asdict(hp), train_rows=len(data.train),
                    dev_rows=len(dev), majority_dev_accuracy=majority_accuracy([e.label for e in dev]))
        info.setdefault("load_average_start", os.getloadavg())
        for seed in args.seeds:
            for row in rows:
                if (task, row, seed) in done:
                    continue
                checkpoint = exports[rows[0]] if row == SCRATCH else exports[row]
                before, start = os.getloadavg(), time.perf_counter()
                result = train.finetune_glue_task(spec, data, checkpoint, dataclasses.replace(hp, seed=seed),
                                                  from_scratch=row == SCRATCH)
                seconds = time.perf_counter() - start
                run = {"task": task, "row": row, "seed": seed, "dev_accuracy": result["dev"][spec.name]["accuracy"],
                       "epoch_dev_accuracy": [h["dev"][spec.name]["accuracy"] for h in result["epochs"]],
                       "train_loss": [h["train_loss"] for h in result["epochs"]], "seconds": seconds,
                       "cpu_seconds": sum(h["epoch_cpu_seconds"] for h in result["epochs"]),
                       "load_before": before, "load_after": os.getloadavg()}
                report["runs"].append(run)
                save()
                print(f"[recipe_finetune] {task} {row} seed {seed}: dev acc {100 * run['dev_accuracy']:.2f} "
                      f"(epochs {' '.join(f'{100 * a:.1f}' for a in run['epoch_dev_accuracy'])}), {seconds:.0f} s, "
                      f"load {before[0]:.2f} -> {run['load_after'][0]:.2f}", flush=True)
        info["load_average_end"] = os.getloadavg()
        save()
    return _emit(report, "", args.md)


def _emit(report: dict, out: str, md: str) -> dict:
    text = markdown(report)
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if md:
        with open(md, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return report


def markdown(report: dict) -> str:
    s = report["settings"]
    parts = []
    for task in s["tasks"]:
        info = report["tasks"].get(task)
        if not info:
            continue
        hp = info["hyper_params"]
        parts.append(f"**{task}** ({info['spec']}: {info['train_rows']} train rows, {info['dev_rows']} dev rows, "
                     f"commonest label {100 * info['majority_dev_accuracy']:.2f}%; lr {hp['learning_rate']:g}, "
                     f"batch {hp['batch_size']}, {hp['num_epochs']} epochs, {hp['max_seq_length']} tokens"
                     + (f", first {hp['max_train_examples']} train rows" if hp["max_train_examples"] else "")
                     + f"; load average (1/5/15 min) {load_span(info)})\n")
        parts.append(task_table(task, report["runs"], s["rows"], s["seeds"], report["heldout_mlm_loss"]) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
