"""The benchmark's baseline is only fair if it does the same work: same losses, batch by batch."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, labrun_env


def worker(name: str, tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "worker", name, "--epochs", "1"],
        capture_output=True,
        text=True,
        env=labrun_env(tmp_path),
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_loop_and_labrun_train_on_the_same_losses(tmp_path) -> None:
    """trec_lstm here; `make bench` checks the GAN the same way (it needs the feature net)."""
    plain = worker("plain_trec", tmp_path)
    ours = worker("labrun_trec_default", tmp_path)
    assert len(plain["losses"]) == len(ours["losses"]) > 50
    worst = max(abs(a - b) for a, b in zip(plain["losses"], ours["losses"], strict=True))
    assert worst < 5e-6  # Lightning's own parity test asks for 5 decimals
    assert len(plain["epoch_s"]) == len(ours["epoch_s"]) == 1
