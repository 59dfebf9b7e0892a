"""Resume checkpoints by the clock, and checkpoints written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrun.job.train import train
from tests.helpers import TINY


@pytest.mark.parametrize(("every_s", "written"), [(0.001, True), (600, False)])
def test_resume_checkpoint_is_written_by_the_clock(
    every_s: float, written: bool, make_cfg, tmp_path: Path
) -> None:
    import torch

    cfg = make_cfg(
        *TINY, "tracking.log_model=false", f"callbacks.resume_checkpoint.every_s={every_s}"
    )
    train(cfg)
    found = list(tmp_path.glob("**/checkpoints/resume.ckpt"))
    assert bool(found) is written
    if written:  # overwritten at each save: the last one is mid-training, after a step
        state = torch.load(found[0], weights_only=False, map_location="cpu")
        assert state["global_step"] >= 2 and "labrun.ResumableState" in state["callbacks"]


def test_checkpoints_are_written_whole_or_not_at_all(make_cfg, tmp_path: Path, monkeypatch) -> None:
    import torch

    from labrun.job.build import build_trainer
    from labrun.resume.checkpoints import FileCheckpointIO

    trainer = build_trainer(make_cfg(*TINY), run_id=None)
    assert isinstance(trainer.strategy.checkpoint_io, FileCheckpointIO)
    io = FileCheckpointIO()
    target = tmp_path / "ckpt" / "a.ckpt"
    io.save_checkpoint({"weights": torch.arange(10)}, target)
    assert torch.equal(io.load_checkpoint(target)["weights"], torch.arange(10))

    def cut_short(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"weights": torch.zeros(10)}, target)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(target)["weights"], torch.arange(10))  # old one kept
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.ckpt"]  # no partial left
