"""Ray Data stages, one file each: read -> clean -> split -> wordpiece -> tokenize -> nsp_pairs,
then dynamic_masking when batches are read for training.

Each stage module holds a frozen config dataclass, a pure ``core(pa.Table, ...) -> pa.Table`` and a
``run_<stage>(cfg, input_uri(s), root) -> output_uri`` that writes through ``pipelines.stage_store``.
"""
