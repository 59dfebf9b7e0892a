"""Real Lightning runs into a real MLflow store: recipes, records, determinism, failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from labrun.job.train import train
from labrun.models import TextClassifier
from tests.helpers import ROOT, TINY, artifact_paths, labrun_env, run_labrun

PROVENANCE_TAGS = [
    "labrun.git_commit",
    "labrun.git_dirty",
    "labrun.seed",
    "labrun.threads",
    "labrun.device",
    "labrun.hostname",
    "labrun.version",
    "labrun.command",
    "labrun.data_fingerprint",
    "mlflow.source.git.commit",
]


ARTIFACTS = [
    "config/config.yaml",
    "config/overrides.json",
    "config/hydra/config.yaml",
    "config/hydra/overrides.yaml",
    "config/hydra/hydra.yaml",
    "data/vocab.json",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "plots/confusion_matrix.png",
    "plots/roc.png",
    "metrics/final.json",
    "provenance/provenance.json",
    "provenance/git.diff",
    "provenance/requirements.txt",
    "provenance/data_fingerprint.json",
]


TEST_METRICS = ["test/acc", "test/precision", "test/recall", "test/f1", "test/auroc", "test/loss"]


def no_run_left_running(store: str) -> None:
    client = MlflowClient(store)
    if not Path(store.removeprefix("sqlite:///")).exists():
        return
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            assert run.info.status != "RUNNING", run.info.run_id


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "recipe", ["trec_lstm", "sst2_lstm", "mr_lstm", "agnews_lstm", "sms_spam_lstm"]
)
def test_each_recipe_trains_and_tests_on_real_files(
    recipe: str, make_cfg, store: str, tmp_path: Path
) -> None:
    metrics = train(make_cfg(f"experiment={recipe}", *TINY, "tracking.log_model=false"))
    client = MlflowClient(store)
    run = client.get_run(metrics["run_id"])
    assert run.info.status == "FINISHED"
    final = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "metrics/final.json", str(tmp_path))
        ).read_text()
    )
    for name in TEST_METRICS:  # what the trainer measured is what the run holds, unrounded
        assert final[name] == metrics[name] == run.data.metrics[name], name
    for name in ("test/acc", "test/precision", "test/recall", "test/f1", "test/auroc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    # 2 test batches (TINY): accuracy is a count of correct rows over those rows
    batch = make_cfg(f"experiment={recipe}").data.batch_size
    rows = min(2 * batch, int(run.data.metrics["data.test_rows"]))
    assert metrics["test/acc"] * rows == pytest.approx(round(metrics["test/acc"] * rows), abs=1e-3)
    assert run.data.params["data._target_"] == "labrun.data.TextClassificationData"
    # what the class declares it logs in validation (the preflight's list) is what it logs
    logged = {k for k in run.data.metrics if k.startswith("val/")}
    assert logged == set(TextClassifier.validation_metrics)


def test_cli_run_records_everything(tmp_path: Path, store: str) -> None:
    """`labrun train` as a user runs it; every param, tag and artifact read back from MLflow."""
    full_test = [a for a in TINY if "limit_test" not in a]  # eval below tests the whole split too
    proc = run_labrun(
        [
            "train",
            "experiment=trec_lstm",
            *full_test,
            "model.hidden_size=32",
            "seed=0",
            "tracking.system_metrics_s=0.2",
        ],
        labrun_env(tmp_path, store),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("trec_lstm").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("trec_lstm-s0-")
    params = run.data.params
    assert params["model.hidden_size"] == "32"
    assert params["seed"] == "0"
    assert params["model.optimizer._target_"] == "torch.optim.Adam"
    assert params["data.files.train"] == "text/trec/train_5500.label"
    assert params["trainer.deterministic"] == "True"
    for tag in PROVENANCE_TAGS:
        assert run.data.tags.get(tag), tag
    assert run.data.tags["labrun.seed"] == "0"
    assert run.data.tags["labrun.threads"] == "1"
    for name in [
        *TEST_METRICS,
        "val/acc",
        "val/f1",
        "val/auroc",
        "train/loss_epoch",
        "train/acc",
        "data.train_rows",
        "data.vocab_size",
    ]:
        assert name in run.data.metrics, name
    have = artifact_paths(client, run.info.run_id)
    assert set(ARTIFACTS) <= have, set(ARTIFACTS) - have
    check_what_mlflow_shows(client, run)
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert name in run.data.metrics, name  # sampled while it trained
    # what it printed concerns the user: no tips, no dependencies' deprecations, no MLflow
    # table set-up, and Lightning's lines once each (through the task's logging)
    for noise in ("Tip:", "litlogger", "deprecated", "initial MLflow database", "TPU available"):
        assert noise not in proc.stderr + proc.stdout, noise
    assert (proc.stderr + proc.stdout).count("`Trainer.fit` stopped") == 1

    tmp = tmp_path / "dl"
    prov = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "provenance/provenance.json", str(tmp))
        ).read_text()
    )
    assert prov["seed"] == 0 and prov["threads"]["intra_op"] == 1 and prov["git"]["commit"]
    assert "model.hidden_size=32" in prov["command"]
    freeze = Path(
        client.download_artifacts(run.info.run_id, "provenance/requirements.txt", str(tmp))
    )
    assert any(line.startswith("torch==") for line in freeze.read_text().splitlines())
    fingerprint = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "provenance/data_fingerprint.json", str(tmp))
        ).read_text()
    )
    assert fingerprint["text/trec/TREC_10.label"].startswith("033f22c0")
    final = json.loads(
        Path(client.download_artifacts(run.info.run_id, "metrics/final.json", str(tmp))).read_text()
    )
    assert final["test/acc"] == pytest.approx(run.data.metrics["test/acc"])
    resolved = Path(client.download_artifacts(run.info.run_id, "config/config.yaml", str(tmp)))
    assert "hidden_size: 32" in resolved.read_text()

    mlflow.set_tracking_uri(store)
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id and logged.name == "model"
    assert logged.status.to_proto() == logged.status.READY.to_proto()
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]
    assert {m.key: m.value for m in logged.metrics}["test/acc"] == run.data.metrics["test/acc"]
    mlmodel = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{logged.model_id}", dst_path=str(tmp / "logged"), tracking_uri=store
        )
    )
    spec = json.loads(next(mlmodel.glob("**/input_example.json")).read_text())
    assert "How far is it from Denver to Aspen ?" in json.dumps(spec)  # the input example
    signature = mlflow.models.get_model_info(f"models:/{logged.model_id}").signature
    assert signature.inputs.input_types()[0].name == "string"  # text in

    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    labels = model.predict(["How far is it from Denver to Aspen ?", "Who wrote Hamlet ?"])
    assert len(labels) == 2 and set(labels) <= {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert model(["What is a golden parachute ?"]).shape == (1, 6)
    registered = run_labrun(
        ["register", run.info.run_id, "--name", "trec-classifier"], labrun_env(tmp_path, store)
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "models:/trec-classifier@best" in registered.stdout
    best = mlflow.pytorch.load_model("models:/trec-classifier@best")
    assert best.predict(["Who wrote Hamlet ?"]) == model.predict(["Who wrote Hamlet ?"])

    proc = run_labrun(["eval", f"run_id={run.info.run_id}"], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = client.search_runs(
        [run.info.experiment_id], f"tags.`labrun.source_run` = '{run.info.run_id}'"
    )
    assert len(evals) == 1 and evals[0].info.status == "FINISHED"
    assert evals[0].data.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"])
    assert evals[0].data.params["seed"] == "0" and "-s0-" in evals[0].info.run_name  # the model's

    best = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp / "ckpt"))
    proc = run_labrun(
        ["eval", "experiment=trec_lstm", "model.hidden_size=32", f"ckpt_path={best}"],
        labrun_env(tmp_path, store),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = client.search_runs([run.info.experiment_id], "tags.`labrun.task` = 'eval'")
    assert len(evals) == 2
    assert {e.data.metrics["test/acc"] for e in evals} == {run.data.metrics["test/acc"]}


def check_what_mlflow_shows(client: MlflowClient, run: Any) -> None:
    """MLflow's own UI fields: the experiment's kind, Created by, Source, the description, and
    one dataset per split with the file's sha256 digest and the split's rows."""
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"] == "labrun train"
    assert tags["mlflow.source.git.commit"] == tags["labrun.git_commit"]
    note = tags["mlflow.note.content"]
    assert note.startswith("Recipe `trec_lstm`: BiLSTM on TREC-6") and "labrun train" in note
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"trec-train", "trec-val", "trec-test"}
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        dataset = inputs[f"trec-{split}"]
        rows = json.loads(dataset.dataset.profile)["num_rows"]
        assert rows == run.data.metrics[f"data.{split}_rows"]
        assert [t.value for t in dataset.tags] == [context]
        assert "text" in dataset.dataset.schema
    (source,) = json.loads(inputs["trec-test"].dataset.source)["uris"]
    assert source.endswith("text/trec/TREC_10.label") and Path(source).is_file()
    assert inputs["trec-val"].dataset.source == inputs["trec-train"].dataset.source  # cut
    assert inputs["trec-test"].dataset.digest != inputs["trec-train"].dataset.digest


def test_same_seed_same_metrics_other_seed_other_metrics(make_cfg, tmp_path: Path) -> None:
    tiny = [*TINY, "tracking.log_model=false", "trainer.max_epochs=2"]
    a = train(make_cfg("experiment=sms_spam_lstm", *tiny, "seed=1"))
    assert len(list((tmp_path / "cache/data").iterdir())) == 1  # b reads a's tensorised data
    b = train(make_cfg("experiment=sms_spam_lstm", *tiny, "seed=1"))
    c = train(make_cfg("experiment=sms_spam_lstm", *tiny, "seed=2"))
    names = [*TEST_METRICS, "val/loss", "train/loss_epoch"]
    assert {k: a[k] for k in names} == {k: b[k] for k in names}  # bit-identical, not approx
    assert a["test/loss"] != c["test/loss"]


def test_injected_exception_ends_the_run_failed_with_its_traceback(
    make_cfg, store: str, monkeypatch, tmp_path: Path
) -> None:
    def explode(self, batch, batch_idx):
        raise RuntimeError("injected failure in training_step")

    monkeypatch.setattr(TextClassifier, "training_step", explode)
    with pytest.raises(RuntimeError, match="injected"):
        train(make_cfg(*TINY))
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("trec_lstm").experiment_id])
    assert run.info.status == "FAILED"
    assert "injected failure" in run.data.tags["labrun.error"]
    text = Path(
        client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))
    ).read_text()
    assert "Traceback" in text and "injected failure in training_step" in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_the_run_killed(sig: int, tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labrun",
            "train",
            "trainer.max_epochs=100",
            "tracking.log_model=false",
            "~callbacks.progress_bar",
            "~callbacks.early_stopping",
            "trainer.log_every_n_steps=1",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(store)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training is under way
        exp = client.get_experiment_by_name("trec_lstm") if Path(store[10:]).exists() else None
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and "train/loss_step" in runs[0].data.metrics:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    (run,) = client.search_runs([client.get_experiment_by_name("trec_lstm").experiment_id])
    assert run.info.status == "KILLED", err[-2000:]


# Errors found while running, through the CLI as users meet them. Errors the preflight finds
# (an unknown recipe or key, a wrong type, a null seed, a bad choice, a bad override) are in
# tests/test_bad_input.py's catalogue, checked in process with the same one-line rule.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["paths.data_dir=/nonexistent/labrun-data", "data.download=false"],
            "missing data file /nonexistent/labrun-data/text/trec/train_5500.label",
        ),
        (
            ["tracking.uri=http://127.0.0.1:9", "tracking.connect_timeout_s=2"],
            "cannot reach the tracking server at http://127.0.0.1:9",
        ),
        (
            ["data.files.train=bad/train.label", "data.files.test=bad/train.label"],
            "train.label:2: malformed line",
        ),
        (
            ["data.files.train=empty/train.label", "data.files.test=empty/train.label"],
            "split is empty",
        ),
    ],
    ids=["missing-data-dir", "unreachable-server", "malformed-line", "empty-dataset"],
)
def test_bad_input_gives_one_clear_line(
    args: list[str], message: str, tmp_path: Path, store: str
) -> None:
    data = tmp_path / "data"
    write(data / "bad/train.label", "DESC:manner How did it go ?\nthis line has no label\n")
    write(data / "empty/train.label", "\n\n")
    env = labrun_env(tmp_path, store, LABRUN_DATA_DIR=str(data))
    if any(a.startswith("paths.data_dir") for a in args):
        env.pop("LABRUN_DATA_DIR")
    proc = run_labrun(["train", *args, "~callbacks.progress_bar"], env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]  # bad input, as the CLI promises
    errors = [line for line in proc.stderr.splitlines() if line.startswith("labrun: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert message in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    no_run_left_running(store)


# Run inside the wheel's virtualenv: every requirement the installed labrun declares is met.
CHECK_REQUIREMENTS = """
import sys
from importlib.metadata import requires, version
from packaging.requirements import Requirement
unmet = []
for line in requires("labrun"):
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        found = version(req.name)
    except Exception:
        unmet.append(f"{req.name}: not installed")
        continue
    if not req.specifier.contains(found, prereleases=True):
        unmet.append(f"{req.name} {found} is not {req.specifier}")
print("\\n".join(unmet))
sys.exit(1 if unmet else 0)
"""


def test_runs_from_an_installed_wheel_in_another_directory(tmp_path: Path) -> None:
    """The built wheel, installed into a fresh virtualenv, trains through its own `labrun`
    console script from a folder outside the checkout, with the configs and recipes it ships.

    The virtualenv takes its dependencies from this environment's site-packages as a plain path
    entry (no network; the `.pth` files there, among them the editable labrun, are not run), so
    the labrun it imports is the wheel's, and every dependency the wheel declares is checked.
    """
    wheel_dir = tmp_path / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("labrun-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {"labrun/conf/train.yaml", "labrun/experiments/trec_lstm.yaml"} <= shipped
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--force-reinstall",
    ]
    done = subprocess.run([*install, str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    needs = subprocess.run([str(python), "-c", CHECK_REQUIREMENTS], capture_output=True, text=True)
    assert needs.returncode == 0, f"unmet requirements of the wheel: {needs.stdout}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = labrun_env(tmp_path)
    env.pop("LABRUN_RUN_DIR")
    env.pop("PYTHONPATH", None)
    args = ["experiment=trec_lstm", "debug=fdr", "tracking.log_model=false"]
    proc = subprocess.run(
        [str(venv / "bin" / "labrun"), "train", *args, "~callbacks.progress_bar"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (elsewhere / "runs" / "mlflow.db").is_file()  # the run folder is where the user is
    probe = subprocess.run(
        [str(python), "-c", "import labrun.config.compose as c; print(c.config_dir())"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == str(Path(site) / "labrun" / "conf")


def test_hydra_flags_still_work(tmp_path: Path) -> None:
    proc = run_labrun(["train", "--cfg", "job", "experiment=sst2_lstm"], labrun_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "stsa.binary.train" in proc.stdout
    assert not (tmp_path / "runs").exists()  # printing a config starts no run


def test_the_callbacks_group_decides_whether_there_is_a_progress_bar(make_cfg) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    from labrun.job.build import build_trainer

    assert isinstance(build_trainer(make_cfg(), None).progress_bar_callback, RichProgressBar)
    assert build_trainer(make_cfg("~callbacks.progress_bar"), None).progress_bar_callback is None
    forced = make_cfg("~callbacks.progress_bar", "+trainer.enable_progress_bar=true")
    assert build_trainer(forced, None).progress_bar_callback is not None  # Lightning's own
