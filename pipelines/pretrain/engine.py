"""The DeepSpeed engine every rank trains with, one micro-batch step on it, and the window of metric
sums between two metrics lines. ``train_loop`` runs them under Ray Train; ``bench.pretrain_engine``
runs the same functions on one GPU.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from bert_core import IGNORE_INDEX, BertConfig, BertForPreTraining
from bert_core.model import check_id_ranges
from pipelines.devices import to_device
from pipelines.pretrain.config import PhaseConfig, PretrainConfig
from pipelines.pretrain.deepspeed_config import build_deepspeed_config, uses_client_optimizer, weight_decay_groups
from pipelines.pretrain.metrics import GpuPeak, mfu_metrics, real_flops_per_step


def model_config(cfg: PretrainConfig, vocab_size: int) -> BertConfig:
    """The model every phase of ``cfg`` trains (positions for the longest phase, at least BERT's 512)."""
    return BertConfig.preset(cfg.model_preset, vocab_size=vocab_size, hidden_dropout_prob=cfg.dropout,
                             attention_probs_dropout_prob=cfg.dropout,
                             max_position_embeddings=max(512, max(p.max_seq_length for p in cfg.phases)))


def static_predictions(cfg: PretrainConfig, phase: PhaseConfig, width: int | None = None) -> int | None:
    """MLM slots decoded per sequence of a batch ``width`` wide (None: ``max_seq_length``): a fixed number
    on GPU and whenever compiled (no host sync per step, one graph per width without data-dependent
    shapes), the most a row that wide can have selected; None (exactly the masked positions) otherwise."""
    if not (cfg.use_gpu or cfg.compiled):
        return None
    width = phase.max_seq_length if width is None else width
    return max(1, min(phase.max_predictions_per_seq, math.ceil(width * cfg.mlm_probability(phase))))


def fit_to_bin(arrays: dict[str, np.ndarray], bins: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A micro-batch cut to the smallest bin bound that holds its longest row (``PhaseConfig.bins``): the
    columns past it are padding in every row, so attention, the feed-forward blocks and the loss are the
    same without them. No bins: the batch as it is (every row padded to ``max_seq_length``)."""
    if not bins:
        return arrays
    longest = int(arrays["attention_mask"].sum(axis=1).max())
    width = bins[min(int(np.searchsorted(bins, longest)), len(bins) - 1)]
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in arrays.items()}


def build_engine(cfg: PretrainConfig, phase: PhaseConfig, model: BertForPreTraining, world: int, device: torch.device):
    """The DeepSpeed engine every rank trains with (the process group must already exist); compiled when
    ``cfg.compiled``. ``bench.pretrain_engine`` builds the same engine on one GPU."""
    import deepspeed

    groups = weight_decay_groups(model, cfg.optimizer.weight_decay)
    client_opt = None
    if uses_client_optimizer(cfg):
        from pipelines.pretrain.lamb import Lamb

        opt = cfg.optimizer
        client_opt = Lamb(groups, lr=phase.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    engine, _, _, _ = deepspeed.initialize(model=model.to(device), model_parameters=groups if client_opt is None else None,
                                           optimizer=client_opt, config=build_deepspeed_config(cfg, phase, world),
                                           dist_init_required=False)
    skip_single_rank_allreduce(engine, cfg, world)
    if engine.lr_scheduler is not None:
        # DeepSpeed's WarmupDecayLR starts at iteration -1 and applies lr 0 for two steps, a step behind the
        # configured schedule; at iteration 0 optimizer step s (from 1) applies warmup/decay at s - 1 (as HF's
        # linear schedule), and a checkpoint after s steps holds iteration s.
        engine.lr_scheduler.step(0)
    if cfg.compiled:
        engine.compile(compile_kwargs={"dynamic": False})  # in place: state-dict names are unchanged
    return engine


def skip_single_rank_allreduce(engine, cfg: PretrainConfig, world: int) -> bool:
    """On one rank with ZeRO-0 in fp32, turn off DeepSpeed's gradient all-reduce; True when it did.

    DeepSpeed would still flatten every gradient, "all-reduce" it with itself and copy it back
    (~5% of a CPU step of ``small``). ZeRO >= 1 and the bf16/fp16 optimizers move gradients inside
    that call, so they keep it.
    """
    if world == 1 and cfg.deepspeed.zero_stage == 0 and cfg.precision == "fp32":
        engine.enable_backward_allreduce = False
        return True
    return False


class Window:
    """Sums over the steps since the last metrics line, kept on the device (no host sync per step)."""

    def __init__(self, nsp: bool = True):
        self.nsp = nsp  # False for the MLM-only objective: no NSP figures on the line
        self.sums: torch.Tensor | None = None  # see add() for the 9 entries
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()  # CPU time of this process, all threads
        self.flops = 0.0
        self.input_seconds = 0.0  # waiting for the stream (read + masking run ahead on CPU actors), on this rank
        self.learning_rate: float | None = None  # the engine's rate applied by the window's last step

    @torch.no_grad()
    def add(self, out, batch: dict[str, torch.Tensor]) -> None:
        valid = out.mlm_labels != IGNORE_INDEX  # the static (GPU) head also decodes filler slots
        n_mlm = valid.sum().double()
        # torch.full, not torch.tensor: a host-to-device copy of a Python number waits for the GPU's queue
        n_seq = torch.full((), float(batch["nsp_labels"].numel()), dtype=torch.float64, device=n_mlm.device)
        row = torch.stack([
            out.mlm_loss.detach().double() * n_mlm, ((out.mlm_logits.argmax(-1) == out.mlm_labels) & valid).sum().double(),
            n_mlm, out.nsp_loss.detach().double() * n_seq, (out.nsp_logits.argmax(-1) == batch["nsp_labels"]).sum().double(),
            n_seq, n_seq * batch["input_ids"].shape[1], batch["attention_mask"].sum().double(), torch.ones_like(n_seq)])
        self.sums = row if self.sums is None else self.sums + row


def train_micro_batch(engine, arrays: dict[str, np.ndarray], device: torch.device, num_predictions: int | None,
                      bert_config: BertConfig, window: Window) -> None:
    """One micro-batch as every rank runs it: to the device, forward, backward, ``engine.step()`` (DeepSpeed
    applies the optimizer at the accumulation boundary), and the window's sums. ``bench.pretrain_engine``
    times this same function on a GPU. With ``window.nsp`` False (the MLM-only objective) the model gets
    no NSP labels: its loss is the masked LM's alone."""
    lengths = arrays["attention_mask"].sum(axis=1)  # on the host: real tokens per row, for the FLOPs
    if device.type != "cpu":  # the model checks ids on CPU tensors only; on a GPU check the host arrays
        check_id_ranges(bert_config, arrays["input_ids"], arrays["token_type_ids"])
    # Ray Data hands read-only arrays (the object store's pages); a copy of a micro-batch's ids is cheap and
    # keeps torch from warning that a tensor could write into them
    batch = {k: to_device(torch.from_numpy(np.require(v, requirements="W")), device) for k, v in arrays.items()}
    labels = batch if window.nsp else {k: v for k, v in batch.items() if k != "nsp_labels"}
    out = engine(**labels, num_predictions=num_predictions)
    engine.backward(out.loss)
    engine.step()
    window.flops += real_flops_per_step(bert_config, lengths, out.mlm_labels.numel())
    window.add(out, batch)


def summarise(window: Window, engine, step: int, epoch: int, world: int, peak: GpuPeak | None) -> dict[str, Any]:
    """All-reduce the window's sums so the line describes every rank's batches."""
    import torch.distributed as dist

    sums = torch.cat([window.sums, torch.tensor([window.flops], dtype=torch.float64, device=window.sums.device)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    # tolist() waits for the device, so the window's time includes the steps still queued on a GPU.
    mlm_loss, mlm_ok, n_mlm, nsp_loss, nsp_ok, n_seq, positions, real_tokens, _, flops = sums.tolist()
    seconds = time.perf_counter() - window.start
    out = {"step": step, "epoch": epoch, "mlm_loss": mlm_loss / max(n_mlm, 1), "mlm_accuracy": mlm_ok / max(n_mlm, 1)}
    if window.nsp:
        out.update(nsp_loss=nsp_loss / max(n_seq, 1), nsp_accuracy=nsp_ok / max(n_seq, 1))
    out["learning_rate"] = float(engine.get_lr()[0]) if window.learning_rate is None else window.learning_rate
    # Tokens are real tokens; the positions computed past them (padding to the batch's width) apart.
    out.update(tokens_per_s=real_tokens / seconds, padded_tokens_per_s=(positions - real_tokens) / seconds,
               real_token_share=real_tokens / max(positions, 1), samples_per_s=n_seq / seconds)
    out["input_wait_fraction"] = window.input_seconds / seconds  # rank 0's share of time spent waiting for data
    # Tokens per CPU-second of rank 0's process: comparable across runs on a machine shared with other load.
    out["tokens_per_cpu_s"] = real_tokens / world / max(time.process_time() - window.cpu_start, 1e-9)
    out.update(mfu_metrics(flops / world, seconds, peak))  # real tokens' FLOPs per GPU: datasheet peak, matmul
    return out
