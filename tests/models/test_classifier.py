"""`model.label_smoothing`: a real training step's loss is cross-entropy against the smoothed
target, validation and test losses stay plain cross-entropy, and 0.0 is the old loss."""

from __future__ import annotations

import lightning as L
import torch

from labrun.job.build import build


class FirstLoss(L.Callback):
    """Keeps the loss the first training step returned (computed before its optimizer step)."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.loss = outputs["loss"].detach()


def first_step(make_cfg, smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss of one real Trainer step, smoothed loss by hand, plain cross-entropy) on one batch."""
    cfg = make_cfg("experiment=trec_lstm", "model.dropout=0", f"model.label_smoothing={smoothing}")
    torch.manual_seed(0)
    model = build(cfg.model, vocab_size=50, num_classes=6)
    tokens = torch.randint(1, 50, (8, 12))
    batch = (tokens, torch.full((8,), 12), torch.randint(0, 6, (8,)))
    with torch.no_grad():
        logp = model(tokens, batch[1]).log_softmax(1)
    target = torch.full_like(logp, smoothing / 6)
    target[torch.arange(8), batch[2]] += 1 - smoothing
    by_hand = -(target * logp).sum(1).mean()
    plain = -logp[torch.arange(8), batch[2]].mean()
    seen = FirstLoss()
    L.Trainer(
        max_steps=1,
        logger=False,
        callbacks=[seen],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(
        model,
        train_dataloaders=torch.utils.data.DataLoader(list(zip(*batch, strict=True)), batch_size=8),
    )
    return seen.loss, by_hand, plain


def test_a_training_step_trains_against_the_smoothed_target(make_cfg) -> None:
    loss, by_hand, plain = first_step(make_cfg, 0.1)
    torch.testing.assert_close(loss, by_hand)
    assert not torch.isclose(loss, plain)  # the smoothing moves the loss


def test_the_default_is_plain_cross_entropy(make_cfg) -> None:
    loss, _, plain = first_step(make_cfg, 0.0)
    torch.testing.assert_close(loss, plain)


def test_validation_loss_stays_plain_cross_entropy(make_cfg) -> None:
    """Val/test losses compare across smoothing settings: a smoothed model validates plainly."""
    cfg = make_cfg("experiment=trec_lstm", "model.dropout=0", "model.label_smoothing=0.1")
    torch.manual_seed(0)
    model = build(cfg.model, vocab_size=50, num_classes=6)
    tokens, labels = torch.randint(1, 50, (8, 12)), torch.randint(0, 6, (8,))
    lengths = torch.full((8,), 12)
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
    loader = torch.utils.data.DataLoader(
        list(zip(tokens, lengths, labels, strict=True)), batch_size=8
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(model, dataloaders=loader, verbose=False)
    assert abs(result["val/loss"] - plain.item()) < 1e-6
