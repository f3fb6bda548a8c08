"""``bert-pipeline finetune``: fine-tune and evaluate any HF-layout BERT checkpoint on a run config's
tasks, without the rest of the DAG (what people use ``run_glue.py`` for).

    bert-pipeline finetune s3://bucket/bert-base-uncased demo root=runs/eval
    bert-pipeline finetune ./my-bert tasks.yaml root=s3://bucket/eval/my-bert
    bert-pipeline submit --address http://HEAD:8265 --finetune s3://bucket/bert tasks.yaml root=s3://bucket/eval

The tasks are the config's ``finetune`` section (a preset or a YAML file, as for ``run``). Every input
is checked here before any training: the checkpoint (config, weights, a vocabulary that fits the
embeddings) and each task's files (present, with the columns the task reads). Then
``run_finetune_jobs`` fine-tunes the tasks in parallel, as the DAG's finetune stage does, under
``{root}/finetune_checkpoint/``: each task's results are committed there by its ``result.json``,
written last, so a re-run skips a finished task and redoes only the rest. ``results.md`` /
``results.json`` there are the finetune stage's results table.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Callable

from pipelines import storage
from pipelines.finetune import glue
from pipelines.finetune.config import SQUAD_TASKS, FinetuneConfig, TaskJob, task_data_uri
from pipelines.finetune.jobs import run_finetune_jobs
from pipelines.finetune.squad import SquadParams
from pipelines.finetune.squad.read import SquadVersionError, check_version

OUTPUT_DIR = "finetune_checkpoint"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_VOCABS = ("vocab.txt", "tokenizer.json")


class BadInputError(ValueError):
    """A checkpoint or task file that cannot be used; the message names the file. Nothing has run."""


def output_root(root: str) -> str:
    return storage.join(root, OUTPUT_DIR)


def normalize_checkpoint_uri(uri: str) -> str:
    """Local paths made absolute: the task results' hash covers the checkpoint URI, so a re-run from
    another working directory must name the checkpoint the same way to find them."""
    return os.path.abspath(storage.filesystem(uri)[1]) if storage.is_local(uri) else uri.rstrip("/")


# --- checks before any training ------------------------------------------------------------------
def check_checkpoint(uri: str) -> None:
    """config.json, weights and a vocabulary present; the vocabulary fits the word embeddings."""
    if not storage.is_dir(uri):
        raise BadInputError(f"checkpoint {uri}: no such folder" if not storage.exists(uri) else
                            f"checkpoint {uri}: a file, not a folder; give the folder holding config.json and the weights")
    names = {n for n in ("config.json", *_WEIGHTS, *_VOCABS, "tokenizer_config.json")
             if storage.exists(storage.join(uri, n))}
    if "config.json" not in names:
        raise BadInputError(f"{storage.join(uri, 'config.json')}: missing; {uri} is not an HF-layout BERT checkpoint")
    if not names & set(_WEIGHTS):
        raise BadInputError(f"{uri}: holds no weights ({' or '.join(_WEIGHTS)})")
    if not names & set(_VOCABS):
        raise BadInputError(f"{uri}: holds no tokenizer or vocabulary (neither {' nor '.join(_VOCABS)}); "
                            f"copy the one it was trained with next to its config.json")
    config_uri = storage.join(uri, "config.json")
    try:
        rows = int(storage.read_json(config_uri)["vocab_size"])
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{config_uri}: not a BERT config with a vocab_size ({type(e).__name__}: {e})") from e
    vocab_uri = storage.join(uri, "vocab.txt" if "vocab.txt" in names else "tokenizer.json")
    num_tokens = _vocabulary_size(uri, names)
    if num_tokens > rows:
        raise BadInputError(f"{vocab_uri}: the vocabulary has {num_tokens} tokens but {config_uri} gives the word "
                            f"embeddings {rows} rows: they do not belong together")
    if "model.safetensors" in names:
        embedding_rows = _safetensors_embedding_rows(storage.join(uri, "model.safetensors"))
        if embedding_rows is not None and embedding_rows != rows:
            raise BadInputError(f"{storage.join(uri, 'model.safetensors')}: word embeddings have {embedding_rows} "
                                f"rows but {config_uri} says vocab_size {rows}")


def _vocabulary_size(uri: str, names: set[str]) -> int:
    """Tokens the checkpoint's tokenizer can emit, loaded as training will load it (small files only)."""
    from pipelines.finetune.train import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="ckpt-check-") as tmp:
        for name in names & {*_VOCABS, "tokenizer_config.json"}:
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(storage.read_bytes(storage.join(uri, name)))
        used = storage.join(uri, "vocab.txt" if "vocab.txt" in names else "tokenizer.json")
        try:
            tok = load_tokenizer(tmp)
        except Exception as e:  # a corrupt file: tokenizers and json raise many kinds
            raise BadInputError(f"{used}: cannot be loaded as a WordPiece tokenizer ({type(e).__name__}: {e})") from e
        if None in (tok.cls_id, tok.sep_id, tok.pad_id):
            raise BadInputError(f"{used}: lacks [CLS], [SEP] or [PAD], which every task's input needs")
        return tok.vocab_size


def _safetensors_embedding_rows(uri: str) -> int | None:
    """Rows of the word-embedding matrix, read from the safetensors header only (not the weights)."""
    with storage.open_binary(uri) as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > 100_000_000:
            raise BadInputError(f"{uri}: not a safetensors file (header length {header_len})")
        header = json.loads(f.read(header_len))
    shapes = [v["shape"] for k, v in header.items() if k.endswith("word_embeddings.weight")]
    return int(shapes[0][0]) if shapes else None


def check_task_files(cfg: FinetuneConfig) -> None:
    """Each task's train and dev files exist and have the columns (GLUE), layout (SQuAD) or tag scheme (CoNLL)
    it reads."""
    if not cfg.tasks:
        raise BadInputError("finetune.tasks is empty: the config names no task to fine-tune")
    for job in cfg.tasks:
        try:
            data_uri = task_data_uri(cfg, job)
        except ValueError as e:
            raise BadInputError(f"finetune.tasks {job.name}: {e}") from e
        if job.is_squad:
            _check_squad_files(job, data_uri)
        elif job.is_ner:
            _check_conll_files(job, data_uri, cfg.on_bad_row)
        elif job.is_multiple_choice:
            _check_choice_files(job, data_uri, cfg.on_bad_row)
        else:
            _check_glue_files(job.spec or glue.GLUE_TASKS[job.name], data_uri)


def _check_glue_files(spec: glue.TaskSpec, data_uri: str) -> None:
    needed = [spec.text_a] + ([spec.text_b] if spec.text_b else []) + [spec.label]
    for name in [spec.train_file] + [f for _, f in spec.dev_files]:
        uri = storage.join(data_uri, name)
        if not storage.exists(uri):
            raise BadInputError(f"{uri}: missing (task {spec.name} reads {name} from {data_uri})")
        first = next(storage.iter_lines(uri), None)
        if first is None:
            raise BadInputError(f"{uri}: empty file")
        fields = first.rstrip("\r\n").split("\t")
        if spec.headerless_columns:
            if len(fields) != len(spec.headerless_columns):
                raise BadInputError(f"{uri}:1: {len(fields)} columns, task {spec.name} expects "
                                    f"{len(spec.headerless_columns)} ({', '.join(spec.headerless_columns)})")
            continue
        missing = [c for c in needed if c not in fields]
        if missing:
            raise BadInputError(f"{uri}:1: header {fields} lacks column(s) {missing} that task {spec.name} reads")


def _check_squad_files(job: TaskJob, data_uri: str) -> None:
    params = job.squad or SquadParams(version=SQUAD_TASKS.get(job.name, "v1.1"))
    for name in (params.train_file or f"train-{params.version}.json", params.dev_file or f"dev-{params.version}.json"):
        uri = storage.join(data_uri, name)
        if not storage.exists(uri):
            raise BadInputError(f"{uri}: missing (task {job.name} reads {name} from {data_uri})")
        try:
            data = storage.read_json(uri)
        except ValueError as e:
            raise BadInputError(f"{uri}: not JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BadInputError(f"{uri}: not a SQuAD file (no top-level 'data' list)")
        try:
            check_version(data, uri, params.version)
        except SquadVersionError as e:
            raise BadInputError(str(e)) from e


def _check_conll_files(job: TaskJob, data_uri: str, on_bad_row: str) -> None:
    """Both files read in full: the tag scheme (and with on_bad_row=raise every row) is checked before training."""
    from pipelines.finetune import conll
    from pipelines.finetune.config import NER_TASKS

    params = job.ner or NER_TASKS[job.name]
    for name in params.files:
        uri = storage.join(data_uri, name)
        if not storage.exists(uri):
            raise BadInputError(f"{uri}: missing (task {job.name} reads {name} from {data_uri})")
        try:
            conll.read_conll(uri, params, on_bad_row)
        except ValueError as e:  # SchemeError, BadRowError: both name the file (and line)
            raise BadInputError(str(e)) from e


def _check_choice_files(job: TaskJob, data_uri: str, on_bad_row: str) -> None:
    """Both files read in full: a row with another number of choices (and with on_bad_row=raise every bad row)
    fails here, naming the file and line, before any training."""
    from pipelines.finetune.multiple_choice.read import read_choice_data

    try:
        read_choice_data(job.choice_spec, data_uri, on_bad_row)
    except (ValueError, FileNotFoundError) as e:  # ChoiceCountError, BadRowError: both name the file and line
        raise BadInputError(str(e)) from e


# --- the command ---------------------------------------------------------------------------------
def prepare(checkpoint_uri: str, cfg: FinetuneConfig) -> tuple[str, FinetuneConfig]:
    """The normalised checkpoint URI and the tasks, every input checked."""
    checkpoint_uri = normalize_checkpoint_uri(checkpoint_uri)
    check_checkpoint(checkpoint_uri)
    check_task_files(cfg)
    return checkpoint_uri, cfg


def finetune_checkpoint(checkpoint_uri: str, tasks: FinetuneConfig, root: str,
                        log: Callable[[str], None] = print) -> dict:
    """Fine-tune and evaluate ``checkpoint_uri`` on ``tasks`` (as returned by ``prepare``); the summary."""
    return run_finetune_jobs(tasks, checkpoint_uri, output_root(root), log=log)
