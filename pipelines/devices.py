"""Host-to-device copies shared by the pretraining and fine-tuning loops."""
from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """To a GPU through pinned memory with ``non_blocking``: the copy is queued behind the work already
    on the stream instead of making the host wait for it (a copy from pageable memory can). Elsewhere
    a plain ``.to(device)``."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
