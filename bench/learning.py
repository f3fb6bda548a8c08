"""Time to loss: the same model size on the same corpus for the same wall-clock budget, four ways, scored on
the same held-out text with the same masks.

- **ours-padded** (alias ``ours``): the real path, ``bert-pipeline run`` (the demo preset's DAG on this corpus:
  wordpiece, NSP instances, Ray Train + DeepSpeed pretraining with the dynamic-masking stage, the HF export),
  the paper's recipe: NSP + MLM, every row padded to ``--seq``;
- **ours-binned**: the same with ``pretrain.phases.0.length_bins`` (``--bins``, [32, 64, 96] at seq 128): each
  micro-batch computed at its length bin's bound instead of ``--seq``;
- **ours-packed**: ``pretrain.objective: mlm``, masked LM alone on ``mlm_packs``' full-sentence packs of ``--seq``
  tokens (no NSP, no padding but each shard's last pack), masking ``--packed-mlm-probability`` (15%, as the
  others, by default);
- **hf**: the stock recipe of transformers' ``run_mlm.py``: the same vocabulary through ``BertTokenizerFast``,
  every line tokenised and the token stream grouped into ``--seq``-token blocks, ``BertForMaskedLM`` from
  its config, ``DataCollatorForLanguageModeling`` (15%, 80/10/10), ``Trainer`` (AdamW, linear schedule).

Each ours-* contestant has its own run roots (one config per root). The contestants run one after another in
the order given (``--only``; by default padded, binned, packed, hf), each with the same budget and 1 thread;
the load average is recorded before and after each.

Held out: every ``--holdout-every``-th document of the corpus (never trained on by any). It is tokenised
with the vocabulary, cut into ``[CLS] ... [SEP]`` rows of ``--seq`` tokens and masked once
(``bert_core.masking.mask_rows``, 15%, seeded per row); every export is scored by ``transformers``'
``BertForMaskedLM`` on exactly those rows: MLM loss (mean cross-entropy over masked positions) and accuracy.

Steps: each contestant's schedule (warm-up, linear decay to zero) is sized to the budget before it starts.
HF's from a short probe of its own bare training step (``--probe-steps``) at the same thread count, and its
``Trainer`` is also stopped at the budget. Each of ours from a short calibration run of its own recipe through
the real path (a binned or packed step costs differently from a padded one), with a 3% margin; it reports the
seconds its loop actually took and the real (non-padding) tokens it trained on, both from its metrics log.

    python -m bench.learning                                   # 600 s each, tiny, seq 128, the demo corpus
    python -m bench.learning --budget-s 60 --calibration-steps 100   # develop
    python -m bench.learning --budget-s 90 --only hf --seq 64
    # HF's model again, its step count pinned, the measured run's vocabulary; its export under WORK/hf/export
    python -m bench.learning --only hf --hf-steps 748 --budget-s 4000 --vocab VOCAB --work WORK --out OUT.json
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import math
import os
import tempfile
import time

import torch

from pipelines.storage import resolve_path

BATCH, LR, WARMUP_FRACTION = 32, 1e-3, 0.1
CONTESTANTS = ("ours-padded", "ours-binned", "ours-packed", "hf")
ALIASES = {"ours": "ours-padded"}


def read_documents(pattern: str) -> list[list[str]]:
    """BERT corpus format: one paragraph per line, a blank line between documents."""
    docs: list[list[str]] = []
    for path in sorted(glob.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            current: list[str] = []
            for line in f:
                if line.strip():
                    current.append(line.strip())
                elif current:
                    docs.append(current)
                    current = []
            if current:
                docs.append(current)
    return docs


def write_documents(docs: list[list[str]], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(d) for d in docs) + "\n")


def heldout_batch(tok, docs: list[list[str]], max_rows: int, seq: int) -> dict[str, torch.Tensor]:
    """Held-out paragraphs -> [CLS] piece [SEP] rows of ``seq`` tokens, masked once (same for every contestant)."""
    from bert_core.masking import mask_rows

    stream = [i for d in docs for p in d for i in tok.encode(p, add_special_tokens=False)]
    body = seq - 2
    rows = [torch.tensor([tok.cls_id] + stream[a:a + body] + [tok.sep_id])
            for a in range(0, len(stream) - body + 1, body)][:max_rows]
    ids, labels = mask_rows(rows, list(range(len(rows))), seq, vocab_size=tok.vocab_size, mask_token_id=tok.mask_id,
                            special_token_ids=tok.special_ids, pad_token_id=tok.pad_id, mlm_probability=0.15)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@torch.no_grad()
def score(model_dir_or_model, held: dict[str, torch.Tensor]) -> dict[str, float]:
    import transformers

    model = (transformers.BertForMaskedLM.from_pretrained(model_dir_or_model)
             if isinstance(model_dir_or_model, str) else model_dir_or_model).eval()
    loss_sum, ok, n = 0.0, 0, 0
    for a in range(0, len(held["input_ids"]), 128):
        part = {k: v[a:a + 128] for k, v in held.items()}
        logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits
        sel = part["labels"] != -100
        loss_sum += torch.nn.functional.cross_entropy(logits[sel], part["labels"][sel], reduction="sum").item()
        ok += int((logits[sel].argmax(-1) == part["labels"][sel]).sum())
        n += int(sel.sum())
    return {"heldout_mlm_loss": loss_sum / n, "heldout_mlm_accuracy": ok / n, "heldout_masked_tokens": n}


def probe_rate(model, make_batch, steps: int) -> float:
    """Steps per second of a bare AdamW step (forward, backward, clip, update) after 2 warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = make_batch(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - start)


def _random_batch(vocab_size: int, seq: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (BATCH, seq), generator=g)
    labels = torch.where(torch.rand(BATCH, seq, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return ids, labels


# --- ours ----------------------------------------------------------------------------------------
def recipe_overrides(name: str, seq: int, bins: list[int], packed_mlm_probability: float) -> list[str]:
    """The config overrides that make one of ours' recipes (on top of the demo preset and the common ones)."""
    if name in ("ours-padded", "ours-binned"):
        paper = ["pretrain.objective=nsp", "pretrain.phases.0.mlm_probability=0.15",
                 f"pretrain.phases.0.max_predictions_per_seq={math.ceil(0.15 * seq)}"]
        return paper if name == "ours-padded" else [
            *paper, f"pretrain.phases.0.length_bins=[{','.join(str(b) for b in bins)}]"]
    if name == "ours-packed":
        return ["pretrain.objective=mlm", f"pretrain.phases.0.mlm_probability={packed_mlm_probability}",
                f"pretrain.phases.0.max_predictions_per_seq={math.ceil(packed_mlm_probability * seq)}",
                "data.mlm_packs.mode=full_sentences"]
    raise ValueError(f"not one of ours: {name}")


def _pretrain(corpus_dir: str, root: str, preset: str, steps: int, seq: int, recipe: list[str]) -> dict:
    """One ``bert-pipeline run demo --until pretrain`` of ``steps`` steps on the corpus -> its figures."""
    from pipelines.cli import main

    root = f"{root}-{steps}"  # a run root holds one config
    overrides = [f"root={root}", f"data.inputs=[{corpus_dir}]", f"pretrain.model_preset={preset}",
                 "pretrain.num_workers=1", f"pretrain.phases.0.num_steps={steps}",
                 f"pretrain.phases.0.warmup_steps={int(WARMUP_FRACTION * steps)}",
                 f"pretrain.phases.0.learning_rate={LR}", f"pretrain.phases.0.global_batch_size={BATCH}",
                 f"pretrain.phases.0.micro_batch_size={BATCH}", f"pretrain.phases.0.max_seq_length={seq}",
                 f"pretrain.checkpoint_every={steps}",
                 # as HF's recipe: its dropout, and every training document trained on (this bench holds out
                 # its own documents, scored for every contestant)
                 "pretrain.dropout=0.1", "pretrain.heldout.files=0", *recipe]
    start = time.perf_counter()
    if main(["run", "demo", "--until", "pretrain", *overrides]) != 0:
        raise SystemExit(f"our pretraining failed; see the logs under {root}")
    wall = time.perf_counter() - start
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        stages = json.load(f)["stages"]
    export = stages["pretrain"]["outputs"]["output"]
    with open(os.path.join(os.path.dirname(export), "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if "samples_per_s" in r]  # the training lines (each covers the steps since the last)
    seconds = [(r["step"] - last) * BATCH / r["samples_per_s"]
               for r, last in zip(rows, [0] + [r["step"] for r in rows])]
    steady = (rows[-1]["step"] - rows[0]["step"]) / sum(seconds[1:]) if len(rows) > 1 else rows[0]["step"] / seconds[0]
    real_tokens = sum(r["tokens_per_s"] * s for r, s in zip(rows, seconds))
    positions = real_tokens + sum(r["padded_tokens_per_s"] * s for r, s in zip(rows, seconds))
    return {"steps": steps, "train_loop_s": sum(seconds), "first_interval": {"steps": rows[0]["step"], "s": seconds[0]},
            "steady_steps_per_s": steady, "pretrain_stage_s": stages["pretrain"]["seconds"],
            "dag_wall_s": wall, "export": export, "vocab": stages["wordpiece"]["outputs"]["vocab"],
            "root": root, "final_train_mlm_loss": rows[-1]["mlm_loss"], "real_tokens": real_tokens,
            "computed_positions": positions, "real_token_share": real_tokens / max(positions, 1.0),
            "real_tokens_per_s": real_tokens / sum(seconds),
            # rank 0's CPU-seconds in its loop (from tokens per CPU-second): the load-robust cost of the tokens
            "train_loop_cpu_s": sum(r["tokens_per_s"] * s / r["tokens_per_cpu_s"] for r, s in zip(rows, seconds)
                                    if r.get("tokens_per_cpu_s"))}


def run_ours(corpus_dir: str, root: str, preset: str, budget_s: float, probe_steps: int, seq: int,
             recipe: list[str], steps: int = 0, calibration_steps: int = 300, margin: float = 0.97) -> dict:
    """Ours through the real path. Its schedule (warm-up, linear decay to zero) is fixed before the run, so
    the step count is sized first, by a ``calibration_steps`` run of the same recipe through the same real
    path (Ray Train, DeepSpeed, the masking stage and the input pipeline): its first metrics interval is
    start-up, the rest gives the loop's steady steps per second; the run gets that start-up plus ``margin`` x
    the steady rate x what is left of the budget. The bare padded step's probe is reported beside it (the
    loop's cost over a bare padded NSP step: under 1 for the binned and packed recipes' cheaper steps)."""
    from bert_core import BertConfig, BertForPreTraining

    vocab_size = 8000
    ids, labels = _random_batch(vocab_size, seq)
    model = BertForPreTraining(BertConfig.preset(preset, vocab_size=vocab_size))
    rate = probe_rate(model, lambda m: m(ids, mlm_labels=labels, nsp_labels=torch.zeros(BATCH, dtype=torch.long)).loss,
                      probe_steps)
    sizing: dict = {"probe_padded_steps_per_s": rate}
    if not steps:
        sizing["load_average_before_calibration"] = os.getloadavg()
        calib = _pretrain(corpus_dir, f"{root}-calibrate", preset, calibration_steps, seq, recipe)
        first, loop_rate = calib["first_interval"], calib["steady_steps_per_s"]  # the first interval is start-up
        steps = max(20, first["steps"] + int(margin * loop_rate * (budget_s - first["s"])))
        sizing.update(calibration_steps=calibration_steps, calibration_steady_steps_per_s=loop_rate,
                      calibration_first_interval=first, loop_over_probe=loop_rate / rate, margin=margin)
    sizing["load_average_before_run"] = os.getloadavg()
    return {**_pretrain(corpus_dir, root, preset, steps, seq, recipe), **sizing}


# --- HF's stock recipe ---------------------------------------------------------------------------
class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        return {"input_ids": self.blocks[i]}


def run_hf(train_docs: list[list[str]], vocab_file: str, preset: str, budget_s: float, probe_steps: int,
           out_dir: str, seq: int, steps: int = 0) -> dict:
    import transformers

    from bert_core import BertConfig

    tok = transformers.BertTokenizerFast(vocab=vocab_file, do_lower_case=True)
    lines = [p for d in train_docs for p in d]
    stream = [i for enc in tok(lines)["input_ids"] for i in enc]  # run_mlm: tokenize every line, then group_texts
    blocks = [stream[a:a + seq] for a in range(0, len(stream) - seq + 1, seq)]
    ours = BertConfig.preset(preset, vocab_size=tok.vocab_size)
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=ours.hidden_size,
                                     num_hidden_layers=ours.num_hidden_layers,
                                     num_attention_heads=ours.num_attention_heads,
                                     intermediate_size=ours.intermediate_size)
    torch.manual_seed(0)
    ids, labels = _random_batch(tok.vocab_size, seq)
    rate = probe_rate(transformers.BertForMaskedLM(config), lambda m: m(input_ids=ids, labels=labels).loss, probe_steps)
    steps = steps or max(20, int(rate * budget_s))
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config)
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    args = transformers.TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=BATCH, learning_rate=LR, weight_decay=0.01,
        warmup_steps=int(WARMUP_FRACTION * steps), max_steps=steps, lr_scheduler_type="linear", adam_epsilon=1e-6,
        max_grad_norm=1.0, logging_steps=max(1, steps // 10), save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, seed=0, disable_tqdm=True)

    class Budget(transformers.TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **k):
            if time.perf_counter() - self.start > budget_s:
                control.should_training_stop = True

    budget = Budget()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Blocks(blocks), data_collator=collator,
                                   callbacks=[budget])
    result = trainer.train()
    loop_s, loop_cpu_s = time.perf_counter() - budget.start, time.process_time() - budget.cpu_start
    done = trainer.state.global_step
    return {"steps": done, "planned_steps": steps, "probe_steps_per_s": rate,
            "train_loop_s": loop_s, "train_loop_cpu_s": loop_cpu_s, "train_blocks": len(blocks),
            "final_train_loss": result.training_loss,
            # every position of a group_texts block is a real token
            "real_tokens": done * BATCH * seq, "real_token_share": 1.0,
            "real_tokens_per_s": done * BATCH * seq / loop_s,
            "model": model, **export_hf(model, vocab_file, os.path.join(out_dir, "export"), seq, done)}


def export_hf(hf_model, vocab_file: str, export_dir: str, seq: int, steps: int) -> dict:
    """HF's trained ``BertForMaskedLM`` -> the layout of ours' exports (``pipelines.pretrain.export``):
    config.json, model.safetensors (HF names, as ``bert_core.save_pretrained`` writes a
    ``BertForPreTraining``), the tokenizer files of the same vocabulary, and a ``manifest.json`` written last,
    so fine-tuning (``bert-pipeline finetune``, ``bench.recipe_finetune``) loads it as it loads ours'.
    run_mlm's model has no pooler and no NSP head: those keep ``bert_core``'s initialisation (seed 0), as
    ``transformers`` initialises a missing pooler when a sequence classifier loads a masked-LM checkpoint."""
    from bert_core import BertConfig, BertForPreTraining, WordPieceTokenizer, save_pretrained
    from bert_core.checkpoint import TOKENIZER_FILES, load_hf_state_dict, to_hf_state_dict

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_hf_dict(hf_model.config.to_dict()))
    fresh = to_hf_state_dict(model.state_dict())
    trained = {k: v.detach().cpu() for k, v in hf_model.state_dict().items()}
    load_hf_state_dict(model, {**fresh, **trained})
    save_pretrained(model, export_dir, tokenizer=WordPieceTokenizer.from_vocab_file(vocab_file), model_max_length=seq)
    initialised = sorted(k for k in fresh if k not in trained)
    files = ["config.json", "model.safetensors", *TOKENIZER_FILES]
    with open(os.path.join(export_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"files": files, "phase": 0, "steps": steps, "source": "bench.learning hf (run_mlm recipe)",
                   "initialised_not_trained": initialised}, f, indent=2)
    return {"export": export_dir, "export_initialised_not_trained": initialised}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=600.0, help="training wall-clock budget of each contestant")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq", type=int, default=128,
                    help="sequence length of every contestant: ours' phase, HF's group_texts blocks, the held-out rows")
    ap.add_argument("--bins", type=int, nargs="+", default=None,
                    help="ours-binned's length_bins (default: seq/4, seq/2, 3seq/4: [32, 64, 96] at 128)")
    ap.add_argument("--packed-mlm-probability", type=float, default=0.15, help="ours-packed's masking probability")
    ap.add_argument("--corpus", default=os.path.join(resolve_path("demo:corpus"), "*.txt.gz"))
    ap.add_argument("--holdout-every", type=int, default=20)
    ap.add_argument("--heldout-rows", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of HF's process (ours: 1 worker, 1 CPU)")
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--calibration-steps", type=int, default=300, help="steps of each of ours' calibration runs")
    ap.add_argument("--ours-steps", type=int, default=0,
                    help="pin each of ours' step counts instead of sizing them by calibration runs")
    ap.add_argument("--hf-steps", type=int, default=0, help="pin HF's planned step count (still stopped at the budget)")
    ap.add_argument("--vocab", default="",
                    help="an existing vocabulary (e.g. a measured run's, its report's 'vocab') for HF and the held-out "
                         "rows, instead of building one through the wordpiece stage when HF runs first")
    ap.add_argument("--only", nargs="+", default=list(CONTESTANTS), choices=[*CONTESTANTS, *ALIASES],
                    help="the contestants, run in this order")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bench_learning"))
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    order = list(dict.fromkeys(ALIASES.get(c, c) for c in args.only))
    bins = args.bins or [args.seq // 4, args.seq // 2, 3 * args.seq // 4]

    docs = read_documents(args.corpus)
    held_docs = docs[::args.holdout_every]
    train_docs = [d for i, d in enumerate(docs) if i % args.holdout_every]
    corpus_dir = os.path.join(args.work, "corpus")
    write_documents(train_docs, os.path.join(corpus_dir, "train.txt.gz"))
    report: dict = {"budget_s": args.budget_s, "preset": args.preset, "seq": args.seq, "batch": BATCH, "lr": LR,
                    "bins": bins, "packed_mlm_probability": args.packed_mlm_probability, "threads": args.threads,
                    "order": order, "train_documents": len(train_docs), "heldout_documents": len(held_docs),
                    "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}
    from bert_core import WordPieceTokenizer

    vocab = held = None

    def heldout(vocab_uri: str) -> dict[str, torch.Tensor]:
        nonlocal vocab, held
        if held is None:
            vocab = vocab_uri
            tok = WordPieceTokenizer.from_vocab_file(resolve_path(vocab))
            held = heldout_batch(tok, held_docs, args.heldout_rows, args.seq)
            report["heldout_rows"] = len(held["input_ids"])
            report["vocab"] = vocab
        return held

    for name in order:
        before = os.getloadavg()
        start = time.perf_counter()
        if name == "hf":
            if vocab is None:
                heldout(args.vocab or _vocab_of(os.path.join(args.work, "vocab"), corpus_dir, args))
            hf = run_hf(train_docs, resolve_path(vocab), args.preset, args.budget_s, args.probe_steps,
                        os.path.join(args.work, "hf"), args.seq, args.hf_steps)
            result = {**{k: v for k, v in hf.items() if k != "model"}, **score(hf["model"], heldout(vocab))}
            # the export as fine-tuning reads it, scored again on the same rows: the same model
            result["export_heldout_mlm_loss"] = score(hf["export"], heldout(vocab))["heldout_mlm_loss"]
        else:
            recipe = recipe_overrides(name, args.seq, bins, args.packed_mlm_probability)
            ours = run_ours(corpus_dir, os.path.join(args.work, name), args.preset, args.budget_s, args.probe_steps,
                            args.seq, recipe, args.ours_steps, args.calibration_steps)
            held_rows = heldout(ours["vocab"])
            # every root builds its own vocabulary from the same corpus and config: the same file, checked
            ours["same_vocab_as_heldout"] = _same_file(ours["vocab"], vocab)
            result = {**ours, "recipe": recipe, **score(ours["export"], held_rows)}
        result.update(load_average_before=before, load_average_after=os.getloadavg(),
                      contestant_wall_s=time.perf_counter() - start)
        report[name] = result
        print(f"[bench.learning] {name}: {result['steps']} steps, {result['train_loop_s']:.0f} s, held-out MLM loss "
              f"{result['heldout_mlm_loss']:.3f}, load {before} -> {result['load_average_after']}", flush=True)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    print(table(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def table(report: dict) -> str:
    lines = ["| contestant | steps | train loop s | loop CPU s | real tokens seen | real-token share | "
             "held-out MLM loss | held-out MLM acc | load avg before (1/5/15 min) | load avg after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in report["order"]:
        r = report[name]
        load = lambda v: "/".join(f"{x:.2f}" for x in v)  # noqa: E731
        lines.append(f"| {name} | {r['steps']} | {r['train_loop_s']:.0f} | {r.get('train_loop_cpu_s', 0):.0f} | "
                     f"{r['real_tokens'] / 1e6:.2f} M | "
                     f"{r['real_token_share']:.3f} | {r['heldout_mlm_loss']:.3f} | {r['heldout_mlm_accuracy']:.3f} | "
                     f"{load(r['load_average_before'])} | {load(r['load_average_after'])} |")
    return "\n".join(lines)


def _same_file(a: str, b: str) -> bool:
    with open(resolve_path(a), "rb") as fa, open(resolve_path(b), "rb") as fb:
        return fa.read() == fb.read()


def _vocab_of(root: str, corpus_dir: str, args) -> str:
    """Only HF asked for: build the vocabulary through our DAG (wordpiece stage) so both share it."""
    from pipelines.cli import main

    if main(["run", "demo", f"root={root}", f"data.inputs=[{corpus_dir}]", "--until", "wordpiece"]) != 0:
        raise SystemExit("the wordpiece stage failed")
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["stages"]["wordpiece"]["outputs"]["vocab"]


if __name__ == "__main__":
    main()
