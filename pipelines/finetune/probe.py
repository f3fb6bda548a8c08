"""Frozen-feature probes: a small classifier on pooled features (a GLUE task), a small tagger on
per-word features (NER) and a choice scorer on the pooled features of each (context, choice) pair
(multiple choice: SWAG, CommonsenseQA, COPA), trained in torch on what ``pipelines.finetune.features``
wrote. SQuAD (span) tasks are refused (``probe_kind`` says why).

Both standardise the features with the training set's mean and deviation (the layers' scales differ
by an order of magnitude), train with AdamW on shuffled mini-batches and are deterministic given
``ProbeConfig.seed``. The classifier is logistic regression (``hidden_size=0``) or one hidden layer;
the tagger is a per-word linear layer (``hidden_size=0``) or a one-layer BiLSTM under it, the
paper's §5.3 tagger made small.

    model = train_classifier(x_train, y_train, num_labels=2, cfg=ProbeConfig())
    accuracy = (predict_classifier(model, x_dev) == y_dev).mean()

    qids, x, y = group_choices(*features.read_features(uri))  # rows of features.choices_table
    scorer = train_choice_scorer(x, y, ProbeConfig())          # x (N, C, D): one score per choice
    accuracy = (predict_choices(scorer, x_dev) == y_dev).mean()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ProbeConfig:
    hidden_size: int = 0
    """0: a linear probe; > 0: one hidden layer (classifier) or a BiLSTM of this width per direction (tagger)."""
    num_epochs: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    """Examples (classifier) or sentences (tagger) per step."""
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size < 0 or self.num_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"ProbeConfig: hidden_size >= 0, num_epochs, batch_size, learning_rate > 0: {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ProbeConfig.dropout must be in [0, 1), got {self.dropout}")


class Standardize(nn.Module):
    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _head(dim: int, num_labels: int, cfg: ProbeConfig) -> nn.Module:
    if cfg.hidden_size == 0:
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dim, num_labels))
    return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dim, cfg.hidden_size), nn.GELU(),
                         nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, num_labels))


def _fit(model: nn.Module, num_items: int, loss_of, cfg: ProbeConfig) -> None:
    """The shared loop: ``loss_of(item indices)`` is a batch's loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.num_epochs):
        order = torch.randperm(num_items, generator=generator)
        for start in range(0, num_items, cfg.batch_size):
            loss = loss_of(order[start:start + cfg.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def train_classifier(x: np.ndarray, y: np.ndarray, num_labels: int, cfg: ProbeConfig) -> nn.Module:
    """A probe over (N, D) features with class ids ``y`` (N,)."""
    if len(x) != len(y) or not len(x):
        raise ValueError(f"train_classifier: {len(x)} feature rows for {len(y)} labels")
    if y.min() < 0 or y.max() >= num_labels:
        raise ValueError(f"train_classifier: labels in [{y.min()}, {y.max()}], expected [0, {num_labels})")
    torch.manual_seed(cfg.seed)
    xt, yt = torch.tensor(np.asarray(x), dtype=torch.float32), torch.tensor(np.asarray(y), dtype=torch.long)
    model = nn.Sequential(Standardize(xt), _head(xt.shape[1], num_labels, cfg))
    _fit(model, len(xt), lambda rows: F.cross_entropy(model(xt[rows]), yt[rows]), cfg)
    return model


@torch.no_grad()
def predict_classifier(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model(torch.tensor(np.asarray(x), dtype=torch.float32)).argmax(-1).numpy()


class Tagger(nn.Module):
    """Standardised per-word features -> (BiLSTM) -> a label per word."""

    def __init__(self, train_rows: torch.Tensor, num_labels: int, cfg: ProbeConfig):
        super().__init__()
        dim = train_rows.shape[1]
        self.standardize = Standardize(train_rows)
        self.lstm = (nn.LSTM(dim, cfg.hidden_size, batch_first=True, bidirectional=True)
                     if cfg.hidden_size else None)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden_size if cfg.hidden_size else dim, num_labels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.standardize(x))  # (B, W, D)
        if self.lstm is not None:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            h = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]
        return self.out(self.dropout(h))  # (B, W, num_labels)


def _pad_sentences(sentences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, W_max, D) zero-padded and the lengths (N,); built once, batches are slices of it."""
    lengths = torch.tensor([len(s) for s in sentences])
    x = torch.zeros(len(sentences), int(lengths.max()), sentences[0].shape[1])
    for i, s in enumerate(sentences):
        x[i, :len(s)] = torch.tensor(s)
    return x, lengths


def _pad_tags(tags: Sequence[np.ndarray], width: int) -> torch.Tensor:
    y = torch.full((len(tags), width), IGNORE_INDEX, dtype=torch.long)
    for i, t in enumerate(tags):
        y[i, :len(t)] = torch.tensor(np.asarray(t, np.int64))
    return y


def train_tagger(sentences: Sequence[np.ndarray], tags: Sequence[np.ndarray], num_labels: int,
                 cfg: ProbeConfig) -> Tagger:
    """A tagger over sentences of per-word features (W_i, D) with a tag id per word (W_i,)."""
    if len(sentences) != len(tags) or any(len(s) != len(t) for s, t in zip(sentences, tags)):
        raise ValueError("train_tagger: every sentence needs one tag per word")
    torch.manual_seed(cfg.seed)
    model = Tagger(torch.from_numpy(np.concatenate(sentences).astype(np.float32)), num_labels, cfg)
    x, lengths = _pad_sentences(sentences)
    y = _pad_tags(tags, x.shape[1])

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        width = int(lengths[rows].max())  # the batch's own longest sentence
        logits = model(x[rows, :width], lengths[rows])
        return F.cross_entropy(logits.reshape(-1, num_labels), y[rows, :width].reshape(-1), ignore_index=IGNORE_INDEX)

    _fit(model, len(sentences), loss_of, cfg)
    return model


@torch.no_grad()
def predict_tagger(model: Tagger, sentences: Sequence[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for start in range(0, len(sentences), batch_size):
        x, lengths = _pad_sentences(sentences[start:start + batch_size])
        pred = model(x, lengths).argmax(-1).numpy()
        out += [pred[i, :n] for i, n in enumerate(lengths.tolist())]
    return out


def group_by_id(ids: Sequence[str], labels: np.ndarray, feats: np.ndarray) -> tuple[list[str], list[np.ndarray],
                                                                                     list[np.ndarray]]:
    """Per-token rows (sorted by id, then position, as the features output is) -> per-sentence arrays."""
    starts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]] + [len(ids)]
    names = [ids[a] for a in starts[:-1]]
    return (names, [feats[a:b] for a, b in zip(starts, starts[1:])],
            [labels[a:b] for a, b in zip(starts, starts[1:])])


# --- multiple choice: one score per (context, choice) pair, softmax across the choices ---------------
def group_choices(ids: Sequence[str], labels: np.ndarray, feats: np.ndarray,
                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pooled rows of ``features.choices_table`` (id ``{question}#{choice:02d}``, sorted by id; label 1 on
    the right choice) -> (question ids, (N, C, D) features, (N,) right-choice index, -1 where unknown).
    Every question must have the same choices 0..C-1 and at most one right one; errors name the question."""
    questions: dict[str, list[int]] = {}
    for row, row_id in enumerate(ids):
        question, sep, choice = row_id.rpartition("#")
        if not sep or not choice.isdigit() or int(choice) != len(questions.setdefault(question, [])):
            raise ValueError(f"feature row {row_id!r}: not a choice row ({{question}}#{{choice:02d}}) in choice order")
        questions[question].append(row)
    sizes = {len(rows) for rows in questions.values()}
    if len(sizes) != 1 or min(sizes) < 2:
        q = next(q for q, rows in questions.items() if len(rows) != max(sizes) or len(rows) < 2)
        raise ValueError(f"question {q!r} has {len(questions[q])} choices, others {max(sizes)} "
                         "(need 2 or more, the same for every question)")
    y = np.full(len(questions), -1, dtype=np.int64)
    for i, (q, rows) in enumerate(questions.items()):
        right = [c for c, row in enumerate(rows) if labels[row] == 1]
        if len(right) > 1 or (not right and any(labels[row] == 0 for row in rows)):
            raise ValueError(f"question {q!r}: {len(right)} choices labelled right (need exactly one, or no labels)")
        y[i] = right[0] if right else -1
    order = np.array([row for rows in questions.values() for row in rows])
    return list(questions), np.asarray(feats)[order].reshape(len(questions), sizes.pop(), -1), y


def train_choice_scorer(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> nn.Module:
    """A probe scoring each choice's (N, C, D) features with one shared vector (or one hidden layer), trained
    with a softmax across each question's C choices: the SWAG recipe's head on frozen [CLS] features."""
    if x.ndim != 3 or len(x) != len(y) or not len(x):
        raise ValueError(f"train_choice_scorer: features {x.shape} (want (N, C, D)) for {len(y)} labels")
    if y.min() < 0 or y.max() >= x.shape[1]:
        raise ValueError(f"train_choice_scorer: labels in [{y.min()}, {y.max()}], expected [0, {x.shape[1]})")
    torch.manual_seed(cfg.seed)
    xt, yt = torch.tensor(np.asarray(x), dtype=torch.float32), torch.tensor(np.asarray(y), dtype=torch.long)
    model = nn.Sequential(Standardize(xt.reshape(-1, xt.shape[-1])), _head(xt.shape[-1], 1, cfg), nn.Flatten(-2))
    _fit(model, len(xt), lambda rows: F.cross_entropy(model(xt[rows]), yt[rows]), cfg)
    return model


@torch.no_grad()
def predict_choices(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The best-scored choice per question, (N,)."""
    return model(torch.tensor(np.asarray(x), dtype=torch.float32)).argmax(-1).numpy()


# --- which probe for which task --------------------------------------------------------------------
SPAN_TASK_ERROR = ("task {name!r}: the feature-based setting is not supported for span tasks (SQuAD v1.1/v2.0): "
                   "a span probe needs every question/context window's per-token features (~2.4 MB per 384-token "
                   "window at the last four layers, ~300 GB for SQuAD v2.0 train) with their character offsets, "
                   "max-context flags and the null score, which the features stage's pooled and per-word rows do "
                   "not carry, and the BERT paper's feature-based comparison (section 5.3) is NER only; fine-tune "
                   "it instead")


def probe_kind(task) -> str:
    """Which probe reads a fine-tuning task's frozen features: ``classifier`` (GLUE-format tasks, pooled
    rows), ``tagger`` (NER, per-word rows) or ``choice`` (multiple choice, ``features.choices_table``).
    ``task`` is a task name or a ``config.TaskJob``; SQuAD tasks raise ``ValueError`` (``SPAN_TASK_ERROR``)."""
    from pipelines.finetune.config import TaskJob

    job = task if isinstance(task, TaskJob) else TaskJob(name=task)
    if job.is_squad:
        raise ValueError(SPAN_TASK_ERROR.format(name=job.name))
    return "tagger" if job.is_ner else "choice" if job.is_multiple_choice else "classifier"
