"""The MLflow logger: buffered metrics reach the store in time, bad names are cleaned."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from labrun.job.train import train
from tests.helpers import TINY


def test_buffered_metrics_are_stored_before_each_checkpoint_and_at_the_end(
    make_cfg, store: str
) -> None:
    """Step metrics are written in batches; every step logged before a checkpoint must be
    stored before the checkpoint file exists (a resume from it skips stored steps), and the run
    must end with every step stored."""
    import lightning as L

    client = MlflowClient(store)
    seen: list[tuple[int, list[int]]] = []

    class Look(L.Callback):
        def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
            history = client.get_metric_history(trainer.logger.run_id, "train/loss_step")
            seen.append((trainer.global_step, sorted(m.step for m in history)))

    cfg = make_cfg(
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "trainer.log_every_n_steps=1",
        "callbacks.resume_checkpoint.every_s=null",
        "+callbacks.resume_checkpoint.every_n_train_steps=4",
        "tracking.log_model=false",
        "logger.mlflow.flush_every_s=3600",  # only checkpoints, epochs and the end flush
    )
    metrics = train(cfg, callbacks=[Look()])
    # Every 4 steps mid-epoch (that batch's own metrics travel in the checkpoint) and at each
    # epoch's end (steps 6 and 12, all of the epoch's steps): every earlier step is stored.
    assert sorted({g for g, _ in seen}) == [4, 6, 8, 12]
    for step, stored in seen:
        assert stored in (list(range(step - 1)), list(range(step))), (step, stored)
    assert (6, list(range(6))) in seen
    history = client.get_metric_history(metrics["run_id"], "train/loss_step")
    assert sorted(m.step for m in history) == list(range(12))
    assert "train/acc" in client.get_run(metrics["run_id"]).data.metrics


def test_metric_names_mlflow_refuses_are_cleaned_not_fatal(store: str) -> None:
    """Lightning's MLflow logger drops the characters MLflow refuses; buffering keeps that."""
    from labrun.tracking.logger import RunLogger

    logger = RunLogger(tracking_uri=store, experiment_name="names", flush_every_s=3600)
    with pytest.warns(UserWarning, match="val/acc@5 -> val/acc5"):
        logger.log_metrics({"val/acc@5": 0.5, "val/loss": 1.0}, step=3)
    logger.logged_through = {"val/acc5": 3}  # a resumed run that stored step 3 already
    with pytest.warns(UserWarning, match="val/acc@5 -> val/acc5"):
        logger.log_metrics({"val/acc@5": 0.7}, step=3)
    logger.finalize("success")
    stored = MlflowClient(store).get_metric_history(logger.run_id, "val/acc5")
    assert [(m.step, m.value) for m in stored] == [(3, 0.5)]
