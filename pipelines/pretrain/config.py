"""PretrainConfig: everything a pretraining run reads, as strict frozen dataclasses.

Build one with ``typed_config.from_dict(PretrainConfig, {"phases": [{"num_steps": 100}]})`` (strict: an
unknown key or a wrong type fails naming it). Checks that need no data (ZeRO stage range, divisibility, GPU
availability of the local machine is checked later by the trainer) live in ``__post_init__`` so a
bad value fails when the config is built, naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bert_core import PRESETS
from pipelines.identity import PRETRAIN_EXECUTION_FIELDS
from pipelines.typed_config import ConfigError


@dataclass(frozen=True)
class PhaseConfig:
    """One pretraining phase; the paper runs 90% of steps at seq 128 then 10% at seq 512."""

    max_seq_length: int = 128
    """Sequence length every batch is padded to (instances longer than this are truncated)."""
    global_batch_size: int = 256
    """Sequences per optimizer step, over all workers. Gradient accumulation is derived:
    global_batch_size / (micro_batch_size * num_workers), which must be a whole number."""
    micro_batch_size: int = 32
    """Sequences per worker per forward/backward pass."""
    num_steps: int = 1000
    """Optimizer steps in this phase (a step is ``gradient_accumulation_steps`` micro-batches)."""
    learning_rate: float = 1e-4
    """Peak learning rate, reached at the end of warm-up."""
    warmup_steps: int = 100
    """Linear warm-up from 0 to ``learning_rate``; then linear decay to 0 at ``num_steps``."""
    max_predictions_per_seq: int = 20
    """At most this many masked positions per sequence (20 for 128, 80 for 512 in the paper)."""
    length_bins: tuple[int, ...] = ()
    """Length bins (LDDL's idea): increasing upper bounds, the last at most ``max_seq_length`` (which closes
    the last bin when it is not listed). Each micro-batch then holds rows of one bin, as far as the epoch
    order allows, and is computed at its bin's bound instead of ``max_seq_length``. Empty: every row is
    padded to ``max_seq_length``."""
    mlm_probability: float | None = None
    """This phase's masking probability; None: ``masking.mlm_probability`` (MosaicBERT used 0.30)."""

    def __post_init__(self) -> None:
        for name in ("max_seq_length", "global_batch_size", "micro_batch_size", "num_steps", "max_predictions_per_seq"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"phase.{name} must be positive, got {getattr(self, name)}")
        bins = self.length_bins
        for bound in bins:
            if not 0 < bound <= self.max_seq_length:
                raise ConfigError(f"phase.length_bins: bin bound {bound} must lie in (0, max_seq_length "
                                  f"{self.max_seq_length}]")
        if any(b >= c for b, c in zip(bins, bins[1:])):
            raise ConfigError(f"phase.length_bins {list(bins)} must be strictly increasing")
        if self.mlm_probability is not None and not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"phase.mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.max_seq_length < 8:
            raise ConfigError(f"phase.max_seq_length {self.max_seq_length} is too short for [CLS] A [SEP] B [SEP]")
        if self.warmup_steps < 0 or self.warmup_steps > self.num_steps:
            raise ConfigError(f"phase.warmup_steps {self.warmup_steps} must lie in [0, num_steps={self.num_steps}]")
        if self.learning_rate <= 0:
            raise ConfigError(f"phase.learning_rate must be positive, got {self.learning_rate}")

    @property
    def bins(self) -> tuple[int, ...]:
        """The bins' upper bounds, ``max_seq_length`` last; () when the phase pads every row."""
        if not self.length_bins:
            return ()
        return self.length_bins if self.length_bins[-1] == self.max_seq_length else (*self.length_bins,
                                                                                   self.max_seq_length)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "lamb"] = "adamw"
    """AdamW (decoupled weight decay) or LAMB (layer-wise trust ratio, for large batches)."""
    weight_decay: float = 0.01
    """Applied to every weight except LayerNorm parameters and biases."""
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    gradient_clipping: float = 1.0
    """Global gradient-norm clip; 0 turns clipping off."""


@dataclass(frozen=True)
class DeepSpeedSettings:
    zero_stage: int = 1
    """ZeRO stage: 0 (plain data parallel), 1 (optimizer state sharded), 2 (+ gradients), 3 (+ weights).
    LAMB runs with stage 0 only."""
    offload_optimizer: bool = False
    """Keep optimizer state on the CPU (ZeRO >= 1; uses DeepSpeed's CPU Adam, so AdamW only)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU. fp16 uses dynamic loss scaling; bf16/fp16 need a GPU."""

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError("deepspeed.offload_optimizer needs zero_stage >= 1")


@dataclass(frozen=True)
class MaskingConfig:
    mlm_probability: float = 0.15
    """Fraction of non-special tokens selected for prediction."""
    whole_word: bool = False
    """Select whole words (all ``##`` pieces together) instead of single tokens."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"masking.mlm_probability must lie in (0, 1), got {self.mlm_probability}")


@dataclass(frozen=True)
class HeldoutConfig:
    """Instances kept out of training, and what the model is scored on there (``pipelines.pretrain.heldout``)."""

    files: int = 0
    """Shards of each phase's instances never trained on: the last ``files`` in the order the trainer lists
    them. 0: no held-out check. ``nsp_pairs`` draws a random next segment from the document's own partition
    and writes one shard per partition, so a held-out shard shares no document with the trained ones."""
    rows: int = 256
    """Rows scored: the first ``rows`` of the held-out shards, in order (a stage shard's rows are shuffled)."""
    every: int = 50
    """Score every N optimizer steps and at the end of the phase; a multiple of ``metrics_every`` (the
    scores ride on that step's metrics line)."""
    seed: int = 0
    """Seeds the held-out rows' masks, once (not the run's seed: runs of different seeds are scored on
    the same masked positions)."""

    def __post_init__(self) -> None:
        for name in ("files", "rows", "every"):
            if getattr(self, name) < (0 if name == "files" else 1):
                raise ConfigError(f"heldout.{name} must be {'>= 0' if name == 'files' else 'positive'}, "
                                  f"got {getattr(self, name)}")


@dataclass(frozen=True)
class PretrainConfig:
    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = PRETRAIN_EXECUTION_FIELDS
    """Not part of any identity (``pipelines.identity.identity_data``): how and where it runs."""
    model_preset: str = "base"
    """BERT size: tiny, mini, small, medium, base or large (bert_core.PRESETS)."""
    objective: Literal["nsp", "mlm"] = "nsp"
    """nsp: the paper's masked LM + next-sentence prediction, on ``nsp_pairs``' instances. mlm: masked LM
    alone (no NSP loss), on ``mlm_packs``' full-length packs (RoBERTa's FULL-SENTENCES)."""
    vocab_size: int | None = None
    """None: taken from vocab.txt. When set it must equal the vocabulary's size."""
    dropout: float = 0.1
    """Hidden and attention dropout."""
    phases: tuple[PhaseConfig, ...] = (
        PhaseConfig(max_seq_length=128, global_batch_size=256, micro_batch_size=32, num_steps=900,
                    warmup_steps=90, max_predictions_per_seq=20),
        PhaseConfig(max_seq_length=512, global_batch_size=256, micro_batch_size=8, num_steps=100,
                    warmup_steps=10, max_predictions_per_seq=80),
    )
    """Run in order; each phase after the first starts from the previous phase's weights."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    """Held-out MLM loss/accuracy and NSP accuracy during training, beside their baselines (off by default)."""
    checkpoint_every: int = 100
    """Checkpoint every N optimizer steps (and always at the end of a phase)."""
    keep_checkpoints: int = 2
    """Keep the last K checkpoints of each phase in storage."""
    metrics_every: int = 10
    """Log metrics from rank 0 every N optimizer steps."""
    num_workers: int = 2
    """Ray Train workers (one process, and on GPU one device, each)."""
    use_gpu: bool = False
    compile: bool | None = None
    """torch.compile the model on each worker (DeepSpeed's ``engine.compile``): fuses LayerNorm, GELU,
    dropout and residual adds into few kernels. None: on with GPUs, off on CPU (where compiling costs
    more than a short run gains) and with ZeRO-3 (whose partitioned weights the compiler cannot trace)."""
    unpad: bool | None = None
    """Run each layer's feed-forward block on real tokens only, not on the padding (MosaicBERT's unpad/pad,
    ``bert_core.BertModel.unpad``); the loss and gradients are unchanged. None: on where the step runs eager
    (CPU, not compiled: measured faster there, ``bench.binned_step``), off for compiled graphs, which need
    static shapes."""
    cpus_per_worker: int = 1
    max_failures: int = 1
    """Worker-group restarts Ray Train may make; each restores the last checkpoint."""
    seed: int = 0
    """Seeds weights, dropout and masking."""
    materialize_instances: bool = False
    """Each rank's reading process keeps the instance chunks it has read, so a new epoch does not
    re-read the shards (for corpora that fit in memory, one copy per rank; streaming otherwise)."""
    init_from: str | None = None
    """Optional HF-layout directory (config.json + model.safetensors) the first phase starts from."""
    storage_path: str | None = None
    """Where Ray Train keeps runs and checkpoints (local path or s3://); None: ``{output_root}/runs``."""

    def __post_init__(self) -> None:
        if self.model_preset not in PRESETS:
            raise ConfigError(f"model_preset {self.model_preset!r} is not one of {', '.join(PRESETS)}")
        if not self.phases:
            raise ConfigError("phases must hold at least one phase")
        for name in ("checkpoint_every", "keep_checkpoints", "metrics_every", "num_workers", "cpus_per_worker"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures must be >= 0, got {self.max_failures}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        for phase in self.phases:
            self.gradient_accumulation_steps(phase)
        if self.heldout.files and self.heldout.every % self.metrics_every:
            raise ConfigError(f"heldout.every {self.heldout.every} must be a multiple of metrics_every "
                              f"{self.metrics_every} (held-out scores ride on a metrics line)")
        if self.optimizer.name == "lamb" and self.deepspeed.zero_stage != 0:
            # ZeRO flattens and partitions the weights, so a per-layer trust ratio is no longer per
            # layer; DeepSpeed lists LAMB as unsupported with ZeRO.
            raise ConfigError("optimizer.name 'lamb' needs deepspeed.zero_stage 0 (DeepSpeed's ZeRO supports "
                              "Adam-type optimizers only)")
        if self.unpad and self.compiled:
            raise ConfigError("unpad: true needs an eager step (compile: false): its index of real tokens has a "
                              "data-dependent size, which a compiled graph cannot take")
        if self.compile and self.deepspeed.zero_stage == 3:
            # Under ZeRO-3 each weight is an empty placeholder gathered by hooks at use; tracing it
            # fails ("b must be 2D" in addmm), seen with DeepSpeed 0.19.8 and torch 2.13.
            raise ConfigError("compile: true needs deepspeed.zero_stage 0, 1 or 2 (ZeRO-3's partitioned weights "
                              "cannot be compiled); set compile: false or a lower stage")

    def mlm_probability(self, phase: PhaseConfig) -> float:
        """The phase's masking probability: its own, else ``masking.mlm_probability``."""
        return self.masking.mlm_probability if phase.mlm_probability is None else phase.mlm_probability

    @property
    def compiled(self) -> bool:
        """The resolved ``compile``: None becomes True on GPU below ZeRO-3, False otherwise."""
        if self.compile is None:
            return self.use_gpu and self.deepspeed.zero_stage < 3
        return self.compile

    @property
    def unpadded(self) -> bool:
        """The resolved ``unpad``: None becomes True where the step runs eager on CPU."""
        if self.unpad is None:
            return not self.use_gpu and not self.compiled
        return self.unpad

    @property
    def precision(self) -> str:
        """The resolved precision: 'auto' becomes bf16 on GPU and fp32 on CPU."""
        if self.deepspeed.precision == "auto":
            return "bf16" if self.use_gpu else "fp32"
        return self.deepspeed.precision

    def gradient_accumulation_steps(self, phase: PhaseConfig, num_workers: int | None = None) -> int:
        """Micro-batches per worker per optimizer step; raises when the batch sizes do not divide."""
        workers = self.num_workers if num_workers is None else num_workers
        per_step = phase.micro_batch_size * workers
        if phase.global_batch_size % per_step:
            raise ConfigError(
                f"phase global_batch_size {phase.global_batch_size} is not divisible by micro_batch_size "
                f"{phase.micro_batch_size} x num_workers {workers} = {per_step}")
        return phase.global_batch_size // per_step


# Fields that change how a run is executed but not what it computes: changing them and restarting
# resumes the same run (e.g. rescaling from 2 workers to 1) instead of starting a new one.
def run_identity(cfg: PretrainConfig, *inputs: str) -> str:
    """Stable id of a run: ``pipelines.identity.output_identity`` of the config minus execution
    fields, with the input URIs."""
    from pipelines import identity

    return identity.output_identity("pretrain", 1, identity.without(cfg, identity.PRETRAIN_EXECUTION_FIELDS),
                                    list(inputs))
