"""Fine-tuning: GLUE-format classification/regression and SQuAD v1.1/v2.0 from an HF-layout BERT checkpoint.

``run_finetune_jobs(cfg, checkpoint_uri, output_root)`` (``pipelines.finetune.jobs``) runs every task
in parallel as Ray tasks; ``pipelines.finetune.train`` is one task's loop, usable without Ray.
"""
