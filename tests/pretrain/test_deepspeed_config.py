"""The DeepSpeed config is a pure function of the typed config: exact dicts on small inputs."""
from __future__ import annotations

import os

import pytest
import torch

from bert_core import BertConfig, BertForPreTraining
from pipelines.pretrain.config import DeepSpeedSettings, OptimizerConfig, PhaseConfig, PretrainConfig
from pipelines.pretrain.deepspeed_config import build_deepspeed_config, uses_client_optimizer, weight_decay_groups
from pipelines.typed_config import ConfigError, from_dict

PHASE = PhaseConfig(max_seq_length=128, global_batch_size=64, micro_batch_size=8, num_steps=100,
                    learning_rate=2e-4, warmup_steps=10, max_predictions_per_seq=20)


def _cfg(**kw) -> PretrainConfig:
    return PretrainConfig(model_preset="tiny", phases=(PHASE,), **kw)


def test_cpu_adamw_zero2_exact():
    cfg = _cfg(deepspeed=DeepSpeedSettings(zero_stage=2), num_workers=2)
    assert build_deepspeed_config(cfg, PHASE, num_workers=2) == {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 4,
        "train_batch_size": 64,
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True,
                              "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000},
        "scheduler": {"type": "WarmupDecayLR",
                      "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 2e-4, "warmup_num_steps": 10,
                                 "total_num_steps": 100, "warmup_type": "linear"}},
        "optimizer": {"type": "AdamW", "params": {"lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-6,
                                                  "weight_decay": 0.01, "torch_adam": True,
                                                  "fused": True}},
    }


def test_gpu_bf16_lamb():
    cfg = _cfg(deepspeed=DeepSpeedSettings(zero_stage=0), optimizer=OptimizerConfig(name="lamb"), use_gpu=True,
               num_workers=8)
    ds = build_deepspeed_config(cfg, PHASE, num_workers=8)
    assert ds["bf16"] == {"enabled": True}
    assert "fp16" not in ds
    assert ds["gradient_accumulation_steps"] == 1
    assert ds["zero_optimization"] == {"stage": 0}
    assert ds["optimizer"] == {"type": "Lamb", "params": {"lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-6,
                                                          "weight_decay": 0.01}}


def test_gpu_adamw_is_torch_fused_adamw():
    # no DeepSpeed FusedAdam: that one is JIT-built with nvcc on every fresh GPU node
    cfg = _cfg(deepspeed=DeepSpeedSettings(zero_stage=1), use_gpu=True, num_workers=4)
    ds = build_deepspeed_config(cfg, PHASE, num_workers=4)
    assert ds["bf16"] == {"enabled": True}
    assert ds["optimizer"] == {"type": "AdamW", "params": {"lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-6,
                                                           "weight_decay": 0.01, "torch_adam": True, "fused": True}}


def test_fp16_loss_scaling_and_offload():
    cfg = _cfg(deepspeed=DeepSpeedSettings(zero_stage=1, offload_optimizer=True, precision="fp16"), use_gpu=True,
               num_workers=1)
    ds = build_deepspeed_config(cfg, PHASE, num_workers=1)
    assert ds["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                          "hysteresis": 2, "min_loss_scale": 1}
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert ds["optimizer"]["params"].get("torch_adam") is None  # offload runs DeepSpeed's CPU Adam
    assert ds["gradient_accumulation_steps"] == 8


def test_lamb_on_cpu_uses_client_optimizer():
    cfg = _cfg(optimizer=OptimizerConfig(name="lamb"), deepspeed=DeepSpeedSettings(zero_stage=0))
    assert "optimizer" not in build_deepspeed_config(cfg, PHASE, num_workers=2)
    assert uses_client_optimizer(cfg)


def test_rescaled_worker_count_keeps_global_batch():
    cfg = _cfg(num_workers=2)
    assert build_deepspeed_config(cfg, PHASE, num_workers=1)["gradient_accumulation_steps"] == 8


def test_batch_sizes_that_do_not_divide_fail_at_build():
    with pytest.raises(ConfigError, match="global_batch_size 64 is not divisible by micro_batch_size 8 x num_workers 3"):
        _cfg(num_workers=3)


@pytest.mark.parametrize("override, match", [
    ({"deepspeed": {"zero_stage": 4}}, "zero_stage must be 0, 1, 2 or 3"),
    ({"deepspeed": {"offload_optimizer": True, "zero_stage": 0}}, "needs zero_stage >= 1"),
    ({"model_preset": "huge"}, "model_preset 'huge'"),
    ({"optimizer": {"name": "lamb"}, "deepspeed": {"zero_stage": 1}}, "'lamb' needs deepspeed.zero_stage 0"),
    ({"optimizer": {"name": "sgd"}}, "optimizer.name: 'sgd' is not one of"),
    ({"phases": [{"warmup_steps": 5000, "num_steps": 10}]}, "warmup_steps 5000"),
    ({"checkpoint_evry": 3}, "unknown config key"),
    ({"compile": True, "deepspeed": {"zero_stage": 3}}, "compile: true needs deepspeed.zero_stage 0, 1 or 2"),
])
def test_bad_config_values_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(PretrainConfig, override)


@pytest.mark.parametrize("compile, use_gpu, zero_stage, compiled", [
    (None, True, 1, True), (None, False, 1, False), (None, True, 3, False), (False, True, 1, False),
    (True, False, 2, True),
])
def test_compile_resolves_by_device_and_stage(compile, use_gpu, zero_stage, compiled):
    cfg = from_dict(PretrainConfig, {"compile": compile, "use_gpu": use_gpu, "deepspeed": {"zero_stage": zero_stage}})
    assert cfg.compiled is compiled


def test_no_decay_groups_hold_layernorm_and_bias():
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=100))
    decay, no_decay = weight_decay_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "bert.embeddings.word.weight" in decay_names and "bert.layers.0.ffn_in.weight" in decay_names
    assert {"bert.embeddings.norm.weight", "bert.layers.1.norm2.bias", "mlm.bias", "nsp.bias"} <= no_decay_names
    assert not any(n.endswith("bias") or "norm" in n for n in decay_names)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_lamb_step_moves_weights_by_trust_ratio():
    from pipelines.pretrain.lamb import Lamb

    w = torch.nn.Parameter(torch.ones(4) * 2.0)
    opt = Lamb([w], lr=0.1, weight_decay=0.0)
    w.grad = torch.ones(4)
    opt.step()
    # First step: m_hat/sqrt(v_hat) = 1 per element; trust = ||w||/||u|| = 4/2 = 2 -> w -= 0.1 * 2 * 1
    assert torch.allclose(w.detach(), torch.full((4,), 1.8), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_engine_from_built_config_trains(optimizer, tmp_path, monkeypatch):
    """One real DeepSpeed engine (world size 1, gloo) from the built config and parameter groups."""
    import deepspeed
    import torch.distributed as dist

    from pipelines.pretrain.lamb import Lamb

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + (os.getpid() % 1000)))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    phase = PhaseConfig(max_seq_length=16, global_batch_size=4, micro_batch_size=4, num_steps=8,
                        learning_rate=5e-3, warmup_steps=1)
    cfg = PretrainConfig(model_preset="tiny", phases=(phase,), num_workers=1, deepspeed=DeepSpeedSettings(zero_stage=0),
                         optimizer=OptimizerConfig(name=optimizer))
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=50))
    groups = weight_decay_groups(model, cfg.optimizer.weight_decay)
    client = Lamb(groups, lr=phase.learning_rate) if uses_client_optimizer(cfg) else None
    if not dist.is_initialized():  # kept for the session: DeepSpeed holds on to the default group
        dist.init_process_group("gloo")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=None if client else groups, optimizer=client,
                                      config=build_deepspeed_config(cfg, phase, 1))
    ids = torch.randint(5, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, 3:6] = ids[:, 3:6]
    losses = []
    for _ in range(phase.num_steps):
        out = engine(input_ids=ids, mlm_labels=labels, nsp_labels=torch.zeros(4, dtype=torch.long))
        engine.backward(out.loss)
        engine.step()
        losses.append(float(out.loss))
    assert losses[-1] < losses[0] - 0.2, losses
    assert type(engine.optimizer).__name__ == ("Lamb" if optimizer == "lamb" else "AdamW")
