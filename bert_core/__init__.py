"""bert_core: BERT in pure torch (model, heads, masking, tokenizer, checkpoint interop).

Imports torch, safetensors and tokenizers only: never ray, deepspeed, smart_open or torch.distributed.
"""
from bert_core.checkpoint import load_hf_state_dict, load_pretrained, save_pretrained
from bert_core.config import PRESETS, BertConfig
from bert_core.masking import IGNORE_INDEX, continuation_table, mask_tokens
from bert_core.model import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification, BertModel, PreTrainingOutput, count_parameters)
from bert_core.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

__all__ = [
    "BertConfig", "PRESETS", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "PreTrainingOutput", "count_parameters",
    "mask_tokens", "continuation_table", "IGNORE_INDEX", "WordPieceTokenizer", "SPECIAL_TOKENS",
    "load_pretrained", "save_pretrained", "load_hf_state_dict",
]
