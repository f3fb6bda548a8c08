"""Fixtures shared by the fine-tuning tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, minilm_dir):
    """A small random BERT with the real vocabulary: fast enough for scheduling tests."""
    import torch

    from bert_core import BertConfig, BertForPreTraining, save_pretrained

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("tiny_ckpt"))
    save_pretrained(BertForPreTraining(BertConfig.preset("tiny")), path, vocab_file=f"{minilm_dir}/vocab.txt")
    return path
