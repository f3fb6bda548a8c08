"""The epoch order and the per-rank deal (pure numpy), then each rank's real Ray Data stream: a resume at a
cursor and a rescale 2 -> 1 give exactly the rows of the uninterrupted stream."""
from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np
import pytest

from pipelines.pretrain.inputs import (DataCursorError, InstancePlan, Stream, check_cursor, epoch_windows,
                                       rank_batches, rank_positions, steps_per_epoch, window_permutation)
from pipelines.pretrain.dynamic_masking import VocabInfo

MICRO, GLOBAL = 8, 32  # 2 ranks x 2 accumulated micro-batches


@pytest.fixture(scope="module")
def plan(pretrain_corpus) -> InstancePlan:
    instances, _, _ = pretrain_corpus
    files = sorted(glob.glob(os.path.join(instances, "*.parquet")))
    # Small chunks and windows so the corpus (~1700 rows in 4 shards) spans several windows.
    return dataclasses.replace(InstancePlan.from_files(files), chunk_rows=100, buffer_rows=300)


@pytest.fixture(scope="module")
def varied_plan(pretrain_corpus, tmp_path_factory) -> InstancePlan:
    """The same rows cut to seeded lengths in [8, 64] (the fixture's rows are all 64 long), so bins differ."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.schemas import INSTANCES

    instances, _, tokenizer = pretrain_corpus
    out = tmp_path_factory.mktemp("varied-instances")
    g = np.random.default_rng(0)
    for f in sorted(glob.glob(os.path.join(instances, "*.parquet"))):
        rows = pq.read_table(f).to_pylist()
        for row in rows:
            n = int(g.integers(8, 65))
            row["input_ids"] = row["input_ids"][:n - 1] + [tokenizer.sep_id]
            row["token_type_ids"] = row["token_type_ids"][:n]
            row["num_tokens"] = n
        pq.write_table(pa.Table.from_pylist(rows, schema=INSTANCES), str(out / os.path.basename(f)))
    files = sorted(glob.glob(str(out / "*.parquet")))
    return dataclasses.replace(InstancePlan.from_files(files), chunk_rows=100, buffer_rows=300)


def _epoch_order(plan: InstancePlan, seed: int, epoch: int) -> np.ndarray:
    """Global row ids (shard offset + row) in epoch order."""
    offsets = np.concatenate([[0], np.cumsum(plan.rows)])
    chunks = plan.chunks()
    out = []
    for index, w in enumerate(epoch_windows(plan, seed, epoch)):
        rows = np.concatenate([offsets[f] + np.arange(a, b) for f, a, b in (chunks[c] for c in w.chunks)])
        out.append(rows[window_permutation(seed, epoch, index, w.size)])
    return np.concatenate(out)


def test_each_epoch_is_a_seeded_permutation_of_every_row(plan):
    first, again = _epoch_order(plan, 3, 0), _epoch_order(plan, 3, 0)
    assert (first == again).all()
    assert sorted(first.tolist()) == list(range(plan.num_rows))
    assert len(epoch_windows(plan, 3, 0)) >= 5
    second, other_seed = _epoch_order(plan, 3, 1), _epoch_order(plan, 4, 0)
    assert (first != second).mean() > 0.9 and (first != other_seed).mean() > 0.9
    # A window mixes chunks from several shards, not one shard's neighbourhood.
    window = epoch_windows(plan, 3, 0)[0]
    assert len({plan.chunks()[c][0] for c in window.chunks}) >= 2 and len(window.chunks) == 3


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_share_each_epoch_position_once(plan, world):
    usable = steps_per_epoch(plan, GLOBAL) * GLOBAL
    start = 5 * GLOBAL  # a cursor after 5 steps
    got = {}
    for window in epoch_windows(plan, 3, 0):
        for rank in range(world):
            for offset in rank_positions(window, start, usable, MICRO, world, rank):
                position = window.start + offset
                assert position not in got
                got[position] = rank
                assert rank == (position // MICRO) % world
    assert sorted(got) == list(range(start, usable))


def test_instances_fingerprint_names_what_changed(plan):
    check_cursor(plan.summary(), plan, "checkpoint")
    rebuilt = dataclasses.replace(plan, rows=(429, 429, 429, 400), fingerprint="0" * 32)
    with pytest.raises(DataCursorError, match=r"instances changed.*'rows': \(1713, 1687\).*fingerprint"):
        check_cursor(plan.summary(), rebuilt, "checkpoint at step 4")
    with pytest.raises(DataCursorError, match="stores no instances fingerprint"):
        check_cursor(None, plan, "checkpoint at step 4")


@pytest.mark.parametrize("bins", [(), (16, 32, 48, 64)], ids=["padded", "binned"])
def test_rank_streams_resume_and_rescale_row_exact(plan, varied_plan, pretrain_corpus, ray_session, bins):
    """World 2 from the start; world 2 from the cursor after 3 steps (a restart); world 1 from the same
    cursor (a rescale): same rows, same masks, epoch boundary included; with length bins too."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    _, _, tokenizer = pretrain_corpus
    plan = varied_plan if bins else plan
    masker = {"vocab": VocabInfo.from_tokenizer(tokenizer), "seed": 3, "max_seq_length": 64,
              "max_predictions_per_seq": 10}
    steps = steps_per_epoch(plan, GLOBAL)
    usable, needed = steps * GLOBAL, (steps + 2) * GLOBAL  # into epoch 1

    def stream(world, rank, start, needed):
        batches = rank_batches(Stream(plan, 3, MICRO, world, rank, usable, bins=bins), masker, 0, start, needed)
        return [(int(b["epoch"][0]), b["instance_id"].tolist(), b["input_ids"], b["mlm_labels"]) for b in batches]

    ranks = [stream(2, r, 0, needed) for r in (0, 1)]
    per_step = GLOBAL // MICRO // 2
    assert {e for e, *_ in ranks[0]} == {0, 1} and len(ranks[0]) >= (steps + 2) * per_step
    resumed = stream(2, 0, 3 * GLOBAL, needed - 3 * GLOBAL)
    assert [b[1] for b in resumed] == [b[1] for b in ranks[0][3 * per_step:]][:len(resumed)]
    for a, b in zip(resumed, ranks[0][3 * per_step:]):
        assert (a[2] == b[2]).all() and (a[3] == b[3]).all()  # same masks: seeded by (seed, epoch, instance_id)
    rescaled = stream(1, 0, 3 * GLOBAL, needed - 3 * GLOBAL)
    for k in range(steps + 2 - 3):  # world 1: step k's 4 micro-batches hold world 2's 2 x 2
        one = [i for b in rescaled[4 * k:4 * k + 4] for i in b[1]]
        two = [i for r in ranks for b in r[(3 + k) * per_step:(4 + k) * per_step] for i in b[1]]
        assert len(one) == GLOBAL and sorted(one) == sorted(two), k
    epoch0 = [i for r in ranks for e, ids, *_ in r if e == 0 for i in ids]
    assert len(epoch0) == len(set(epoch0)) == usable  # each row of the epoch once, binned or not
    if bins:  # most micro-batches hold one bin's rows: lengths uniform in [8, 64] average 36, padded to 64
        lengths = [(ids != tokenizer.pad_id).sum(1) for r in ranks for _, _, ids, _ in r]
        widths = [bins[int(np.searchsorted(bins, n.max()))] for n in lengths]
        assert sum(n.sum() for n in lengths) / (MICRO * sum(widths)) > 0.75 > 0.6 > np.mean(np.concatenate(lengths)) / 64
