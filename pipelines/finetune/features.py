"""EXAMPLES -> FEATURES: BERT as a frozen feature extractor (Devlin et al., 2019, §5.3).

Chosen layers' hidden states (``BertModel.hidden_states``: index 0 is the embedding output, 1..L the
layers, negative indices count from the end) are concatenated or summed, then taken per token or
pooled ([CLS] or the mean over real tokens), and written as parquet with the example id so every row
traces back to its input.

Input (a pyarrow table), one of:
- text rows (GLUE, see ``examples_table``): ``id``, ``text_a``, ``text_b`` (null for one sentence),
  ``label`` (null when unknown);
- pre-split words (tagging, see ``words_table``): ``id``, ``words`` (list of strings), ``labels``
  (one per word, or null). Per-token features of words are each word's first sub-word;
- multiple choice (SWAG, CommonsenseQA, COPA, see ``choices_table``): text rows, one per
  ``[CLS] context [SEP] choice [SEP]`` pair, label 1 on the right choice (``probe.train_choice_scorer``).

SQuAD (span) tasks have no input here: see ``probe.probe_kind`` for why the feature-based setting is
not offered for them.

Output (``output_schema``): ``id``, ``position`` (token mode only: the word index for words, the
sub-word index for text), ``label``, ``features`` (fixed-size list<float32>). Rows sorted by
(id, position).

``extract_batch`` is the pure core (a batch of examples -> feature rows); ``FeatureExtractor`` holds
the model once per Ray actor; ``extract_features`` runs them with Ray Data ``map_batches`` over
``concurrency`` actors and commits the parquet output through ``pipelines.stage_store``.

Determinism: the bytes do not depend on the number of actors or the batch size. Rows go in sorted
by id and come back in that order (``preserve_order``); the driver cuts them into files of
``rows_per_file`` rows. Each row is padded to a length set by its own length only (a multiple of
``pad_to_multiple``) and runs with rows of the same padded length: on CPU a row's result then does
not depend on what it is batched with (checked bit for bit; padding to a different length changes
the last bits). That needs MKL's strict reproducibility mode (``REPRODUCIBLE_CPU_ENV``): on AVX-512
CPUs MKL's default sgemm path rounds a row differently by its place in the batch (up to ~1e-6,
measured), so the actors run with it; a process calling ``extract_batch`` itself sets
``MKL_CBWR=AUTO,STRICT`` before its first matrix product (MKL reads it once). GPU kernels may choose
their algorithm by batch shape, so on GPU this is not claimed.

    from pipelines.finetune.features import FeatureConfig, examples_table, extract_features
    out_uri = extract_features(examples_table(examples), checkpoint_uri, FeatureConfig(concurrency=2), root)
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines import parquet_files, stage_store, storage
from pipelines.finetune import glue
from pipelines.typed_config import config_hash

STAGE = "features"
VERSION = 1
REPRODUCIBLE_CPU_ENV = {"MKL_CBWR": "AUTO,STRICT"}
"""The actors' environment: MKL's conditional numerical reproducibility, strict (results that do not
depend on a row's memory alignment), on MKL's best code path for the CPU. Its cost, measured on
this box: none on large products, ~18% on small unaligned ones."""


@dataclass(frozen=True)
class FeatureConfig:
    layers: tuple[int, ...] = (-4, -3, -2, -1)
    """Hidden states to use: 0 = embedding output, 1..L = layer outputs, negative = from the end
    (the default is the paper's best, the last four). One entry = a single layer."""
    combine: Literal["concat", "sum"] = "concat"
    """How the chosen layers become one vector per token: concatenated (width H x len(layers)) or summed (H)."""
    pooling: Literal["cls", "mean", "token"] = "cls"
    """``cls``: the [CLS] vector; ``mean``: the mean over the real tokens ([CLS]/[SEP] included);
    ``token``: one row per sub-word (text) or per word, at its first sub-word (words)."""
    max_seq_length: int = 128
    """Sub-words per example, [CLS]/[SEP] included; text is truncated longest-first, words must fit."""
    pad_to_multiple: int = 16
    """Rows are padded to their length rounded up to this (see the module docstring: determinism)."""
    batch_size: int = 64
    """Examples per Ray Data batch, i.e. per call of one actor."""
    concurrency: int = 1
    """Actors, each holding the model once."""
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    """> 0 puts each actor's model on a GPU (fractions share one)."""
    rows_per_file: int = 8192
    """Output rows per parquet file."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("FeatureConfig.layers must name at least one hidden state")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"FeatureConfig.layers repeats a layer: {list(self.layers)}")
        positive = {"max_seq_length": self.max_seq_length, "pad_to_multiple": self.pad_to_multiple,
                    "batch_size": self.batch_size, "concurrency": self.concurrency,
                    "rows_per_file": self.rows_per_file}
        bad = [f"{k}={v}" for k, v in positive.items() if v < 1]
        if bad or self.max_seq_length < 3:
            raise ValueError(f"FeatureConfig: {', '.join(bad) or 'max_seq_length < 3'} (must be positive; "
                             "max_seq_length >= 3)")
        if self.num_cpus_per_actor < 0 or self.num_gpus_per_actor < 0:
            raise ValueError("FeatureConfig: num_cpus_per_actor and num_gpus_per_actor must be >= 0")

    def layer_indices(self, num_layers: int) -> list[int]:
        """The chosen hidden states as indices into the num_layers + 1 of them; errors name the bad one."""
        out = []
        for i in self.layers:
            if not -(num_layers + 1) <= i <= num_layers:
                raise ValueError(f"FeatureConfig.layers: {i} is outside the {num_layers + 1} hidden states "
                                 f"(0 = embeddings .. {num_layers}, or -1 .. -{num_layers + 1})")
            out.append(i % (num_layers + 1))
        return out

    def feature_dim(self, hidden_size: int) -> int:
        return hidden_size * (len(self.layers) if self.combine == "concat" else 1)


# --- schemas -------------------------------------------------------------------------------------
TEXT_SCHEMA = pa.schema([("id", pa.string()), ("text_a", pa.string()), ("text_b", pa.string()),
                         ("label", pa.int64())])
WORDS_SCHEMA = pa.schema([("id", pa.string()), ("words", pa.list_(pa.string())), ("labels", pa.list_(pa.int64()))])


def output_schema(cfg: FeatureConfig, dim: int) -> pa.Schema:
    fields = [pa.field("id", pa.string(), nullable=False)]
    if cfg.pooling == "token":
        fields.append(pa.field("position", pa.int32(), nullable=False))
    return pa.schema(fields + [pa.field("label", pa.int64()), pa.field("features", pa.list_(pa.float32(), dim))])


def examples_table(examples: Sequence[glue.Example]) -> pa.Table:
    """GLUE examples (``glue.read_tsv``) as the text input; the guid (``file:line``) is the id.
    Regression targets are not carried (probes here are classifiers)."""
    return pa.table({"id": [e.guid for e in examples], "text_a": [e.text_a for e in examples],
                     "text_b": [e.text_b for e in examples],
                     "label": [e.label if isinstance(e.label, int) else None for e in examples]}, schema=TEXT_SCHEMA)


def words_table(ids: Sequence[str], words: Sequence[Sequence[str]],
                labels: Sequence[Sequence[int]] | None = None) -> pa.Table:
    """Pre-split sentences as the words input; ``labels`` (one int per word) ride along."""
    return pa.table({"id": list(ids), "words": [list(w) for w in words],
                     "labels": [list(x) for x in labels] if labels is not None else [None] * len(ids)},
                    schema=WORDS_SCHEMA)


def choices_table(examples) -> pa.Table:
    """Multiple-choice questions (``multiple_choice.ChoiceExample``) as the text input: one row per
    (context, choice) pair, id ``{guid}#{choice index:02d}`` (a question's rows stay together and in choice
    order when sorted), text_a the context, text_b the choice, label 1 on the right choice and 0 on the
    others; ``probe.group_choices`` puts the feature rows back together per question."""
    rows = [(f"{e.guid}#{c:02d}", e.context, choice, int(c == e.label))
            for e in examples for c, choice in enumerate(e.choices)]
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(TEXT_SCHEMA.names)}, schema=TEXT_SCHEMA)


def check_input(table: pa.Table) -> pa.Table:
    """The table cast to its input schema, sorted by id; errors name the column or the row."""
    schema = WORDS_SCHEMA if "words" in table.column_names else TEXT_SCHEMA
    missing = [n for n in schema.names if n not in table.column_names and n not in ("text_b", "label", "labels")]
    if missing:
        raise ValueError(f"feature input lacks column(s) {missing}; text input has {TEXT_SCHEMA.names}, "
                         f"words input {WORDS_SCHEMA.names}")
    for name in schema.names:  # optional columns absent -> all null
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"feature input does not fit {schema}: {e}") from e
    if table.num_rows == 0:
        raise ValueError("feature input has no rows")
    if table["id"].null_count:
        raise ValueError("feature input: the id column holds nulls")
    if pc.count_distinct(table["id"]).as_py() != table.num_rows:
        counts = pc.value_counts(table["id"]).to_pylist()
        raise ValueError(f"feature input: id {next(c['values'] for c in counts if c['counts'] > 1)!r} is not unique")
    return table.sort_by([("id", "ascending")])


# --- the core --------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """One example's sub-words and which positions give its token rows."""

    input_ids: list[int]
    token_type_ids: list[int]
    keep: list[int]
    """Token positions of the output rows in token mode (first sub-words for words)."""
    labels: list[int | None]
    """The label of each output row: the example's (pooled) or each word's (words, token mode)."""


def truncating_tokenizer(tok, max_seq_length: int):
    """A copy of ``tok``'s tokenizer that truncates longest-first and never pads."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_str(tok.tokenizer.to_str())
    t.enable_truncation(max_seq_length, strategy="longest_first")
    t.no_padding()
    return t


def encode_text(tokenizer, table: pa.Table, pooling: str) -> list[Encoded]:
    a, b, labels = (table[c].to_pylist() for c in ("text_a", "text_b", "label"))
    encodings = tokenizer.encode_batch([x if y is None else (x, y) for x, y in zip(a, b)])
    out = []
    for e, label in zip(encodings, labels):
        keep = list(range(len(e.ids))) if pooling == "token" else [0]
        out.append(Encoded(e.ids, e.type_ids, keep, [None if pooling == "token" else label] * len(keep)))
    return out


def encode_words(tokenizer, table: pa.Table, pooling: str, max_seq_length: int) -> list[Encoded]:
    ids, words, labels = (table[c].to_pylist() for c in ("id", "words", "labels"))
    out = []
    for e, row_id, row_words, row_labels in zip(tokenizer.encode_batch(words, is_pretokenized=True), ids, words, labels):
        if not row_words:
            raise ValueError(f"example {row_id!r}: no words")
        if row_labels is not None and len(row_labels) != len(row_words):
            raise ValueError(f"example {row_id!r}: {len(row_labels)} labels for {len(row_words)} words")
        first: dict[int, int] = {}
        for pos, w in enumerate(e.word_ids):
            if w is not None:
                first.setdefault(w, pos)
        lost = [w for w in range(len(row_words)) if w not in first]
        if lost:
            raise ValueError(f"example {row_id!r}: word {lost[0]} ({row_words[lost[0]]!r}) has no sub-word within "
                             f"max_seq_length={max_seq_length} ({len(lost)} words lost); raise max_seq_length")
        if pooling == "token":
            keep = [first[w] for w in range(len(row_words))]
            out.append(Encoded(e.ids, e.type_ids, keep, row_labels or [None] * len(keep)))
        else:
            out.append(Encoded(e.ids, e.type_ids, [0], [None]))
    return out


def padded_length(n: int, cfg: FeatureConfig) -> int:
    return min(-(-n // cfg.pad_to_multiple) * cfg.pad_to_multiple, cfg.max_seq_length)


@torch.no_grad()
def combined_states(model, rows: Sequence[Encoded], length: int, cfg: FeatureConfig, pad_id: int,
                    device: torch.device) -> torch.Tensor:
    """(B, length, D) float32: the chosen layers of rows padded to ``length``, concatenated or summed."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        n = len(row.input_ids)
        ids[r, :n], types[r, :n], mask[r, :n] = torch.tensor(row.input_ids), torch.tensor(row.token_type_ids), 1
    states = model.hidden_states(ids.to(device), types.to(device), mask.to(device))
    chosen = [states[i] for i in cfg.layer_indices(len(states) - 1)]
    x = torch.cat(chosen, dim=-1) if cfg.combine == "concat" else torch.stack(chosen).sum(0)
    return x.float().cpu()


def row_features(x: torch.Tensor, row: Encoded, pooling: str) -> torch.Tensor:
    """(rows, D) for one example from its (T, D) combined states."""
    real = x[:len(row.input_ids)]
    if pooling == "mean":
        return real.mean(0, keepdim=True)
    return real[row.keep]


def extract_batch(table: pa.Table, model, tokenizer, cfg: FeatureConfig, pad_id: int,
                  device: torch.device = torch.device("cpu")) -> pa.Table:
    """A batch of examples (``check_input``'s schema) -> feature rows (``output_schema``), in input order."""
    encoded = (encode_words(tokenizer, table, cfg.pooling, cfg.max_seq_length) if "words" in table.column_names
               else encode_text(tokenizer, table, cfg.pooling))
    feats: list[torch.Tensor | None] = [None] * len(encoded)
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(encoded):
        by_length.setdefault(padded_length(len(row.input_ids), cfg), []).append(i)
    for length, members in sorted(by_length.items()):
        x = combined_states(model, [encoded[i] for i in members], length, cfg, pad_id, device)
        for r, i in enumerate(members):
            feats[i] = row_features(x[r], encoded[i], cfg.pooling)
    dim = cfg.feature_dim(model.config.hidden_size)
    flat = torch.cat(feats).numpy().astype(np.float32, copy=False).reshape(-1)
    ids = table["id"].to_pylist()
    columns = {"id": [ids[i] for i, row in enumerate(encoded) for _ in row.keep]}
    if cfg.pooling == "token":
        columns["position"] = pa.array([p for row in encoded for p in range(len(row.keep))], pa.int32())
    columns["label"] = pa.array([y for row in encoded for y in row.labels], pa.int64())
    columns["features"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    return pa.table(columns, schema=output_schema(cfg, dim))


# --- Ray ------------------------------------------------------------------------------------------
def load_encoder(checkpoint_uri: str, cache_dir: str):
    """(model in eval mode, tokenizer, checkpoint dir) from any HF-layout checkpoint URI."""
    from bert_core import load_pretrained
    from pipelines.finetune import train

    directory = train.local_checkpoint(checkpoint_uri, cache_dir)
    tok = train.load_tokenizer(directory)
    model = load_pretrained(directory, "encoder").eval()
    train.check_vocabulary(tok, model, directory)
    return model, tok


class FeatureExtractor:
    """Ray Data callable class: the model is loaded once per actor; each call is one batch."""

    def __init__(self, checkpoint_uri: str, cfg: FeatureConfig, env: dict[str, str]):
        storage.apply_env(env)
        self.cfg = cfg
        use_gpu = cfg.num_gpus_per_actor > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        cache = os.path.join(tempfile.gettempdir(), "bert-features-checkpoint", config_hash(checkpoint_uri))
        model, self.tok = load_encoder(checkpoint_uri, cache)
        self.model = model.to(self.device)
        self.tokenizer = truncating_tokenizer(self.tok, cfg.max_seq_length)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return extract_batch(batch, self.model, self.tokenizer, self.cfg, self.tok.pad_id, self.device)


def extract_features(table: pa.Table, checkpoint_uri: str, cfg: FeatureConfig, root: str,
                     input_identity: str | None = None) -> str:
    """Features of every example, committed under ``{root}/features/{key}``; returns that URI. A
    re-run with the same config, checkpoint and input finds the committed output and does nothing.
    ``input_identity`` names the input in the key (default: a hash of the table's content)."""
    table = check_input(table)
    identity = input_identity or _table_digest(table)

    def produce(writer: stage_store.StageWriter) -> None:
        import ray.data

        # blocks of batch_size rows, so every actor gets work from the first batch on
        blocks = [table.slice(i, cfg.batch_size) for i in range(0, table.num_rows, cfg.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            FeatureExtractor, fn_constructor_args=(checkpoint_uri, cfg, storage.capture_env()),
            batch_size=cfg.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.num_cpus_per_actor, num_gpus=cfg.num_gpus_per_actor or None,
            runtime_env={"env_vars": REPRODUCIBLE_CPU_ENV})
        for part in stage_store.iter_arrow(ds, batch_size=cfg.rows_per_file):
            writer.write_table(part, output_schema(cfg, part.schema.field("features").type.list_size))
        writer.stats.update({"examples": table.num_rows})

    return stage_store.run_stage(root, STAGE, cfg, (checkpoint_uri, identity), produce, VERSION)


def _table_digest(table: pa.Table) -> str:
    import hashlib

    return hashlib.sha256(parquet_files.table_to_parquet_bytes(table)).hexdigest()[:16]


def read_features(uri: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, labels (-1 where null), features (N, D) float32) of a committed output, in its row order."""
    table = stage_store.read_table(uri)
    dim = table.schema.field("features").type.list_size
    feats = table["features"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    labels = table["label"].fill_null(-1).to_numpy()
    return table["id"].to_pylist(), labels, feats
