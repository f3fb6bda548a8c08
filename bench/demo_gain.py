"""What the demo's pretraining buys: its fine-tuning task from the demo run's export against the same
fine-tuning from random init of the same shape (``finetune_glue_task(..., from_scratch=True)``), over several
fine-tuning seeds (head init, dropout, batch order). One pretraining run (the demo DAG up to ``pretrain``).

    python -m bench.demo_gain --seeds 0 1 2                     # the demo preset
    python -m bench.demo_gain --seeds 0 1 2 --root /tmp/g pretrain.phases.0.num_steps=600
    python -m bench.demo_gain --export /tmp/bench_learning/ours-1800/pretrain/.../export   # a finished export

Prints a markdown table (dev accuracy per seed, the means and the gain) and writes it as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import torch


def pretrain_export(root: str, overrides: list[str]) -> tuple[str, float]:
    """Run the demo DAG through ``pretrain`` (skipping what is done) -> (export URI, wall seconds)."""
    from pipelines.cli import main

    start = time.perf_counter()
    if main(["run", "demo", f"root={root}", "--until", "pretrain", *overrides]) != 0:
        raise SystemExit("the demo run failed; see its log under " + root)
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return manifest["stages"]["pretrain"]["outputs"]["output"], time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "bench_demo_gain"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads for fine-tuning (the box is shared)")
    ap.add_argument("--out", default="")
    ap.add_argument("--export", default="", help="fine-tune from this HF-layout export instead of running the DAG "
                    "(e.g. bench.learning's, whose JSON names it)")
    ap.add_argument("overrides", nargs="*", help="demo preset overrides, e.g. pretrain.phases.0.num_steps=600")
    args = ap.parse_args(argv)

    from pipelines.finetune import train
    from pipelines.presets import load_run_config
    from pipelines.run_config import resolve_path

    export, pretrain_s = (args.export, 0.0) if args.export else pretrain_export(args.root, args.overrides)
    job = load_run_config("demo", args.overrides).finetune.tasks[0]
    data = train.read_task_data(job.spec, resolve_path(job.data_uri))
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="demo-gain-") as cache:
        checkpoint = train.local_checkpoint(export, cache)
        for seed in args.seeds:
            hp = dataclasses.replace(job.hyper_params, seed=seed)
            row = {"seed": seed}
            for name, scratch in (("pretrained", False), ("scratch", True)):
                start = time.perf_counter()
                result = train.finetune_glue_task(job.spec, data, checkpoint, hp, from_scratch=scratch)
                row[name] = result["dev"][job.name]["accuracy"]
                row[f"{name}_s"] = time.perf_counter() - start
            rows.append(row)
            print(f"seed {seed}: pretrained {row['pretrained']:.4f}  scratch {row['scratch']:.4f}", flush=True)
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("pretrained", "scratch")}
    report = {"task": job.name, "export": export, "overrides": args.overrides, "pretrain_wall_s": pretrain_s,
              "num_train_examples": len(data.train[:job.hyper_params.max_train_examples or None]),
              "num_dev_examples": len(data.dev[job.name]), "rows": rows, "mean": mean,
              "gain_points": 100 * (mean["pretrained"] - mean["scratch"]), "load_average": os.getloadavg()}
    print(f"\n{job.name} dev accuracy, {report['num_train_examples']} training examples, "
          f"{report['num_dev_examples']} dev (pretraining: {pretrain_s:.0f} s wall, skipped stages included)\n")
    print("| seed | pretrained | from scratch |\n|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['pretrained']:.4f} | {r['scratch']:.4f} |")
    print(f"| mean | {mean['pretrained']:.4f} | {mean['scratch']:.4f} |")
    print(f"\ngain: {report['gain_points']:+.1f} points of dev accuracy; load average "
          f"{' '.join(f'{x:.1f}' for x in report['load_average'])}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
