"""Fine-tuning: GLUE-format classification/regression and SQuAD v1.1/v2.0 from an HF-layout BERT checkpoint.

``run_finetune_jobs(cfg, checkpoint_uri, output_root)`` (``pipelines.finetune.jobs``) runs every task
in parallel as Ray tasks; ``pipelines.finetune.train`` is one task's loop, usable without Ray.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A package's module-level ``__getattr__`` (PEP 562): each name of ``exports`` (name -> submodule) loads
    its submodule on first use, so importing the package's config classes imports no torch."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
