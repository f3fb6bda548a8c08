"""BERT (Devlin et al., 2019) in pure torch, read top to bottom:
embeddings -> self-attention -> feed-forward -> encoder layer -> BertModel -> task heads.

Layers are post-LN as in the paper. Q, K and V are one fused projection (one matmul instead of
three); ``bert_core.checkpoint`` splits and joins it to match the Hugging Face layout. Attention runs
through ``scaled_dot_product_attention`` so the fused CPU/GPU kernels are used. The MLM head decodes
only the masked positions (about 15% of tokens) instead of projecting every token onto the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bert_core.config import BertConfig

IGNORE_INDEX = -100


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)  # (B, T, H)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)  # 3x (B, A, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, A, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, H))


class EncoderLayer(nn.Module):
    """Post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x)). With ``keep`` (the flat indices of the real tokens),
    the feed-forward block and its LayerNorm run on those rows only (MosaicBERT's unpad/pad): a padding
    position keeps its attention output, which no real token attends to and no loss reads."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, attn_mask)))
        if keep is None:
            return self.norm2(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))
        flat = x.reshape(-1, x.shape[-1])  # (B*T, H)
        h = flat.index_select(0, keep)  # (N, H): the real tokens
        h = self.norm2(h + self.dropout(self.ffn_out(F.gelu(self.ffn_in(h)))))
        return flat.index_copy(0, keep, h).view_as(x)


class Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from [CLS]


def check_inputs(config: BertConfig, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                 attention_mask: torch.Tensor | None) -> None:
    """Clear errors for the mistakes that otherwise surface as an index error deep in an embedding."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length {T} exceeds max_position_embeddings {config.max_position_embeddings}")
    for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {(B, T)} like input_ids")
    if torch.compiler.is_compiling() or input_ids.device.type != "cpu":
        # Reading values back from an accelerator waits for its queue (and splits a compiled graph):
        # callers that feed a GPU check the host batch with check_id_ranges before the copy.
        return
    check_id_ranges(config, input_ids, token_type_ids)


def check_id_ranges(config: BertConfig, input_ids, token_type_ids=None) -> None:
    """Token and segment ids inside the embedding tables; tensors or numpy arrays (host batches)."""
    if len(input_ids.reshape(-1)):
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= config.vocab_size:
            raise ValueError(f"input_ids hold ids in [{lo}, {hi}], outside the vocabulary [0, {config.vocab_size})")
    if token_type_ids is not None and len(token_type_ids.reshape(-1)):
        lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
        if lo < 0 or hi >= config.type_vocab_size:
            raise ValueError(f"token_type_ids hold [{lo}, {hi}], outside [0, {config.type_vocab_size})")


class BertModel(nn.Module):
    """Encoder: returns (sequence_output (B, T, H), pooled_output (B, H))."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.unpad = False
        """Run the feed-forward blocks on real tokens only (``EncoderLayer``). Its index has a
        data-dependent size: for eager runs (CPU), not for a compiled graph or a GPU step without host syncs."""

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_inputs(self.config, input_ids, token_type_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Boolean mask, True = attend; broadcast over heads and query positions: (B, 1, 1, T).
        attn_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        return self.embeddings(input_ids, token_type_ids), attn_mask

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, attn_mask = self._embed(input_ids, token_type_ids, attention_mask)
        keep = attention_mask.reshape(-1).nonzero().squeeze(1) if self.unpad and attention_mask is not None else None
        for layer in self.layers:
            x = layer(x, attn_mask, keep)
        pooled = self.pooler(x) if self.pooler is not None else None
        return x, pooled

    def hidden_states(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The embedding output and every layer's output: num_hidden_layers + 1 tensors (B, T, H), as
        ``transformers``' ``output_hidden_states=True``. For feature extraction (the paper's §5.3); kept
        apart from ``forward`` so training never holds references to every layer's output."""
        x, attn_mask = self._embed(input_ids, token_type_ids, attention_mask)
        states = [x]
        for layer in self.layers:
            x = layer(x, attn_mask)
            states.append(x)
        return states


def init_weights(module: nn.Module, std: float) -> None:
    """The reference initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
@dataclass
class PreTrainingOutput:
    loss: torch.Tensor
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_logits: torch.Tensor  # (N, V): only the selected positions (see num_predictions)
    mlm_labels: torch.Tensor  # (N,): the targets; -100 in padding slots of the static path
    nsp_logits: torch.Tensor  # (B, 2)


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to the word embeddings (+ own bias)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.word_embeddings = word_embeddings  # shared, not a copy
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(h, self.word_embeddings.weight, self.bias)


class BertForPreTraining(nn.Module):
    """Masked LM + Next Sentence Prediction; loss = MLM + NSP."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MLMHead(config, self.bert.embeddings.word)
        self.nsp = nn.Linear(config.hidden_size, 2)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                nsp_labels: torch.Tensor | None = None, num_predictions: int | None = None) -> PreTrainingOutput:
        """``mlm_labels``: (B, T), the original id at selected positions, -100 elsewhere.
        ``nsp_labels``: (B,), 1 where B is a random segment (NotNext), 0 where it is the real next.
        ``num_predictions``: when given (>= the most selected positions in any row, i.e. the masking's
        ``max_predictions_per_seq``), the head decodes a static (B, num_predictions) slice instead of a
        data-dependent number of rows: no host sync, and the whole step compiles as one graph."""
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        if mlm_labels is None:
            mlm_labels = torch.full_like(input_ids, IGNORE_INDEX)
        if mlm_labels.shape != input_ids.shape:
            raise ValueError(f"mlm_labels has shape {tuple(mlm_labels.shape)}, expected {tuple(input_ids.shape)}")
        selected = mlm_labels != IGNORE_INDEX  # (B, T)
        if num_predictions is None:
            masked_hidden = sequence[selected]  # (N, H): decode only where there is a label
            targets = mlm_labels[selected]
        else:
            k = min(num_predictions, input_ids.shape[1])
            # Selected positions first (stable: in order), then filler whose label is -100.
            pos = torch.argsort(selected.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]  # (B, k)
            H = sequence.shape[-1]
            masked_hidden = sequence.gather(1, pos[..., None].expand(-1, -1, H)).reshape(-1, H)  # (B*k, H)
            targets = mlm_labels.gather(1, pos).reshape(-1)
        mlm_logits = self.mlm(masked_hidden)  # (N, V)
        mlm_loss = (F.cross_entropy(mlm_logits.float(), targets, ignore_index=IGNORE_INDEX) if targets.numel()
                    else mlm_logits.sum() * 0.0)
        nsp_logits = self.nsp(pooled)
        nsp_loss = (F.cross_entropy(nsp_logits.float(), nsp_labels) if nsp_labels is not None
                    else nsp_logits.sum() * 0.0)
        return PreTrainingOutput(mlm_loss + nsp_loss, mlm_loss, nsp_loss, mlm_logits, targets, nsp_logits)


class BertForSequenceClassification(nn.Module):
    """GLUE head on the pooled [CLS]; ``num_labels == 1`` is regression (STS-B) with MSE."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return loss, logits


class BertForTokenClassification(nn.Module):
    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(sequence))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1),
                                   ignore_index=IGNORE_INDEX)
        return loss, logits


class BertForQuestionAnswering(nn.Module):
    """SQuAD: start/end logits per token; loss is the mean of start and end cross-entropy."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                start_positions=None, end_positions=None):
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask)
        start_logits, end_logits = self.qa_outputs(sequence).float().unbind(-1)  # 2x (B, T)
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start_logits.shape[1]
            loss = (F.cross_entropy(start_logits, start_positions.clamp(0, T - 1))
                    + F.cross_entropy(end_logits, end_positions.clamp(0, T - 1))) / 2
        return loss, start_logits, end_logits


class BertForMultipleChoice(nn.Module):
    """SWAG's recipe: each (context, choice) pair is one ``[CLS] context [SEP] choice [SEP]`` row; a
    vector scores each row's pooled [CLS] and a softmax runs across a question's choices."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        """``input_ids`` (B, C, T): C choices per question; ``labels`` (B,): the right choice's index."""
        B, C, T = input_ids.shape
        flat = [None if t is None else t.reshape(B * C, T) for t in (token_type_ids, attention_mask)]
        _, pooled = self.bert(input_ids.reshape(B * C, T), *flat)  # (B*C, H)
        logits = self.classifier(self.dropout(pooled)).view(B, C)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (the tied decoder counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
