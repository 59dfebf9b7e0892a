"""Kim's CNN (`model=kim_cnn`): a sentence's logits do not depend on its batch, it trains on
TREC in a real run with the LSTM recipe's data, and it is as deterministic as the LSTM."""

from __future__ import annotations

import lightning as L
import mlflow
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from labrun.job.build import build
from labrun.job.train import train
from labrun.models import KimCNN, KimCNNNet
from tests.helpers import TINY

RUN = [*TINY, "trainer.max_epochs=2"]


@pytest.mark.parametrize("wide", [False, True])
def test_logits_do_not_depend_on_the_batch_or_its_padding(wide: bool) -> None:
    torch.manual_seed(0)
    net = KimCNNNet(vocab_size=50, num_classes=3, embedding_dim=8, filters=4, wide=wide).eval()
    short = torch.tensor([[7, 8]])  # shorter than the widest filter (5)
    longer = torch.tensor([[7, 8, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 9, 10]])
    alone = net(short, torch.tensor([2]))
    batched = net(longer, torch.tensor([2, 8]))
    torch.testing.assert_close(alone[0], batched[0], rtol=0, atol=1e-6)  # other kernel shapes
    # what the padding holds never reaches the logits: the same shapes, the same bits
    other = longer.clone()
    other[0, 2:] = 11
    assert torch.equal(net(other, torch.tensor([2, 8]))[0], batched[0])


@pytest.mark.parametrize("wide", [False, True])
def test_pooling_sees_the_windows_kim_describes(wide: bool) -> None:
    """Narrow: the windows inside the sentence (zero-padded to the widest filter). Wide: every
    window that holds a word, the sentence padded with width - 1 zeros on each side."""
    torch.manual_seed(0)
    net = KimCNNNet(vocab_size=50, num_classes=3, embedding_dim=8, filters=4, wide=wide).eval()
    for ids in ([7, 8], [1, 2, 3, 4, 5, 6, 9]):
        x = net.embedding(torch.tensor([ids])).transpose(1, 2)
        pooled = []
        for width, conv in zip(net.widths, net.convs, strict=True):
            edges = (width - 1, width - 1) if wide else (0, max(0, max(net.widths) - len(ids)))
            pooled.append(F.relu(conv(F.pad(x, edges))).amax(2))
        expected = net.head(torch.cat(pooled, 1))
        got = net(torch.tensor([ids]), torch.tensor([len(ids)]))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_the_recipe_reaches_the_net(make_cfg) -> None:
    """`trec_cnn` sets wide convolutions and Kim's word vectors; an override takes them back."""
    net = build(make_cfg("experiment=trec_cnn").model, vocab_size=50, num_classes=6).net
    assert net.wide and net.embedding.weight.abs().max() <= 0.25
    cfg = make_cfg("experiment=trec_cnn", "model.wide=false", "model.embedding_init=normal")
    net = build(cfg.model, vocab_size=50, num_classes=6).net
    assert not net.wide and net.embedding.weight.abs().max() > 1


def test_it_trains_on_trec_with_the_lstm_recipe(make_cfg, store: str) -> None:
    cfg = make_cfg("experiment=trec_lstm", "model=kim_cnn", *RUN, "tracking.log_model=true")
    metrics = train(cfg)
    run = MlflowClient(store).get_run(metrics["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model._target_"] == "labrun.models.KimCNN"
    assert run.data.params["model.hidden_size"] == "256"  # the recipe's width: maps per width
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert {k for k in run.data.metrics if k.startswith("val/")} == set(KimCNN.validation_metrics)
    mlflow.set_tracking_uri(store)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")  # raw text in
    labels = model.predict(["How far is Denver from Aspen ?", "Who ?"])  # 'Who ?' < 5 words
    assert len(labels) == 2 and set(labels) <= {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}


def test_same_seed_same_metrics(make_cfg) -> None:
    over = ["experiment=trec_lstm", "model=kim_cnn", *RUN, "tracking.log_model=false"]
    a, b = train(make_cfg(*over, "seed=3")), train(make_cfg(*over, "seed=3"))
    names = ["test/acc", "test/loss", "val/loss", "train/loss_epoch"]
    assert {k: a[k] for k in names} == {k: b[k] for k in names}


def fit_briefly(model: KimCNN) -> None:
    """Ten Adadelta steps on seeded random sentences: enough for the output rows to grow."""
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (80, 9))
    data = torch.utils.data.TensorDataset(ids, torch.full((80,), 9), torch.randint(0, 6, (80,)))
    trainer = L.Trainer(
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=8))


def test_max_norm_caps_each_output_row(make_cfg) -> None:
    """`model.max_norm` (Kim: 3): after every step no class's output weights are longer than
    it; unset, the same steps leave rows longer, so the cap is what holds them."""

    def trained(*overrides: str) -> torch.Tensor:
        cfg = make_cfg("experiment=trec_cnn", *overrides)
        model = build(cfg.model, vocab_size=50, num_classes=6)
        fit_briefly(model)
        return model.net.head.weight.detach().norm(dim=1)

    capped, free = trained("model.max_norm=0.05"), trained("model.max_norm=null")
    assert capped.max() <= 0.05 + 1e-6
    assert free.max() > 0.05
    assert make_cfg("experiment=trec_cnn").model.max_norm == 3.0  # the recipe's, Kim's


def test_kim_settings_recipe_trains_on_trec(make_cfg) -> None:
    metrics = train(make_cfg("experiment=trec_cnn", *RUN, "tracking.log_model=false"))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["train/loss_epoch"] > 0
