"""What the demo shows, end to end: the bare demo (``bert-pipeline run demo``, here with a root per seed and
any overrides) run as a user runs it, once per pretraining seed, and what its report says:

- held-out MLM loss and accuracy against a unigram predictor on the same masked words (its loss: the
  unigram entropy measured there; its accuracy: always the most frequent piece), how far below it is;
- held-out NSP accuracy against chance and the commoner label;
- movie_sentiment dev accuracy fine-tuned from the pretrained export and from random init;
- the run's wall seconds (the command, start to exit) and the load average around it (the box may be shared).

    python -m bench.demo_gain --seeds 0 1 2                                  # the demo preset as shipped
    python -m bench.demo_gain --seeds 0 --root /tmp/g pretrain.phases.0.num_steps=600   # another budget

Prints a markdown table (a row per seed, then the means) and writes it as JSON (``--out``). Each run
starts from an empty root, so every stage runs (a finished root is reused only with ``--reuse``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KEYS = ("heldout_mlm_loss", "unigram_loss", "nats_below_unigram", "heldout_mlm_accuracy", "unigram_accuracy",
        "heldout_nsp_accuracy", "nsp_majority", "pretrained", "scratch", "wall_s", "pretrain_s")


def run_demo(root: str, seed: int, overrides: list[str], reuse: bool) -> dict:
    """One whole demo run in its own process -> what its report says, its wall seconds and the load around it."""
    if os.path.exists(root) and not reuse:
        shutil.rmtree(root)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "demo", f"root={root}",
                           f"pretrain.seed={seed}", *overrides], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the demo run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        stages = json.load(f)["stages"]
    with open(stages["report"]["outputs"]["json"], encoding="utf-8") as f:
        results = json.load(f)
    return {"seed": seed, "wall_s": wall, "load_before": load_before, "load_after": os.getloadavg(),
            "stage_s": {name: s.get("seconds") for name, s in stages.items()},
            "pretrain_s": stages["pretrain"].get("seconds"), **figures(results), "console_tail": proc.stdout[-4000:]}


def figures(results: dict) -> dict:
    """The report's held-out scores and baselines (last phase with them) and the first from-scratch task."""
    out: dict = {}
    held = results.get("pretrain_heldout") or {}
    if held:
        phase = held[sorted(held)[-1]]
        base, last = phase["baselines"], phase["last"] or {}
        out.update({k: last.get(k) for k in ("heldout_mlm_loss", "heldout_mlm_accuracy", "heldout_nsp_accuracy")})
        out.update({k: base[k] for k in ("unigram_loss", "unigram_accuracy", "unigram_entropy", "nsp_majority",
                                         "rows", "masked_positions")})
        if last:
            out["nats_below_unigram"] = base["unigram_loss"] - last["heldout_mlm_loss"]
            out["step"] = last["step"]
    for name, task in results["finetune"]["tasks"].items():
        if "scratch" in task:
            metric = next(iter(next(iter(task["dev"].values()))))
            out.update(task=name, metric=metric, pretrained=next(iter(task["dev"].values()))[metric],
                       scratch=next(iter(task["scratch"]["dev"].values()))[metric])
            break
    return out


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds, a whole run each")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "bench_demo_gain"))
    ap.add_argument("--reuse", action="store_true", help="keep a seed's finished root (report its figures again)")
    ap.add_argument("--out", default="")
    ap.add_argument("overrides", nargs="*", help="demo preset overrides, e.g. pretrain.phases.0.num_steps=600")
    args = ap.parse_args(argv)

    rows = []
    for seed in args.seeds:
        row = run_demo(os.path.join(args.root, f"seed{seed}"), seed, args.overrides, args.reuse)
        rows.append(row)
        print(f"seed {seed}: {row['wall_s']:.0f} s, held-out MLM {_cell(row.get('heldout_mlm_loss'))} vs unigram "
              f"{_cell(row.get('unigram_loss'))}, NSP {_cell(row.get('heldout_nsp_accuracy'))}, "
              f"{row.get('task')} pretrained {_cell(row.get('pretrained'))} vs scratch {_cell(row.get('scratch'))}, "
              f"load {row['load_before'][0]:.1f} -> {row['load_after'][0]:.1f}", flush=True)
    mean = {k: statistics.mean(r[k] for r in rows) for k in KEYS if all(r.get(k) is not None for r in rows)}
    report = {"overrides": args.overrides, "rows": rows, "mean": mean}
    print(f"\ndemo {' '.join(args.overrides) or '(as shipped)'}: held-out rows {rows[0].get('rows')}, masked words "
          f"{rows[0].get('masked_positions')}; {rows[0].get('task')} dev {rows[0].get('metric')}\n")
    print("| seed | held-out MLM loss | unigram loss | below unigram (nats) | held-out MLM acc | unigram acc | "
          "held-out NSP acc | commoner label | pretrained | from scratch | pretrain s | wall s | load 1-min before, after |")
    print("|---" * 13 + "|")
    for r in rows + [{"seed": "mean", **mean, "load_before": None}]:
        load = f"{r['load_before'][0]:.1f}, {r['load_after'][0]:.1f}" if r.get("load_before") else ""
        print(f"| {r['seed']} | " + " | ".join(_cell(r.get(k)) for k in KEYS[:-2]) + " | "
              f"{_cell(r.get('pretrain_s'))} | {_cell(r.get('wall_s'))} | {load} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
