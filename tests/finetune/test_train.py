"""The GLUE fine-tuning loop on the real demo task from the real minilm checkpoint."""
import json
import time

import numpy as np
import pytest

from pipelines.finetune import glue, train
from pipelines.finetune.train import HyperParams


def test_tokenizer_ignores_fixed_padding_of_tokenizer_json(minilm_dir):
    tok = train.load_tokenizer(minilm_dir)
    enc = train.encode_examples(tok, [glue.Example("0", "a fine film", None, 1),
                                      glue.Example("1", "a " * 300, "b", 0)], 16, regression=False)
    assert len(enc.input_ids[0]) == 5 and len(enc.input_ids[1]) == 16  # no padding to 128, truncation to 16
    assert enc.input_ids[1][-1] == tok.sep_id and enc.token_type_ids[1][-1] == 1


def test_tokenizer_takes_the_checkpoints_casing(tmp_path):
    """do_lower_case of tokenizer_config.json, else tokenizer.json's normaliser, else (a bare vocab.txt)
    lowercase as transformers' BertTokenizer; no vocabulary at all is refused."""
    import os

    from bert_core import WordPieceTokenizer
    from bert_core.checkpoint import save_tokenizer

    text = ["Python is a Programming Language.", "The Python Tutorial covers Classes and Modules."] * 5
    save_tokenizer(WordPieceTokenizer.train(text, vocab_size=300, min_frequency=1, lowercase=False), str(tmp_path), 128)
    assert train.load_tokenizer(str(tmp_path)).tokenize("Python") == ["Python"]
    os.remove(tmp_path / "tokenizer_config.json")
    assert train.load_tokenizer(str(tmp_path)).tokenize("Python") == ["Python"]
    os.remove(tmp_path / "tokenizer.json")
    bare = train.load_tokenizer(str(tmp_path))
    assert bare.lowercase and bare.tokenize("Python") == ["[UNK]"]  # the cased vocabulary has no "python"
    os.remove(tmp_path / "vocab.txt")
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        train.load_tokenizer(str(tmp_path))


def test_pad_batch_pads_to_longest_row():
    enc = train.Encoded([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]], np.array([1, 0]), ["a", "b"])
    batch = train.pad_batch(enc, [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 3, 0], [2, 5, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]] and batch["labels"].tolist() == [0, 1]


def test_schedule_warms_up_then_decays_to_zero():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    opt, sched = train.build_optimizer(model, HyperParams(learning_rate=1.0, warmup_ratio=0.1), 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5) and lrs[-1] > 0
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert len(opt.param_groups[1]["params"]) == 3  # linear bias, LayerNorm weight and bias


def test_vocabulary_larger_than_the_embeddings_is_refused_before_training(minilm_dir, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(minilm_dir, ckpt)
    (ckpt / "tokenizer.json").unlink(missing_ok=True)
    with open(ckpt / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("".join(f"extra{k}\n" for k in range(3)))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"ckpt: the vocabulary has 30525 tokens but the model's word embeddings "
                                         r"have 30522 rows"):
        train.finetune_glue_task(glue.DEMO_TASK, glue.DEMO_TASK_DIR, str(ckpt), HyperParams(max_train_examples=8,
                                 max_eval_examples=8), str(out))
    assert not out.exists()


@pytest.mark.slow
def test_learns_real_sentiment_well_above_majority(minilm_dir, tmp_path):
    start = time.time()
    # 30 steps of 16 short sentences: a few seconds on 2 idle cores (the bench runs the paper's recipe).
    hp = HyperParams(learning_rate=2e-4, batch_size=16, num_epochs=1, max_seq_length=64,
                     max_train_examples=480, max_eval_examples=300)
    out = str(tmp_path / "out")
    result = train.finetune_glue_task(glue.DEMO_TASK, glue.DEMO_TASK_DIR, minilm_dir, hp, out)
    dev, _ = glue.read_tsv(f"{glue.DEMO_TASK_DIR}/dev.tsv", glue.DEMO_TASK, "dev")
    labels = np.array([e.label for e in dev[:300]])
    majority = max(labels.mean(), 1 - labels.mean())
    accuracy = result["dev"]["movie_sentiment"]["accuracy"]
    assert accuracy > majority + 0.1, (accuracy, majority)  # 0.74 seen vs 0.50
    assert json.load(open(f"{out}/metrics.json"))["score"] == pytest.approx(100 * accuracy)
    assert len(open(f"{out}/dev_predictions/movie_sentiment.tsv").read().splitlines()) == 301
    print(f"accuracy {accuracy:.3f} vs majority {majority:.3f} in {time.time() - start:.1f}s")


def test_local_checkpoint_fetches_from_s3(s3_bucket, minilm_dir, tmp_path):
    from pipelines import storage

    for name in ("config.json", "vocab.txt"):
        storage.write_bytes_atomic(f"{s3_bucket}/ckpt/{name}", open(f"{minilm_dir}/{name}", "rb").read())
    local = train.local_checkpoint(f"{s3_bucket}/ckpt", str(tmp_path / "cache"))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["config.json", "vocab.txt"]
    assert train.local_checkpoint(minilm_dir, "unused") == minilm_dir and local == str(tmp_path / "cache")


def test_from_scratch_is_the_checkpoints_shape_with_fresh_weights(minilm_dir):
    import torch

    torch.manual_seed(0)
    pretrained = train.classifier(minilm_dir, 2).state_dict()
    torch.manual_seed(0)
    scratch = train.classifier(minilm_dir, 2, from_scratch=True).state_dict()
    assert {k: v.shape for k, v in scratch.items()} == {k: v.shape for k, v in pretrained.items()}
    word = "bert.embeddings.word.weight"
    assert not torch.equal(scratch[word], pretrained[word])
    assert abs(scratch[word][1:].std().item() - 0.02) < 0.001  # bert_core.init_weights: N(0, 0.02), row 0 = padding
    assert torch.equal(scratch["bert.layers.0.norm1.weight"], torch.ones(384))
