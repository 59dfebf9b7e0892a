"""`model.ema_decay`: a moving average of a text net's weights, updated after each optimizer
step, is what validates, tests and is exported, while the net itself trains; unset, there is
no copy and a stored run (which has no such key) trains as it did."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from labrun.data.text import TextClassificationData
from labrun.job.build import build
from labrun.job.train import train
from tests.helpers import TINY, bare_trainer


def trained(
    make_cfg, model: str, *extra: str, batches: int = 3
) -> tuple[L.LightningModule, TextClassificationData]:
    """A few real TREC batches through a real Trainer."""
    cfg = make_cfg("experiment=trec_lstm", f"model={model}", *extra)
    torch.manual_seed(0)
    dm = build(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    net = build(cfg.model, **dm.model_kwargs())
    bare_trainer(max_epochs=1, limit_train_batches=batches).fit(net, datamodule=dm)
    return net, dm


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_the_average_follows_the_net_and_is_what_evaluates_and_exports(
    make_cfg, model: str
) -> None:
    start, _ = trained(make_cfg, model, "model.ema_decay=0.5", batches=0)
    net, dm = trained(make_cfg, model, "model.ema_decay=0.5", batches=3)
    first = dict(start.net_ema.named_parameters())
    for name, avg in net.net_ema.named_parameters():
        now = dict(net.net.named_parameters())[name]
        assert not avg.requires_grad and now.requires_grad
        # three batches at 0.5 from the same start: the average lies between start and now
        moved, travelled = (avg - first[name]).norm(), (now - first[name]).norm()
        if travelled > 0:
            assert 0 < moved < travelled, name
    ids, lengths, _ = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        evaluated = net.eval()(ids, lengths)
        assert torch.equal(evaluated, net.net_ema(ids, lengths))
        assert not torch.equal(evaluated, net.net(ids, lengths))
        exported = net.export(dm).net
        assert torch.equal(exported(ids, lengths), evaluated)
    assert any(k.startswith("net_ema.") for k in net.state_dict())  # checkpoints keep it


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_unset_there_is_no_average(make_cfg, model: str) -> None:
    cfg = make_cfg("experiment=trec_lstm", f"model={model}")
    assert cfg.model.ema_decay is None
    net = build(cfg.model, vocab_size=50, num_classes=6)
    assert net.net_ema is None and not any(k.startswith("net_ema.") for k in net.state_dict())


def test_same_seed_same_run_and_the_average_changes_what_validates(make_cfg) -> None:
    over = ["experiment=trec_lstm", *TINY, "tracking.log_model=false", "seed=3"]
    a = train(make_cfg(*over, "model.ema_decay=0.9"))
    b = train(make_cfg(*over, "model.ema_decay=0.9"))
    plain = train(make_cfg(*over))
    names = ["val/loss", "test/loss", "train/loss_epoch"]
    assert {k: a[k] for k in names} == {k: b[k] for k in names}
    assert a["train/loss_epoch"] == plain["train/loss_epoch"]  # the net trains as it did
    assert a["val/loss"] != plain["val/loss"]  # the average is what validates
    # and what the best checkpoint tests: the raw weights are the plain run's, so a test of
    # them (what Lightning's EMAWeightAveraging callback restores for it) would match it
    assert a["test/loss"] != plain["test/loss"]
