"""`model.word_dropout`: in training, each word (never padding) becomes `<unk>` with that
probability, for either text network; validation and test see every word, the same seed
drops the same words, and 0 (the default) draws nothing from the random stream."""

from __future__ import annotations

import pytest
import torch

from labrun.job.build import build
from labrun.job.train import train
from tests.helpers import TINY


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """200 sentences of ids 2..49, the last 3 positions padding."""
    ids = torch.randint(2, 50, (200, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 9:] = 0
    return ids, torch.full((200,), 9), torch.zeros(200, dtype=torch.long)


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_training_turns_words_into_unk_and_leaves_padding(make_cfg, model: str) -> None:
    cfg = make_cfg("experiment=trec_lstm", f"model={model}", "model.word_dropout=0.25")
    net = build(cfg.model, vocab_size=50, num_classes=6)
    ids = batch()[0]
    torch.manual_seed(7)
    (seen, _), _ = net.train().unpack(batch())
    torch.manual_seed(7)
    (again, _), _ = net.unpack(batch())
    assert torch.equal(seen, again)  # the seed decides which words drop
    dropped = seen != ids
    assert (seen[dropped] == 1).all()  # <unk>
    assert not dropped[:, 9:].any() and (seen[:, 9:] == 0).all()  # padding stays padding
    assert 0.22 < dropped[:, :9].float().mean() < 0.28  # 1,800 words at 0.25
    (evaluated, _), _ = net.eval().unpack(batch())
    assert torch.equal(evaluated, ids)


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_zero_changes_nothing_and_draws_nothing(make_cfg, model: str) -> None:
    """The default: ids pass as they are and the random stream is where it was, so a stored
    run (which has no such key) trains as it did."""
    cfg = make_cfg("experiment=trec_lstm", f"model={model}")
    assert cfg.model.word_dropout == 0.0
    net = build(cfg.model, vocab_size=50, num_classes=6).train()
    torch.manual_seed(7)
    (seen, _), _ = net.unpack(batch())
    after = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(seen, batch()[0]) and torch.equal(after, torch.rand(1))


def test_same_seed_same_run_and_a_different_one_without(make_cfg) -> None:
    over = ["experiment=trec_lstm", *TINY, "tracking.log_model=false", "seed=3"]
    a = train(make_cfg(*over, "model.word_dropout=0.3"))
    b = train(make_cfg(*over, "model.word_dropout=0.3"))
    plain = train(make_cfg(*over))
    names = ["val/loss", "train/loss_epoch"]
    assert {k: a[k] for k in names} == {k: b[k] for k in names}
    assert a["train/loss_epoch"] != plain["train/loss_epoch"]
