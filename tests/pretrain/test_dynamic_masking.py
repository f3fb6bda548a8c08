import numpy as np
import pyarrow as pa
import pytest

from pipelines.schemas import TRAIN_BATCH_KEYS
from pipelines.pretrain import dynamic_masking as dm
from pipelines.stages import nsp_pairs

KW = dict(seed=5, vocab_size=30522, mask_token_id=103, special_token_ids=(0, 100, 101, 102, 103),
          max_seq_length=128, pad_token_id=0)


@pytest.fixture(scope="module")
def instances(demo_tokenized) -> pa.Table:
    cfg = nsp_pairs.NspConfig(max_seq_length=128, cls_id=101, sep_id=102)
    return nsp_pairs.core(demo_tokenized.slice(0, 200), cfg, 0)


def _batch(table: pa.Table) -> dict:
    return {k: table.column(k).to_pylist() for k in ("input_ids", "token_type_ids", "is_random_next", "instance_id")}


def test_mask_batch_shapes_labels_and_padding(instances):
    rows = instances.slice(0, 16)
    out = dm.mask_batch(_batch(rows), epoch=0, **KW)
    assert set(out) == set(TRAIN_BATCH_KEYS)
    assert all(v.dtype == np.int64 for v in out.values())
    assert out["input_ids"].shape == (16, 128) and out["nsp_labels"].shape == (16,)
    lengths = rows.column("num_tokens").to_numpy()
    assert (out["attention_mask"].sum(1) == lengths).all()
    originals = rows.column("input_ids").to_pylist()
    for i, ids in enumerate(originals):
        n = len(ids)
        assert (out["input_ids"][i, n:] == 0).all() and (out["mlm_labels"][i, n:] == -100).all()
        picked = out["mlm_labels"][i] != -100
        assert 1 <= picked.sum() <= 20
        assert (out["mlm_labels"][i][picked] == np.array(ids)[picked[:n]]).all()
        unpicked = ~picked[:n]
        assert (out["input_ids"][i, :n][unpicked] == np.array(ids)[unpicked]).all()
        assert out["input_ids"][i, 0] == 101  # specials never masked
    assert (out["nsp_labels"] == rows.column("is_random_next").to_numpy(zero_copy_only=False)).all()


def test_masks_depend_on_instance_and_epoch_not_batching(instances):
    rows = instances.slice(0, 24)
    whole = dm.mask_batch(_batch(rows), epoch=1, **KW)
    parts = [dm.mask_batch(_batch(rows.slice(s, 8)), epoch=1, **KW) for s in (0, 8, 16)]
    for k in TRAIN_BATCH_KEYS:
        assert (np.concatenate([p[k] for p in parts]) == whole[k]).all()
    other_epoch = dm.mask_batch(_batch(rows), epoch=2, **KW)
    assert not (other_epoch["mlm_labels"] == whole["mlm_labels"]).all()


def test_too_long_instance_is_an_error(instances):
    with pytest.raises(ValueError, match="more than max_seq_length=16"):
        dm.mask_batch(_batch(instances.slice(0, 1)), epoch=0, **{**KW, "max_seq_length": 16})


def test_mask_instances_stage_seeds_each_row_by_its_epoch(instances, bert_tokenizer):
    """The trainer's map_batches stage: a batch straddling two epochs masks each row as its epoch's
    mask_batch does, and passes instance_id and epoch through."""
    vocab = dm.VocabInfo.from_tokenizer(bert_tokenizer)
    stage = dm.MaskInstances(vocab, seed=5, max_seq_length=128)
    batch = _batch(instances.slice(0, 12))
    batch["epoch"] = np.array([0] * 5 + [1] * 7)
    out = stage({k: np.asarray(v, dtype=object) if k.endswith("_ids") and k != "instance_id" else np.asarray(v)
                 for k, v in batch.items()})
    kw = dict(seed=5, vocab_size=vocab.vocab_size, mask_token_id=vocab.mask_token_id,
              special_token_ids=vocab.special_token_ids, max_seq_length=128, pad_token_id=vocab.pad_token_id)
    first = dm.mask_batch(_batch(instances.slice(0, 5)), epoch=0, **kw)
    second = dm.mask_batch(_batch(instances.slice(5, 7)), epoch=1, **kw)
    for k in TRAIN_BATCH_KEYS:
        assert (out[k] == np.concatenate([first[k], second[k]])).all(), k
    assert out["instance_id"].tolist() == batch["instance_id"] and out["epoch"].tolist() == batch["epoch"].tolist()
