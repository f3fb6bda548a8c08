"""Ray Data stages, one file each: read -> clean -> near_dedup -> split -> wordpiece -> tokenize -> nsp_pairs
(dynamic masking, at training time, is ``pipelines.pretrain.dynamic_masking``). They import no torch.

Each stage module holds a frozen config dataclass, a pure ``core(pa.Table, ...) -> pa.Table`` and a
``run_<stage>(cfg, input_uri(s), root) -> output_uri`` that writes through ``pipelines.stage_store``.
"""
