"""Checkpoint interop with the Hugging Face BERT layout, both directions.

``save_tokenizer`` writes the tokenizer beside the weights as transformers lays it out
(``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json`` with ``do_lower_case``,
``special_tokens_map.json``), so ``AutoTokenizer.from_pretrained`` and our fine-tuning both read
the casing the vocabulary was built with.

A directory with ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``) and HF parameter
names (``bert.encoder.layer.0.attention.self.query.weight`` ...) opens in bert_core, and what
bert_core saves opens in ``transformers``. Our fused QKV projection is split into HF's
query/key/value on save and joined on load. Encoder weights must all be present and of the right
shape (errors name the keys); task heads absent from the checkpoint keep their fresh initialisation
and are reported.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable

import torch
from torch import nn

from bert_core.config import BertConfig
from bert_core.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer
from bert_core.model import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification, BertModel)

# our encoder name <-> HF encoder name, for everything except the fused QKV.
_ENCODER_RENAMES = [
    (r"embeddings\.word\.", "embeddings.word_embeddings."),
    (r"embeddings\.position\.", "embeddings.position_embeddings."),
    (r"embeddings\.token_type\.", "embeddings.token_type_embeddings."),
    (r"embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"layers\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"layers\.(\d+)\.norm1\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"layers\.(\d+)\.ffn_in\.", r"encoder.layer.\1.intermediate.dense."),
    (r"layers\.(\d+)\.ffn_out\.", r"encoder.layer.\1.output.dense."),
    (r"layers\.(\d+)\.norm2\.", r"encoder.layer.\1.output.LayerNorm."),
    (r"pooler\.dense\.", "pooler.dense."),
]
_HEAD_RENAMES = [
    (r"mlm\.dense\.", "cls.predictions.transform.dense."),
    (r"mlm\.norm\.", "cls.predictions.transform.LayerNorm."),
    (r"mlm\.bias$", "cls.predictions.bias"),
    (r"nsp\.", "cls.seq_relationship."),
    (r"classifier\.", "classifier."),
    (r"qa_outputs\.", "qa_outputs."),
]
_QKV = re.compile(r"(?:bert\.)?layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
_HF_QKV = re.compile(r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_IGNORED_HF = re.compile(r"(position_ids|cls\.predictions\.decoder\.(weight|bias))$")


def _rename(name: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return None


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """bert_core names -> HF names (QKV split, tied decoder omitted)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith("word_embeddings.weight") and name.startswith("mlm."):
            continue  # the tied decoder: HF re-ties it from the word embeddings
        m = _QKV.match(name)
        if m:
            prefix = "bert." if name.startswith("bert.") else ""
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"{prefix}encoder.layer.{m[1]}.attention.self.{part}.{m[2]}"] = chunk.clone()
            continue
        prefix, body = ("bert.", name[5:]) if name.startswith("bert.") else ("", name)
        new = _rename(body, _ENCODER_RENAMES) or _rename(body, _HEAD_RENAMES)
        if new is None:
            raise KeyError(f"no Hugging Face name for parameter {name!r}")
        out[prefix + new if new.split(".")[0] in ("embeddings", "encoder", "pooler") else new] = tensor
    return out


def _invert(rules: list[tuple[str, str]]) -> list[tuple[str, str]]:
    inv = []
    for ours, hf in rules:
        hf_pat = re.escape(hf).replace(r"\\1", r"(\d+)").replace(r"\1", r"(\d+)")
        ours_repl = ours.replace(r"(\d+)", r"\1").replace("\\.", ".").rstrip("$")
        inv.append((hf_pat, ours_repl))
    return inv


_ENCODER_FROM_HF = _invert(_ENCODER_RENAMES)
_HEAD_FROM_HF = _invert(_HEAD_RENAMES)


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], encoder_prefix: str) -> dict[str, torch.Tensor]:
    """HF names -> bert_core names; the encoder lands under ``encoder_prefix`` ('' or 'bert.')."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        if _IGNORED_HF.search(name):
            continue
        m = _HF_QKV.match(name)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = tensor
            continue
        body = name[5:] if name.startswith("bert.") else name
        new = _rename(body, _ENCODER_FROM_HF)
        if new is not None:
            out[encoder_prefix + new] = tensor
            continue
        new = _rename(name, _HEAD_FROM_HF)
        out[new if new is not None else "<unknown>." + name] = tensor
    for (layer, kind), parts in sorted(qkv.items()):
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            raise KeyError(f"checkpoint layer {layer} lacks attention.self.{'/'.join(missing)}.{kind}")
        out[f"{encoder_prefix}layers.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def load_hf_state_dict(model: nn.Module, hf_state: dict[str, torch.Tensor]) -> list[str]:
    """Load HF-named weights into any bert_core model; returns head parameters left at their init.

    Missing encoder weights, unexpected weights and shape mismatches raise, naming the keys.
    Pretraining-head weights (``cls.*``) are skipped when the target has no pretraining head.
    """
    prefix = "" if isinstance(model, BertModel) else "bert."
    converted = from_hf_state_dict(hf_state, prefix)
    target = model.state_dict()
    target_names = {n for n in target if not n.startswith("mlm.word_embeddings")}
    has_pretraining_head = isinstance(model, BertForPreTraining)
    unexpected = sorted(n for n in converted if n not in target_names
                        and not ((n.startswith(("mlm.", "nsp.")) and not has_pretraining_head)
                                 or (n.startswith("bert.pooler.") and getattr(model, "bert", model).pooler is None)
                                 or (prefix == "" and n.startswith(("mlm.", "nsp.", "classifier.", "qa_outputs.")))))
    if unexpected:
        raise KeyError(f"checkpoint has weights the model does not: {', '.join(unexpected[:20])}")
    missing = sorted(n for n in target_names if n not in converted)
    missing_encoder = [n for n in missing if n.startswith(prefix + "embeddings") or n.startswith(prefix + "layers")
                       or (prefix and n.startswith("bert."))]
    if missing_encoder:
        raise KeyError(f"checkpoint lacks encoder weights: {', '.join(missing_encoder[:20])}")
    mismatched = [f"{n}: checkpoint {tuple(t.shape)} vs model {tuple(target[n].shape)}"
                  for n, t in converted.items() if n in target_names and tuple(t.shape) != tuple(target[n].shape)]
    if mismatched:
        raise ValueError("checkpoint shapes do not match the model: " + "; ".join(mismatched[:20]))
    with torch.no_grad():
        for n, t in converted.items():
            if n in target_names:
                target[n].copy_(t.to(target[n].dtype))
    return missing


def read_hf_config(directory: str) -> BertConfig:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} has no config.json")
    with open(path, encoding="utf-8") as f:
        return BertConfig.from_hf_dict(json.load(f))


def read_hf_weights(directory: str) -> dict[str, torch.Tensor]:
    st, pt = os.path.join(directory, "model.safetensors"), os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(st):
        from safetensors.torch import load_file

        return load_file(st)
    if os.path.isfile(pt):
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory!r} has neither model.safetensors nor pytorch_model.bin")


_HEADS: dict[str, Callable[..., nn.Module]] = {
    "encoder": lambda c, **kw: BertModel(c),
    "pretraining": lambda c, **kw: BertForPreTraining(c),
    "sequence_classification": lambda c, num_labels, **kw: BertForSequenceClassification(c, num_labels),
    "token_classification": lambda c, num_labels, **kw: BertForTokenClassification(c, num_labels),
    "question_answering": lambda c, **kw: BertForQuestionAnswering(c),
}


def load_pretrained(directory: str, head: str = "encoder", **head_kwargs) -> nn.Module:
    """Build a bert_core model with ``head`` and fill it from an HF-layout directory."""
    if head not in _HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(_HEADS)}")
    config = read_hf_config(directory)
    model = _HEADS[head](config, **head_kwargs)
    load_hf_state_dict(model, read_hf_weights(directory))
    return model


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_SPECIAL_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")  # SPECIAL_TOKENS' order


def save_tokenizer(tokenizer: WordPieceTokenizer, directory: str, model_max_length: int) -> None:
    """``TOKENIZER_FILES`` in transformers' layout. ``tokenizer.json`` is ours without padding or
    truncation; ``tokenizer_config.json`` repeats its normaliser's casing (transformers'
    BertTokenizerFast rebuilds the normaliser when the two disagree, so they must not)."""
    from tokenizers import Tokenizer

    os.makedirs(directory, exist_ok=True)
    plain = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    plain.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokenizer.vocab()) + "\n")
    specials = dict(zip(_SPECIAL_KEYS, SPECIAL_TOKENS))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
              "strip_accents": tokenizer.strip_accents, "tokenize_chinese_chars": True, "do_basic_tokenize": True,
              "model_max_length": model_max_length, "clean_up_tokenization_spaces": True, **specials}
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)


def save_pretrained(model: nn.Module, directory: str, vocab_file: str | None = None,
                    safe_serialization: bool = True, tokenizer: WordPieceTokenizer | None = None,
                    model_max_length: int | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (HF names); with ``tokenizer``, its files
    (``save_tokenizer``; ``model_max_length`` defaults to the position table's size); else
    ``vocab.txt`` when ``vocab_file`` is given."""
    os.makedirs(directory, exist_ok=True)
    config: BertConfig = model.config
    hf_config = config.to_hf_dict()
    arch = {BertModel: "BertModel", BertForPreTraining: "BertForPreTraining",
            BertForSequenceClassification: "BertForSequenceClassification",
            BertForTokenClassification: "BertForTokenClassification",
            BertForQuestionAnswering: "BertForQuestionAnswering"}[type(model)]
    hf_config["architectures"] = [arch]
    if getattr(model, "num_labels", None):
        hf_config["num_labels"] = model.num_labels
        if model.num_labels == 1:
            hf_config["problem_type"] = "regression"
    state = {k: v.detach().cpu().contiguous() for k, v in to_hf_state_dict(model.state_dict()).items()}
    if isinstance(model, BertForPreTraining):
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, os.path.join(directory, "pytorch_model.bin"))
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory, model_max_length or config.max_position_embeddings)
    elif vocab_file is not None:
        with open(vocab_file, "rb") as src, open(os.path.join(directory, "vocab.txt"), "wb") as dst:
            dst.write(src.read())
