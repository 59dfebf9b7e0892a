"""Secrets never reach the store: params, tags and every text artifact of a real run."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from labrun.job.train import train
from labrun.tracking.secrets import REDACTED, redact, scrub_text
from tests.helpers import TINY

QUICK = [*TINY, "tracking.log_model=false"]


def trained(make_cfg, *overrides: str) -> tuple[str, dict]:
    metrics = train(make_cfg(*QUICK, *overrides))
    return str(metrics["run_id"]), metrics


def test_secrets_never_reach_params_tags_or_artifacts(
    make_cfg, store: str, tmp_path: Path, monkeypatch
) -> None:
    secret = "s3cr3t-value-for-labrun-test"
    monkeypatch.setenv("LABRUN_TEST_API_TOKEN", secret)
    run_id, _ = trained(
        make_cfg,
        "+tracking.tags.db_password=hunter2-hunter2",
        "+tracking.tags.note=${oc.env:LABRUN_TEST_API_TOKEN}",
    )
    client = MlflowClient(store)
    run = client.get_run(run_id)
    everything = json.dumps([run.data.params, run.data.tags])
    out = tmp_path / "artifacts"
    client.download_artifacts(run_id, "", str(out))
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".txt", ".diff"}:
            everything += path.read_text(errors="replace")
    assert secret not in everything and "hunter2-hunter2" not in everything
    assert run.data.params["tracking.tags.db_password"] == REDACTED
    assert run.data.params["tracking.tags.note"] == REDACTED
    assert run.data.params["model.hidden_size"] == "256"  # ordinary values untouched


def test_scrubbing_rules() -> None:
    env = {"HF_TOKEN": "hf_abcdefgh", "PWD": "/home/me", "MY_AUTH_HEADER": "x"}
    text = "uri: postgresql://bob:pw123@db/x\npassword: abc\ntokenizer: basic\ngoogle-auth==2.6"
    scrubbed = scrub_text(text + " hf_abcdefgh /home/me", env)
    assert "pw123" not in scrubbed and "abc\n" not in scrubbed and "hf_abcdefgh" not in scrubbed
    assert "tokenizer: basic" in scrubbed and "google-auth==2.6" in scrubbed
    assert "/home/me" in scrubbed  # PWD is a folder, not a password
    assert redact({"db": {"apiKey": "k", "host": "h"}}, env) == {
        "db": {"apiKey": REDACTED, "host": "h"}
    }
