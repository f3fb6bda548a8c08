"""bert_core on a CUDA GPU: bf16 autocast agrees with fp32 on the CPU, and a training step runs."""
import pytest
import torch

from bert_core import BertConfig, BertForPreTraining

pytestmark = pytest.mark.gpu


def test_bf16_forward_on_gpu_matches_fp32_on_cpu():
    config = BertConfig.preset("mini", vocab_size=1000)
    torch.manual_seed(0)
    model = BertForPreTraining(config).eval()
    ids = torch.randint(5, 1000, (4, 64))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    with torch.no_grad():
        ref, _ = model.bert(ids, None, mask)
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, _ = model.bert(ids.cuda(), None, mask.cuda())
    real = mask.bool()
    assert (out.float().cpu() - ref)[real].abs().max().item() < 0.1


def test_training_step_reduces_loss_on_gpu():
    config = BertConfig.preset("mini", vocab_size=1000)
    torch.manual_seed(0)
    model = BertForPreTraining(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(5, 1000, (8, 32), device="cuda")
    labels = torch.full_like(ids, -100)
    labels[:, ::5] = ids[:, ::5]
    nsp = torch.zeros(8, dtype=torch.long, device="cuda")
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, None, None, labels, nsp).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8
