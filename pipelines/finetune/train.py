"""Fine-tune one GLUE-format task (classification or regression) from an HF-layout BERT checkpoint.

The recipe of Devlin et al. (2019): AdamW (no decay on biases and LayerNorm), linear warmup then
linear decay, batch 32, a few epochs, gradient clipping at 1.0, the head on the pooled [CLS].
Batches are padded to their own longest row (not to ``max_seq_length``), which is most of the speed
on short GLUE sentences. Runs anywhere torch runs; ``pipelines.finetune.jobs`` wraps it in Ray.

    from pipelines.finetune.train import HyperParams, finetune_glue_task
    result = finetune_glue_task(spec, data_uri, checkpoint_dir, HyperParams(learning_rate=3e-5), out_uri)
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from bert_core import BertForSequenceClassification, WordPieceTokenizer, load_pretrained
from bert_core.checkpoint import read_hf_config
from pipelines import console, storage
from pipelines.devices import to_device
from pipelines.finetune import glue, metrics
from pipelines.finetune.config import HyperParams


# --- checkpoint and tokenizer ------------------------------------------------------------------
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json",
                     "tokenizer_config.json")


def local_checkpoint(checkpoint_uri: str, cache_dir: str) -> str:
    """A local directory holding the checkpoint: the path itself, or a copy of a remote one."""
    if storage.is_local(checkpoint_uri):
        return storage.filesystem(checkpoint_uri)[1]
    os.makedirs(cache_dir, exist_ok=True)
    for name in _CHECKPOINT_FILES:
        uri = storage.join(checkpoint_uri, name)
        if storage.exists(uri) and not os.path.exists(os.path.join(cache_dir, name)):
            data = storage.read_bytes(uri)
            tmp = os.path.join(cache_dir, f".{name}.part")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(cache_dir, name))
    return cache_dir


def load_tokenizer(checkpoint_dir: str) -> WordPieceTokenizer:
    """The checkpoint's WordPiece tokenizer with the casing it was trained with; padding and
    truncation left to us.

    Casing, as transformers reads it: ``tokenizer_config.json``'s ``do_lower_case`` (and
    ``strip_accents``), else the ``tokenizer.json`` normaliser's, else lowercase (a bare vocab.txt,
    transformers' ``BertTokenizer`` default). ``vocab.txt`` is preferred for the pieces: a
    ``tokenizer.json`` may carry fixed padding/truncation (the minilm one pads every row to 128),
    which would defeat per-batch padding. A checkpoint with neither file is refused.
    """
    vocab, tokenizer_json = os.path.join(checkpoint_dir, "vocab.txt"), os.path.join(checkpoint_dir, "tokenizer.json")
    if not (os.path.isfile(vocab) or os.path.isfile(tokenizer_json)):
        raise FileNotFoundError(f"checkpoint {checkpoint_dir!r} has no tokenizer (neither vocab.txt nor "
                                "tokenizer.json): its vocabulary and casing are unknown, so it cannot be fine-tuned")
    settings: dict = {}
    cfg_path = os.path.join(checkpoint_dir, "tokenizer_config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            settings = json.load(f)
    lowercase, strip_accents = settings.get("do_lower_case"), settings.get("strip_accents")
    if lowercase is None and os.path.isfile(tokenizer_json):
        from_json = WordPieceTokenizer.load(tokenizer_json)
        lowercase, strip_accents = from_json.lowercase, from_json.strip_accents
    lowercase = True if lowercase is None else bool(lowercase)
    tok = WordPieceTokenizer.from_vocab_file(vocab, lowercase, strip_accents) if os.path.isfile(vocab) else \
        WordPieceTokenizer.load(tokenizer_json, lowercase)
    tok.tokenizer.no_padding()
    tok.tokenizer.no_truncation()
    return tok


# --- data ----------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """Unpadded token rows of one split; ``labels`` is None for test rows."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray | None
    ids: list[str]


def encode_examples(tok: WordPieceTokenizer, examples: Sequence[glue.Example], max_seq_length: int,
                    regression: bool) -> Encoded:
    encoded = tok.encode_truncated([(e.text_a, e.text_b) for e in examples], max_seq_length)
    ids, types = [i for i, _ in encoded], [t for _, t in encoded]
    labels = None
    if examples and examples[0].label is not None:
        labels = np.array([e.label for e in examples], dtype=np.float32 if regression else np.int64)
    return Encoded(ids, types, labels, [e.guid for e in examples])


def pad_batch(enc: Encoded, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows padded to the longest among them: input_ids, token_type_ids, attention_mask (B, T)."""
    T = max(len(enc.input_ids[i]) for i in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), T), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(enc.input_ids[i])
        ids[r, :n] = torch.tensor(enc.input_ids[i])
        types[r, :n] = torch.tensor(enc.token_type_ids[i])
        mask[r, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if enc.labels is not None:
        batch["labels"] = torch.from_numpy(enc.labels[list(rows)])
    return batch


def shuffled_batches(num_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    order = torch.randperm(num_rows, generator=generator).tolist()
    for start in range(0, num_rows, batch_size):
        yield order[start:start + batch_size]


# --- optimisation (shared with SQuAD) ------------------------------------------------------------
def build_optimizer(model: nn.Module, hp: HyperParams, num_training_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with no decay on biases and LayerNorm weights; linear warmup then linear decay to 0."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 else decay).append(p)  # biases and LayerNorm gains are the 1-D ones
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel (CPU and CUDA): ~10x faster steps than the per-parameter default on CPU
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=1e-8, fused=True)
    except RuntimeError:
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=1e-8)
    warmup = math.ceil(hp.warmup_ratio * num_training_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def check_vocabulary(tok: WordPieceTokenizer, model: nn.Module, checkpoint_dir: str) -> None:
    """Every id the tokenizer can emit has a row in the model's embeddings. Checked once here: the
    model's own per-batch id check runs on CPU only (on a GPU it would wait for the device each batch)."""
    rows = model.config.vocab_size
    if tok.vocab_size > rows:
        raise ValueError(f"{checkpoint_dir}: the vocabulary has {tok.vocab_size} tokens but the model's word "
                         f"embeddings have {rows} rows (vocab.txt and model.safetensors do not belong together)")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


PROGRESS_EVERY_S = 30.0
"""Seconds between printed progress lines inside an epoch (each costs one wait for the device)."""
LIVE_EVERY_S = 2.0
"""Seconds between updates of the console's live line (no device wait)."""


def train_epochs(model: nn.Module, num_rows: int, make_batch: Callable[[list[int]], dict], hp: HyperParams,
                 device: torch.device, on_epoch_end: Callable[[int, float, float, float], None],
                 label: str = "") -> None:
    """The shared loop: shuffled batches, forward -> loss -> clip -> step; calls back after every epoch
    with (epoch, mean train loss, wall seconds and process CPU seconds spent training in it).

    With a ``label`` (the task name) it prints progress: one line per epoch (task, epoch, step, mean
    loss), and a line every ``PROGRESS_EVERY_S`` inside a long epoch; in a Ray task these reach the driver's
    log. It also feeds the console's live line ``finetune {label}`` (``pipelines.console``), without a
    device wait: the loss is shown once per epoch."""
    steps_per_epoch = math.ceil(num_rows / hp.batch_size)
    optimizer, scheduler = build_optimizer(model, hp, steps_per_epoch * hp.num_epochs)
    generator = torch.Generator().manual_seed(hp.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp.precision == "bf16")
    epoch_note = ""
    for epoch in range(hp.num_epochs):
        model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss_sum, steps = torch.zeros((), dtype=torch.float64, device=device), 0
        last_line = last_live = start
        for rows in shuffled_batches(num_rows, hp.batch_size, generator):
            batch = {k: to_device(v, device) for k, v in make_batch(rows).items()}
            with autocast:
                loss = model(**batch)[0]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().double()  # summed on the device: loss.item() would wait for the GPU each step
            steps += 1
            if label and time.perf_counter() - last_live > LIVE_EVERY_S:
                last_live = time.perf_counter()
                console.progress(f"finetune {label}", epoch * steps_per_epoch + steps, steps_per_epoch * hp.num_epochs,
                                 "steps", f"epoch {epoch + 1}/{hp.num_epochs}" + epoch_note)
            if label and time.perf_counter() - last_line > PROGRESS_EVERY_S and steps < steps_per_epoch:
                last_line = time.perf_counter()
                print(f"{label}: epoch {epoch + 1}/{hp.num_epochs} step {steps}/{steps_per_epoch} "
                      f"loss {loss_sum.item() / steps:.4f}", flush=True)
        mean_loss = loss_sum.item() / max(steps, 1)  # waits for the epoch's last step
        if label:
            print(f"{label}: epoch {epoch + 1}/{hp.num_epochs} step {steps}/{steps_per_epoch} loss {mean_loss:.4f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
            epoch_note = f", epoch {epoch + 1} train loss {mean_loss:.4f}"
            console.note(f"finetune {label}", f"epoch {epoch + 1}/{hp.num_epochs} done: train loss {mean_loss:.4f}, "
                                              f"{time.perf_counter() - start:.1f} s")
            console.progress(f"finetune {label}", (epoch + 1) * steps_per_epoch, steps_per_epoch * hp.num_epochs,
                             "steps", f"epoch {epoch + 1}/{hp.num_epochs}" + epoch_note)
        on_epoch_end(epoch, mean_loss, time.perf_counter() - start, time.process_time() - cpu_start)


@torch.no_grad()
def predict(model: nn.Module, enc: Encoded, hp: HyperParams, pad_id: int, device: torch.device) -> np.ndarray:
    """Logits (N, num_labels) in row order; rows sorted by length inside so batches pad little."""
    model.eval()
    order = sorted(range(len(enc.input_ids)), key=lambda i: len(enc.input_ids[i]))
    out = np.zeros((len(order), model.num_labels), dtype=np.float32)
    for start in range(0, len(order), hp.eval_batch_size):
        rows = order[start:start + hp.eval_batch_size]
        batch = pad_batch(enc, rows, pad_id)
        batch.pop("labels", None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hp.precision == "bf16"):
            logits = model(**{k: v.to(device) for k, v in batch.items()})[1]
        out[rows] = logits.float().cpu().numpy()
    return out


def logits_to_predictions(spec: glue.TaskSpec, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if spec.is_regression else logits.argmax(-1)


# --- one task ------------------------------------------------------------------------------------
@dataclass
class TaskData:
    train: list[glue.Example]
    dev: dict[str, list[glue.Example]]
    """eval name (``mnli-m``) -> examples."""
    test: dict[str, list[glue.Example]]
    """leaderboard file stem (``MNLI-m``) -> examples; empty when the task has no test files."""
    reports: list[dict]


def eval_name(spec: glue.TaskSpec, suffix: str) -> str:
    return f"{spec.name}-{suffix}" if suffix else spec.name


def read_task_data(spec: glue.TaskSpec, data_uri: str, on_bad_row: Literal["count", "raise"] = "count") -> TaskData:
    """Train, every dev set and (when present) every test set of a task folder."""
    train, rep = glue.read_tsv(storage.join(data_uri, spec.train_file), spec, "train", on_bad_row)
    reports, dev, test = [rep.to_dict()], {}, {}
    for suffix, name in spec.dev_files:
        dev[eval_name(spec, suffix)], rep = glue.read_tsv(storage.join(data_uri, name), spec, "dev", on_bad_row)
        reports.append(rep.to_dict())
    for stem, name in spec.test_files:
        uri = storage.join(data_uri, name)
        if storage.exists(uri):
            test[stem or spec.name], rep = glue.read_tsv(uri, spec, "test", on_bad_row)
            reports.append(rep.to_dict())
    if not train:
        raise ValueError(f"task {spec.name}: no usable training rows in {data_uri}")
    return TaskData(train, dev, test, reports)


def finetune_glue_task(spec: glue.TaskSpec, data: TaskData | str, checkpoint_dir: str, hp: HyperParams,
                       output_uri: str | None = None, from_scratch: bool = False) -> dict:
    """Fine-tune on ``data`` (a TaskData or a task folder URI), evaluate every dev set after each
    epoch, write dev/test predictions and ``metrics.json`` under ``output_uri``; returns the metrics.
    ``from_scratch``: the checkpoint's shape and tokenizer, but random weights (the baseline that shows
    what pretraining bought)."""
    if isinstance(data, str):
        data = read_task_data(spec, data)
    device = pick_device()
    tok = load_tokenizer(checkpoint_dir)
    train_rows = data.train[:hp.max_train_examples] if hp.max_train_examples else data.train
    train_enc = encode_examples(tok, train_rows, hp.max_seq_length, spec.is_regression)
    dev_enc = {name: encode_examples(tok, rows[:hp.max_eval_examples] if hp.max_eval_examples else rows,
                                     hp.max_seq_length, spec.is_regression) for name, rows in data.dev.items()}
    torch.manual_seed(hp.seed)  # the fresh head's initialisation and dropout
    model = classifier(checkpoint_dir, spec.num_labels, from_scratch).to(device)
    check_vocabulary(tok, model, checkpoint_dir)
    history: list[dict] = []

    def evaluate(epoch: int, train_loss: float, seconds: float, cpu_seconds: float) -> None:
        evals = {name: metrics.compute_metrics(spec.metrics, logits_to_predictions(
            spec, predict(model, enc, hp, tok.pad_id, device)), enc.labels) for name, enc in dev_enc.items()}
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_seconds": seconds,
                        "epoch_cpu_seconds": cpu_seconds, "dev": evals})

    train_epochs(model, len(train_enc.input_ids), lambda rows: pad_batch(train_enc, rows, tok.pad_id), hp, device,
                 evaluate, label=spec.name + (" (from scratch)" if from_scratch else ""))
    final = history[-1]["dev"]
    result = {
        "task": spec.name, "hyper_params": asdict(hp), "num_train_examples": len(train_enc.input_ids),
        "dev": final, "score": 100 * metrics.task_score(list(final.values()), spec.metrics) if final else None,
        "epochs": history, "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
        "data_reports": data.reports, "device": str(device), "from_scratch": from_scratch,
    }
    if output_uri is not None:
        write_predictions(spec, model, tok, dev_enc, data.test, hp, device, output_uri)
        storage.write_json_atomic(storage.join(output_uri, "metrics.json"), result)
    return result


def classifier(checkpoint_dir: str, num_labels: int, from_scratch: bool = False) -> nn.Module:
    """The checkpoint's sequence classifier; ``from_scratch``: the same shape with the reference random
    initialisation (``bert_core.init_weights``) instead of the checkpoint's weights."""
    if from_scratch:
        return BertForSequenceClassification(read_hf_config(checkpoint_dir), num_labels)
    return load_pretrained(checkpoint_dir, "sequence_classification", num_labels=num_labels)


def write_predictions(spec: glue.TaskSpec, model: nn.Module, tok: WordPieceTokenizer, dev_enc: dict[str, Encoded],
                      test: dict[str, list[glue.Example]], hp: HyperParams, device: torch.device,
                      output_uri: str) -> None:
    """``dev_predictions/{eval}.tsv`` (id, prediction, label) and leaderboard ``glue_submission/{stem}.tsv``."""
    for name, enc in dev_enc.items():
        preds = logits_to_predictions(spec, predict(model, enc, hp, tok.pad_id, device))
        lines = ["id\tprediction\tlabel"] + [f"{i}\t{p}\t{y}" for i, p, y in zip(enc.ids, preds, enc.labels)]
        storage.write_bytes_atomic(storage.join(output_uri, "dev_predictions", f"{name}.tsv"),
                                   ("\n".join(lines) + "\n").encode("utf-8"))
    for stem, examples in test.items():
        enc = encode_examples(tok, examples, hp.max_seq_length, spec.is_regression)
        preds = logits_to_predictions(spec, predict(model, enc, hp, tok.pad_id, device))
        if spec.name == "stsb":  # the leaderboard takes similarity scores in [0, 5]
            preds = np.clip(preds, 0.0, 5.0)
        storage.write_bytes_atomic(storage.join(output_uri, "glue_submission", f"{stem}.tsv"),
                                   glue.format_predictions(spec, enc.ids, list(preds)).encode("utf-8"))
