"""`model.rdrop` (R-Drop): each training batch goes through the net twice under different
dropout masks, and the loss is the two cross-entropies' mean plus `rdrop` times the symmetric
KL between the passes; 0 (the default) makes one pass and draws what it always drew."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labrun.job.build import build
from labrun.job.train import train
from labrun.models.classifier import symmetric_kl
from tests.helpers import TINY, bare_trainer


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """64 sentences of ids 2..49, nine words each, with labels of six classes."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 50, (64, 9), generator=g)
    return ids, torch.full((64,), 9), torch.randint(0, 6, (64,), generator=g)


def test_symmetric_kl_is_the_mean_of_both_directions() -> None:
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    la, lb = F.log_softmax(a, -1), F.log_softmax(b, -1)
    forward = F.kl_div(lb, la, log_target=True, reduction="batchmean")  # KL(p_a || p_b)
    backward = F.kl_div(la, lb, log_target=True, reduction="batchmean")
    assert torch.allclose(symmetric_kl(a, b), (forward + backward) / 2)
    assert symmetric_kl(a, a + 3.0).abs() < 1e-6  # the same distribution, shifted logits


def module(make_cfg, model: str, rdrop: float) -> torch.nn.Module:
    cfg = make_cfg("experiment=trec_lstm", f"model={model}", f"model.rdrop={rdrop}")
    net = build(cfg.model, vocab_size=50, num_classes=6).train()
    net.trainer = bare_trainer()  # training_step reads the Trainer's logging settings
    return net


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_the_loss_is_two_passes_pulled_together(make_cfg, model: str) -> None:
    net = module(make_cfg, model, 0.5)
    ids, lengths, labels = batch()
    torch.manual_seed(3)
    loss = net.training_step((ids, lengths, labels), 0)
    torch.manual_seed(3)
    first, second = net(ids, lengths), net(ids, lengths)
    kl = symmetric_kl(first, second)
    assert kl > 0  # the two passes drew different dropout masks
    smooth = net.label_smoothing
    ce = F.cross_entropy(first, labels, label_smoothing=smooth)
    ce = (ce + F.cross_entropy(second, labels, label_smoothing=smooth)) / 2
    assert torch.allclose(loss, ce + 0.5 * kl)


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_zero_makes_one_pass_and_draws_as_before(make_cfg, model: str) -> None:
    """The default: one pass, plain cross-entropy, and the random stream where one forward
    leaves it, so a stored run (which has no such key) trains as it did."""
    net = module(make_cfg, model, 0.0)
    ids, lengths, labels = batch()
    torch.manual_seed(3)
    loss = net.training_step((ids, lengths, labels), 0)
    after = torch.rand(1)
    torch.manual_seed(3)
    logits = net(ids, lengths)
    assert torch.equal(after, torch.rand(1))
    plain = F.cross_entropy(logits, labels, label_smoothing=net.label_smoothing)
    assert torch.allclose(loss, plain)


def test_same_seed_same_run(make_cfg) -> None:
    over = ["experiment=trec_lstm", *TINY, "tracking.log_model=false", "seed=3", "model.rdrop=1"]
    a, b = train(make_cfg(*over)), train(make_cfg(*over))
    names = ["val/loss", "train/loss_epoch", "test/acc"]
    assert {k: a[k] for k in names} == {k: b[k] for k in names}
