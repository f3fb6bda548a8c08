"""Why the demo's pretraining does not transfer: what an export's encoder does to [CLS], and which of its
parts hurt fine-tuning.

Two measurements on any HF-layout export (the demo run's, ``bench.demo_gain``'s or ``bench.learning``'s),
against a random model of the same shape (``finetune.train.classifier(..., from_scratch=True)``):

1. **Attention of [CLS]**, per layer, on the demo task's first training sentences: its entropy divided by
   log(sentence length) (1.0 = uniform, i.e. [CLS] is the mean of the sentence, a bag of words), and the
   weight [CLS] puts on [SEP].
2. **Reset ablation**: the demo task fine-tuned (its preset's hyper-parameters) from the export with one part
   (embeddings, all encoder layers, the top layer, the pooler) put back to its random initialisation;
   dev accuracy after each epoch, mean over the seeds.

    python -m bench.demo_transfer EXPORT [--seeds 0 1] [--epochs 4] [--parts ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile

import torch

DEFAULT_PARTS = ("", "bert.embeddings", "bert.layers", "bert.layers.1", "bert.pooler")


@torch.no_grad()
def cls_attention(model, batch: dict, sep_id: int) -> list[dict]:
    """Per layer: [CLS]'s attention entropy / log(length) (mean over heads and rows) and its weight on [SEP]."""
    bert = model.bert
    x, mask = bert._embed(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    lengths = batch["attention_mask"].sum(1).float()
    sep = (batch["input_ids"] == sep_id)[:, None]  # (B, 1, T)
    rows = []
    for layer in bert.layers:
        B, T, H = x.shape
        A = layer.attn.num_heads
        q, k, _ = layer.attn.qkv(x).view(B, T, 3, A, H // A).permute(2, 0, 3, 1, 4)
        p = ((q[:, :, :1] @ k.transpose(-1, -2)) / math.sqrt(H // A)).masked_fill(~mask, float("-inf")).softmax(-1)
        p = p[:, :, 0]  # (B, A, T): [CLS]'s query
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / lengths.log()[:, None]
        rows.append({"cls_entropy": entropy.mean().item(), "cls_to_sep": (p * sep).sum(-1).mean().item()})
        x = layer(x, mask)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS),
                    help="state-dict prefixes to reset ('' = none, the export as it is; 'scratch' = all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from pipelines.finetune import train
    from pipelines.presets import load_run_config
    from pipelines.storage import resolve_path

    torch.set_num_threads(args.threads)
    job = load_run_config("demo", []).finetune.tasks[0]
    data = train.read_task_data(job.spec, resolve_path(job.data_uri))
    with tempfile.TemporaryDirectory(prefix="demo-transfer-") as cache:  # a remote export's local copy
        return measure(args, job, data, train.local_checkpoint(args.export, cache))


def measure(args, job, data, checkpoint: str) -> dict:
    from pipelines.finetune import train

    tok = train.load_tokenizer(checkpoint)
    enc = train.encode_examples(tok, data.train[:128], job.hyper_params.max_seq_length, False)
    batch = train.pad_batch(enc, list(range(len(enc.input_ids))), tok.pad_id)
    batch.pop("labels")
    report: dict = {"export": args.export, "attention": {}, "ablation": {}}
    for name, scratch in (("export", False), ("random", True)):
        torch.manual_seed(0)
        report["attention"][name] = cls_attention(train.classifier(checkpoint, 2, scratch).eval(), batch,
                                                  tok.tokenizer.token_to_id("[SEP]"))
    layers = range(len(report["attention"]["export"]))
    print("| model | " + " | ".join(f"layer {i}: [CLS] entropy / on [SEP]" for i in layers) + " |\n|---|" + "---|" * len(layers))
    for name, rows in report["attention"].items():
        print(f"| {name} | " + " | ".join(f"{r['cls_entropy']:.2f} / {r['cls_to_sep']:.2f}" for r in rows) + " |")

    make = train.classifier

    def with_reset(prefix: str):
        def classifier(ck, num_labels, from_scratch=False):
            model = make(ck, num_labels, from_scratch or prefix == "scratch")
            if prefix and prefix != "scratch":
                with torch.random.fork_rng():  # the run's own seed still draws the head and the dropout
                    torch.manual_seed(12345)
                    fresh = make(ck, num_labels, True).state_dict()
                for key, value in model.state_dict().items():
                    if key.startswith(prefix):
                        value.copy_(fresh[key])
            return model
        return classifier

    print(f"\n| reset | dev accuracy after epochs 1..{args.epochs} (mean of seeds {args.seeds}) |\n|---|---|")
    try:
        for part in args.parts:
            train.classifier = with_reset(part)
            per_seed = []
            for seed in args.seeds:
                hp = dataclasses.replace(job.hyper_params, seed=seed, num_epochs=args.epochs)
                result = train.finetune_glue_task(job.spec, data, checkpoint, hp)
                per_seed.append([h["dev"][job.name]["accuracy"] for h in result["epochs"]])
            means = [statistics.mean(s[e] for s in per_seed) for e in range(args.epochs)]
            report["ablation"][part or "none"] = means
            print(f"| {part or 'none (the export)'} | {' '.join(f'{m:.4f}' for m in means)} |", flush=True)
    finally:
        train.classifier = make
    return report


if __name__ == "__main__":
    main()
