"""Speed-only switches of the train loop change nothing but speed, on a real DeepSpeed engine in this
process (gloo, world size 1): the single-rank all-reduce skip (bit-identical weights) and
``engine.compile`` (the same losses and weights up to float rounding; its DeepSpeed checkpoint, saved
and loaded as ``train_loop`` does, restores into an eager engine)."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from bert_core import BertConfig, BertForPreTraining
from pipelines.pretrain import checkpointing as ckpt
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.deepspeed_config import build_deepspeed_config, weight_decay_groups
from pipelines.pretrain.engine import skip_single_rank_allreduce
from pipelines.typed_config import from_dict


@pytest.fixture
def single_rank_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    if not dist.is_initialized():  # kept for the session: DeepSpeed holds on to the default group
        dist.init_process_group("gloo", rank=0, world_size=1)
    assert dist.get_world_size() == 1


def _cfg(zero_stage: int) -> PretrainConfig:
    return from_dict(PretrainConfig, {
        "model_preset": "tiny", "num_workers": 1, "deepspeed": {"zero_stage": zero_stage},
        "phases": [{"max_seq_length": 16, "micro_batch_size": 4, "global_batch_size": 8, "num_steps": 10,
                    "warmup_steps": 1, "learning_rate": 1e-3}]})


def _engine(cfg: PretrainConfig, seed: int = 0):
    import deepspeed

    torch.manual_seed(seed)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=16,
                                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=weight_decay_groups(model, 0.01),
                                           config=build_deepspeed_config(cfg, cfg.phases[0], 1),
                                           dist_init_required=False)
    return engine


def _train(cfg: PretrainConfig, skip: bool, compile: bool = False, losses: list | None = None,
           num_predictions: int | None = None, save_to: str | None = None) -> tuple[bool, dict[str, torch.Tensor]]:
    engine = _engine(cfg)
    skipped = skip_single_rank_allreduce(engine, cfg, 1) if skip else False
    if compile:
        engine.compile(compile_kwargs={"dynamic": False})  # as train_loop_per_worker does
    g = torch.Generator().manual_seed(1)
    for _ in range(3 * 2):  # 3 optimizer steps of 2 accumulated micro-batches
        ids = torch.randint(5, 100, (4, 16), generator=g)
        labels = torch.where(torch.rand(4, 16, generator=g) < 0.15, ids, torch.full_like(ids, -100))
        out = engine(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids),
                     mlm_labels=labels, nsp_labels=torch.randint(0, 2, (4,), generator=g),
                     num_predictions=num_predictions)
        if losses is not None:
            losses.append(out.loss.item())
        engine.backward(out.loss)
        engine.step()
    assert engine.global_steps == 3
    if save_to:
        engine.save_checkpoint(save_to, tag=ckpt.TAG)
    return skipped, {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def test_zero0_single_rank_skip_gives_identical_weights(single_rank_group):
    cfg = _cfg(0)
    skipped, fast = _train(cfg, skip=True)
    _, reference = _train(cfg, skip=False)
    assert skipped
    torch.manual_seed(0)
    initial = BertForPreTraining(BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=16)).state_dict()
    assert not torch.equal(fast["bert.embeddings.word.weight"],
                           initial["bert.embeddings.word.weight"])  # it trained
    for name, tensor in reference.items():
        assert torch.equal(fast[name], tensor), name


@pytest.mark.parametrize("zero_stage, workers", [(1, 1), (0, 2)])
def test_skip_only_where_the_all_reduce_is_a_no_op(zero_stage, workers):
    class Engine:
        enable_backward_allreduce = True

    engine = Engine()
    assert not skip_single_rank_allreduce(engine, _cfg(zero_stage), workers)
    assert engine.enable_backward_allreduce


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_compiled_engine_trains_like_eager(single_rank_group, zero_stage, tmp_path):
    from torch._dynamo.utils import counters

    cfg = _cfg(zero_stage)
    eager_losses, compiled_losses = [], []
    _, eager = _train(cfg, skip=True, losses=eager_losses, num_predictions=8)
    torch._dynamo.reset()
    counters.clear()
    _, compiled = _train(cfg, skip=True, compile=True, losses=compiled_losses, num_predictions=8,
                         save_to=str(tmp_path))
    assert counters["stats"]["unique_graphs"] >= 1  # it really went through the compiler
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    assert eager_losses[-1] < eager_losses[0]
    for name, tensor in eager.items():
        torch.testing.assert_close(compiled[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # The compiled engine's checkpoint (compile is in place: the state-dict names are the eager ones)
    # restores into a fresh, differently initialised eager engine: weights, optimizer and step.
    restored = _engine(cfg, seed=1)
    path, _ = restored.load_checkpoint(str(tmp_path), tag=ckpt.TAG)
    assert path is not None and restored.global_steps == 3
    for name, tensor in restored.module.state_dict().items():
        assert torch.equal(tensor, compiled[name]), name
    optimizer = restored.optimizer.state_dict()  # torch's Adam (ZeRO 0) or ZeRO's wrapper around it (ZeRO 2)
    assert optimizer.get("state") or optimizer.get("base_optimizer_state"), "the optimizer state was restored too"
