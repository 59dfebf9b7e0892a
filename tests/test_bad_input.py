"""The catalogue of bad input: every wrong config value, flag, data file and command answers
with one `labrun: error:` line naming the key or file, a non-zero exit, no traceback, and no
run left RUNNING. Most fail in the preflight, before any run or data read, so most cases run
the CLI in this process (the same `labrun.cli.main`); the cases that fail after the run is
opened, or need a real process, are real subprocesses at the end."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun.cli import main
from tests.helpers import ROOT, labrun_command, labrun_env, run_labrun

ERR = "labrun: error: "

# (id, argv, what the line must say). Exit code 2 unless the id ends in "!1".
PREFLIGHT = [
    ("misspelled-key", ["train", "model.hiden_size=3"], "unknown config key 'model.hiden_size'"),
    ("wrong-type", ["train", "model.hidden_size=big"], "'model.hidden_size' must be int"),
    (
        "negative-hidden",
        ["train", "model.hidden_size=-4"],
        "'model.hidden_size' must be > 0, got -4",
    ),
    ("zero-hidden", ["train", "model.hidden_size=0"], "'model.hidden_size' must be > 0"),
    ("zero-embedding", ["train", "model.embedding_dim=0"], "'model.embedding_dim' must be > 0"),
    ("zero-layers", ["train", "model.num_layers=0"], "'model.num_layers' must be > 0"),
    (
        "dropout-above-1",
        ["train", "model.dropout=1.5"],
        "'model.dropout' must be in [0, 1), got 1.5",
    ),
    ("dropout-negative", ["train", "model.dropout=-0.1"], "'model.dropout' must be in [0, 1)"),
    ("dropout-one", ["train", "model.dropout=1.0"], "'model.dropout' must be in [0, 1)"),
    ("negative-l1", ["train", "model.l1=-1"], "'model.l1' must be >= 0"),
    (
        "bad-pooling",
        ["train", "model.pooling=median"],
        "'model.pooling' must be one of 'last', 'mean', 'max'",
    ),
    (
        "bad-embedding-init",
        ["train", "model=kim_cnn", "model.embedding_init=xavier"],
        "'model.embedding_init' must be one of 'normal', 'uniform'",
    ),
    (
        "zero-bn-batches",
        ["train", "experiment=mnist_dcgan", "model.recompute_bn=0"],
        "'model.recompute_bn' must be > 0, got 0",
    ),
    (
        "bad-d-norm",
        ["train", "experiment=mnist_dcgan", "model.discriminator.norm=layer"],
        "'model.discriminator.norm' must be one of 'batch', 'spectral'",
    ),
    (
        "lr-decay-at-the-end",
        ["train", "experiment=mnist_dcgan", "model.lr_decay_start=1"],
        "'model.lr_decay_start' must be in [0, 1)",
    ),
    (
        "zero-top-k",
        ["train", "experiment=mnist_dcgan", "model.g_top_k=0"],
        "'model.g_top_k' must be in (0, 1], got 0",
    ),
    ("negative-lr", ["train", "model.optimizer.lr=-1"], "'model.optimizer.lr' must be > 0, got -1"),
    ("zero-lr", ["train", "model.optimizer.lr=0"], "'model.optimizer.lr' must be > 0"),
    ("string-lr", ["train", "model.optimizer.lr=fast"], "'model.optimizer.lr'"),
    (
        "negative-decay",
        ["train", "model.optimizer.weight_decay=-0.1"],
        "'model.optimizer.weight_decay' must be >= 0",
    ),
    (
        "momentum-1.5",
        ["train", "model/optimizer=sgd", "model.optimizer.momentum=1.5"],
        "'model.optimizer.momentum' must be in [0, 1)",
    ),
    ("unknown-optimizer", ["train", "model/optimizer=nadam"], "nadam"),
    (
        "plateau-factor",
        ["train", "model/scheduler=plateau", "model.scheduler.factor=2"],
        "'model.scheduler.factor' must be in (0, 1)",
    ),
    (
        "step-size-0",
        ["train", "model/scheduler=step", "model.scheduler.step_size=0"],
        "'model.scheduler.step_size' must be > 0",
    ),
    (
        "cosine-tmax-0",
        ["train", "model/scheduler=cosine", "model.scheduler.T_max=0"],
        "'model.scheduler.T_max' must be > 0",
    ),
    ("batch-size-0", ["train", "data.batch_size=0"], "'data.batch_size' must be > 0, got 0"),
    ("batch-size-negative", ["train", "data.batch_size=-8"], "'data.batch_size' must be > 0"),
    ("batch-size-word", ["train", "data.batch_size=ten"], "'data.batch_size' must be int"),
    (
        "val-fraction-negative",
        ["train", "data.val_fraction=-0.2"],
        "'data.val_fraction' must be in [0, 1), got -0.2",
    ),
    (
        "val-fraction-1.5",
        ["train", "data.val_fraction=1.5"],
        "'data.val_fraction' must be in [0, 1), got 1.5",
    ),
    (
        "fractions-sum",
        ["train", "data.val_fraction=0.95"],
        "needs val_fraction + test_fraction < 1",
    ),
    (
        "test-fraction-1",
        ["train", "data.test_fraction=1.0"],
        "'data.test_fraction' must be in [0, 1)",
    ),
    ("max-length-0", ["train", "data.max_length=0"], "'data.max_length' must be > 0"),
    ("min-freq-0", ["train", "data.min_freq=0"], "'data.min_freq' must be > 0"),
    ("max-size-0", ["train", "data.max_size=0"], "'data.max_size' must be > 0"),
    ("workers-negative", ["train", "data.num_workers=-1"], "'data.num_workers' must be >= 0"),
    (
        "unicode-form",
        ["train", "data.unicode_form=NFX"],
        "'data.unicode_form' must be one of 'NFC', 'NFD', 'NFKC', 'NFKD' or null",
    ),
    (
        "encoding",
        ["train", "data.encoding=utf-9"],
        "'data.encoding' must be a text encoding Python knows",
    ),
    (
        "tokenizer",
        ["train", "data.tokenizer=spacy"],
        "'data.tokenizer' must be one of 'basic', 'whitespace'",
    ),
    ("format", ["train", "data.format=xml"], "'data.format' must be one of 'prefixed'"),
    (
        "duplicate-labels",
        ["train", "+data.labels=[ham,spam,ham]"],
        "'data.labels' must be a list without repeats",
    ),
    (
        "label-names-short",
        ["train", "+data.labels=[0,1,2]", "+data.label_names=[a,b]"],
        "one label_names entry per entry of labels",
    ),
    ("unknown-data", ["train", "data=imagenet"], "imagenet"),
    ("threads-0", ["train", "threads=0"], "'threads' must be >= 1, got 0"),
    ("threads-negative", ["train", "threads=-2"], "'threads' must be >= 1"),
    ("seed-negative", ["train", "seed=-1"], "'seed' must be in [0, 4294967296)"),
    ("seed-too-big", ["train", "seed=4294967296"], "'seed' must be in [0, 4294967296)"),
    ("seed-null", ["train", "seed=null"], "'seed' cannot be null"),
    ("seed-word", ["train", "seed=lucky"], "'seed'"),
    ("gpu-on-cpu", ["train", "trainer=gpu"], "needs as many GPUs as trainer.devices asks for"),
    ("three-gpus", ["train", "trainer=gpu", "trainer.devices=3"], "trainer.devices=3"),
    ("ddp-gpus", ["train", "trainer=ddp"], "needs as many GPUs"),
    (
        "fsdp-on-cpus",
        ["train", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1"],
        "needs GPUs for strategy=fsdp (trainer=fsdp); on CPUs use trainer=ddp_cpu",
    ),
    ("max-epochs", ["train", "trainer.max_epochs=-5"], "'trainer.max_epochs' must be >= -1"),
    ("max-epochs-word", ["train", "trainer.max_epochs=many"], "'trainer.max_epochs' must be int"),
    (
        "clip-negative",
        ["train", "trainer.gradient_clip_val=-1"],
        "'trainer.gradient_clip_val' must be >= 0",
    ),
    (
        "accumulate-0",
        ["train", "+trainer.accumulate_grad_batches=0"],
        "'trainer.accumulate_grad_batches' must be >= 1",
    ),
    (
        "log-every-0",
        ["train", "trainer.log_every_n_steps=0"],
        "'trainer.log_every_n_steps' must be >= 1",
    ),
    ("trainer-typo", ["train", "+trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'"),
    (
        "patience-negative",
        ["train", "callbacks.early_stopping.patience=-1"],
        "'callbacks.early_stopping.patience' must be >= 0",
    ),
    (
        "min-delta-negative",
        ["train", "+callbacks.early_stopping.min_delta=-0.5"],
        "'callbacks.early_stopping.min_delta' must be >= 0",
    ),
    (
        "save-top-k",
        ["train", "+callbacks.model_checkpoint.save_top_k=-2"],
        "'callbacks.model_checkpoint.save_top_k' must be >= -1",
    ),
    (
        "weight-averaging-callback",
        ["train", "+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging"],
        "'callbacks.ema' (EMAWeightAveraging) validates the averaged weights but labrun's test",
    ),
    (
        "average-under-fsdp",
        ["train", "trainer=fsdp", "model.ema_decay=0.99"],
        "model.ema_decay cannot be used with strategy=fsdp (trainer=fsdp)",
    ),
    (
        "gan-average-under-fsdp",  # the GAN recipes average their generator by default
        ["train", "experiment=mnist_dcgan", "trainer=fsdp", "trainer.devices=2"],
        "the average and the net would be sharded apart; use trainer=ddp, or model.ema_decay=null",
    ),
    (
        "direction",
        ["train", "objective.direction=up"],
        "'objective.direction' must be one of 'maximize', 'minimize'",
    ),
    (
        "timeout",
        ["train", "tracking.connect_timeout_s=0"],
        "'tracking.connect_timeout_s' must be > 0",
    ),
    ("unknown-experiment", ["train", "experiment=no_such_recipe"], "no_such_recipe"),
    ("unknown-debug", ["train", "debug=nope"], "nope"),
    ("unknown-launcher", ["train", "hydra/launcher=nope"], "nope"),
    ("unknown-tracking", ["train", "tracking=nope"], "nope"),
    ("unknown-logger", ["train", "logger=nope"], "nope"),
    ("not-an-override", ["train", "bogus"], "cannot read the override 'bogus'"),
    (
        "list-with-a-space",
        ["train", "model.hidden_size=8,", "16"],
        "cannot read the override 'model.hidden_size=8,'",
    ),
    (
        "multirun-list-with-a-space",
        ["train", "-m", "model.hidden_size=8,", "16"],
        "cannot read the override 'model.hidden_size=8,'",
    ),
    (
        "multirun-direction",
        ["train", "-m", "objective.direction=max"],
        "'objective.direction' must be one of 'maximize', 'minimize', got 'max'",
    ),
    ("empty-value", ["train", "model.hidden_size="], "'model.hidden_size' must be int, got ''"),
    ("cfg-without-value", ["train", "--cfg"], "--cfg needs a value: --cfg job"),
    ("cfg-unknown", ["train", "--cfg", "jobs"], "--cfg jobs: use one of job, hydra, all"),
    ("target-os-system", ["train", "model._target_=os.system"], "os.system"),
    (
        "target-missing",
        ["train", "model._target_=labrun.models.Nope"],
        "cannot import 'labrun.models.Nope'",
    ),
    ("extra-model-key", ["train", "+model.extra_key=1"], "unknown key 'model.extra_key'"),
    (
        "gan-dropout",
        ["train", "experiment=mnist_dcgan", "model.label_smoothing=1.5"],
        "'model.label_smoothing' must be in [0, 1)",
    ),
    (
        "gan-batch",
        ["train", "experiment=mnist_dcgan", "data.batch_size=0"],
        "'data.batch_size' must be > 0",
    ),
    (
        "gan-latent",
        ["train", "experiment=mnist_dcgan", "model.latent_dim=0"],
        "'model.latent_dim' must be > 0",
    ),
    ("image-std", ["train", "experiment=mnist_dcgan", "data.std=0"], "'data.std' must be > 0"),
    # what the callbacks, the objective and the scheduler watch: the model says what it logs
    (
        "objective-never-logged",
        ["train", "objective.metric=val/accuracy"],
        "'objective.metric' is 'val/accuracy', a metric labrun.models.TextClassifier never logs",
    ),
    (
        "plateau-monitor-typo",
        ["train", "model/scheduler=plateau", "model.monitor=val/acc_"],
        "'model.monitor' is 'val/acc_'",
    ),
    (
        "early-stopping-monitor",
        ["train", "callbacks.early_stopping.monitor=val/lss"],
        "'callbacks.early_stopping.monitor' is 'val/lss'",
    ),
    (
        "gan-objective-acc",
        ["train", "experiment=mnist_dcgan", "objective.metric=val/acc"],
        "(it logs val/fid, val/confident in validation)",
    ),
    # the places a run writes, checked without opening them
    (
        "store-unknown-scheme",
        ["train", "tracking.uri=foo://bar"],
        "unknown tracking URI scheme 'foo'",
    ),
    ("store-plain-path", ["train", "tracking.uri=./mlruns"], "is a plain path"),
    ("runs-unknown-scheme", ["runs", "--tracking-uri", "foo://x"], "unknown tracking URI scheme"),
    (
        "compare-unknown-scheme",
        ["compare", "--experiment", "x", "--tracking-uri", "s3://bucket"],
        "unknown tracking URI scheme 's3'",
    ),
    # labrun sweep: its settings and its whole search space before the first trial
    ("sweep-no-space", ["sweep", "experiment=trec_lstm"], "labrun sweep needs a search space"),
    (
        "sweep-typo",
        ["sweep", "hparams_search=trec_optuna", "model.hiden_size=3"],
        "unknown config key 'model.hiden_size'",
    ),
    (
        "sweep-base-value",
        ["sweep", "hparams_search=trec_optuna", "model.dropout=3"],
        "'model.dropout' must be in [0, 1), got 3",
    ),
    (
        "sweep-n-trials-0",
        ["sweep", "hparams_search=trec_optuna", "hparams_search.n_trials=0"],
        "'hparams_search.n_trials' must be an int >= 1, got 0",
    ),
    (
        "sweep-negative-timeout",
        ["sweep", "hparams_search=trec_optuna", "hparams_search.timeout=-5"],
        "'hparams_search.timeout' must be seconds > 0 (or null: no limit), got -5",
    ),
    (
        "sweep-workers-0",
        ["sweep", "hparams_search=trec_optuna", "--workers", "0"],
        "--workers must be >= 1, got 0",
    ),
    (
        "sweep-sampler",
        ["sweep", "hparams_search=trec_optuna", "hparams_search.sampler.type=cmaes"],
        "'hparams_search.sampler.type' must be one of tpe, random, got 'cmaes'",
    ),
    (
        "sweep-pruner",
        ["sweep", "hparams_search=trec_optuna", "hparams_search.pruner.type=hyperband"],
        "'hparams_search.pruner.type' must be one of median, none",
    ),
    ("sweep-unknown-space", ["sweep", "hparams_search=nope"], "nope"),
    (
        "sweep-pruned-multi-objective",
        ["sweep", "hparams_search=trec_optuna_mo", "hparams_search.pruner.type=median"],
        "Optuna prunes only single-objective studies; set hparams_search.pruner.type=none",
    ),
    (
        "sweep-objective-direction",
        ["sweep", "hparams_search=trec_optuna_mo", "hparams_search.objectives.1.direction=down"],
        "'hparams_search.objectives'[1].direction must be maximize or minimize, got 'down'",
    ),
    (
        "sweep-unknown-recipe",
        ["sweep", "experiment=nope", "hparams_search=trec_optuna"],
        "Could not find 'experiment/nope'",
    ),
    (
        "sweep-store",
        ["sweep", "hparams_search=trec_optuna", "tracking.uri=foo://bar"],
        "unknown tracking URI scheme",
    ),
    # every job of -m, before its parent run
    (
        "multirun-typo",
        ["train", "-m", "model.hiden_size=3,4"],
        "unknown config key 'model.hiden_size'",
    ),
    (
        "multirun-one-bad-value",
        ["train", "-m", "model.hidden_size=8,-4"],
        "(in the job with model.hidden_size=-4)",
    ),
    (
        "multirun-grid",
        ["train", "-m", "seed=1,2", "data.batch_size=8,0"],
        "'data.batch_size' must be > 0",
    ),
    (
        "multirun-only-a-combination-is-bad",  # each value is fine alone: 0.5 + 0.6 is not
        ["train", "-m", "data.val_fraction=0.2,0.5", "data.test_fraction=0.3,0.6"],
        "(in the job with data.val_fraction=0.5 data.test_fraction=0.6)",
    ),
    (
        "multirun-dropout",
        ["train", "--multirun", "model.dropout=0.1,2"],
        "'model.dropout' must be in [0, 1)",
    ),
    # --cfg, --config-dir, hydra.*
    (
        "cfg-typo",
        ["train", "--cfg", "job", "model.hiden_size=3"],
        "unknown config key 'model.hiden_size'",
    ),
    ("cfg-threads", ["train", "--cfg", "job", "threads=0"], "'threads' must be >= 1"),
    (
        "gan-betas-one",
        ["train", "experiment=mnist_dcgan", "model.g_optimizer.betas=[0.0]"],
        "'model.g_optimizer.betas' must be two numbers, each in [0, 1)",
    ),
    (
        "adam-betas-one",
        ["train", "-m", "seed=1,2", "+model.optimizer.betas=[0.9,1.0]"],
        "'model.optimizer.betas' must be two numbers, each in [0, 1)",
    ),
    (  # --cfg writes nothing, but a store URI MLflow cannot open is still a wrong value
        "cfg-store-scheme",
        ["train", "--cfg", "job", "tracking.uri=postgres://u@db/x"],
        "unknown tracking URI scheme 'postgres'",
    ),
    (
        "cfg-multirun-store",
        ["train", "-m", "--cfg", "job", "seed=1,2", "tracking.uri=./mlruns"],
        "is a plain path",
    ),
    (
        "config-dir-missing",
        ["train", "--config-dir", "/nonexistent/conf"],
        "--config-dir /nonexistent/conf: no such folder",
    ),
    ("config-dir-no-value", ["train", "--config-dir"], "--config-dir needs a folder"),
    (
        "hydra-run-dir",
        ["train", "hydra.run.dir=/tmp/x", "model.dropout=2"],
        "'model.dropout' must be in [0, 1)",
    ),
    ("hydra-job-typo", ["train", "hydra.job.chdir=maybe"], "hydra.job.chdir"),
    # eval, check
    ("eval-typo", ["eval", "model.hiden_size=3"], "unknown config key 'model.hiden_size'"),
    ("eval-threads", ["eval", "threads=0"], "'threads' must be >= 1"),
    ("eval-seed-of-a-run", ["eval", "run_id=ab12", "seed=7"], "seed=7 has no effect with run_id"),
    (
        "eval-model-of-a-run",
        ["eval", "run_id=ab12", "model.hidden_size=8"],
        "model.hidden_size=8 has no effect with run_id=ab12: eval takes the seed, data, model",
    ),
    (
        "eval-data-of-a-run-m",
        ["eval", "-m", "run_id=ab12", "data=sst2,trec"],
        "data=sst2 has no effect with run_id=ab12",
    ),
    ("check-dropout", ["check", "model.dropout=2"], "'model.dropout' must be in [0, 1)"),
    ("check-flag", ["check", "--bogus"], "labrun check takes overrides only"),
    # commands and their options
    ("unknown-command", ["trian"], "unknown command 'trian'"),
    ("rerun-no-id", ["rerun"], "labrun rerun: the following arguments are required: run_id (see"),
    (
        "rerun-bad-rtol",
        ["rerun", "abc", "--rtol", "x"],
        "argument --rtol: invalid float value: 'x'",
    ),
    (
        "runs-bad-status",
        ["runs", "--status", "BOGUS"],
        "argument --status: invalid choice: 'BOGUS'",
    ),
    ("runs-bad-limit", ["runs", "-n", "x"], "argument -n/--limit: invalid int value: 'x'"),
    (
        "compare-bad-format",
        ["compare", "--format", "pdf"],
        "argument --format: invalid choice: 'pdf'",
    ),
    (
        "compare-seeds-needed-zero",
        ["compare", "--seeds-needed", "0"],
        "argument --seeds-needed: must be a difference above 0, got '0'",
    ),
    (
        "compare-seeds-needed-text",
        ["compare", "--seeds-needed", "half"],
        "argument --seeds-needed: 'half' is not a number (e.g. 0.005 or 0.5%)",
    ),
    ("compare-bad-ci", ["compare", "--ci", "normal"], "argument --ci: invalid choice: 'normal'"),
    ("register-no-name", ["register", "abc"], "the following arguments are required: --name"),
    ("new-bad-name", ["new", "My-Lab"], "'My-Lab' cannot name a Python package"),
    ("new-no-name", ["new"], "labrun new: the following arguments are required: name"),
    ("server-bad-verb", ["server", "reboot"], "labrun server"),
    ("resume-no-id", ["resume"], "labrun resume: the following arguments are required: run_id"),
    # sweeps: labrun's own flags of -m, and the commands that follow a sweep
    ("detach-no-multirun", ["train", "--detach"], "--detach submits a sweep's jobs and exits"),
    ("detach-local", ["train", "-m", "seed=1,2", "--detach"], "--detach needs a cluster"),
    ("allow-drift-no-multirun", ["eval", "--allow-drift"], "use it with labrun train -m"),
    (
        "sweep-status-no-id",
        ["sweep", "status"],
        "labrun sweep status: the following arguments are required: sweep_id",
    ),
]


def test_the_catalogue_is_as_big_as_promised() -> None:
    cases = [c[0] for c in PREFLIGHT + PLACES + RUNTIME + MOUNTED + VARIANTS]
    assert len(cases) >= 80
    assert len(set(cases)) == len(cases)


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for flag_env in ("LABRUN_DETACH", "LABRUN_ALLOW_DRIFT"):  # labrun's -m flags set them:
        monkeypatch.setenv(flag_env, "0")  # recorded, so the value a case sets is undone
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "says"), [c[1:] for c in PREFLIGHT], ids=[c[0] for c in PREFLIGHT]
)
def test_bad_input_is_one_line_before_anything_runs(argv, says, shell: Path, capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(ERR), err
    assert [line for line in lines if line.startswith(ERR)] == [lines[-1]]
    assert says in lines[-1], lines[-1]
    assert "Traceback" not in err
    assert not (shell / "runs" / "mlflow.db").exists()  # no store opened, no run left


def space(conf: Path, name: str, params: str, extra: str = "") -> list[str]:
    """A search space file in a user's config folder: the sweep overrides that use it."""
    write(
        conf / "hparams_search" / f"{name}.yaml",
        f"defaults:\n  - trec_optuna\n  - _self_\nstudy_name: {name}\n{extra}"
        f"params:\n  {params}\n".encode(),
    )
    return ["sweep", "--config-dir", str(conf), f"hparams_search={name}"]


SQLITE_GARBAGE = b"this is not a database" * 100

# Cases that need a file or a folder, still before anything runs: (id, builder(tmp) -> (argv,
# environment), what the line says).
PLACES = [
    (
        "store-under-a-file",
        lambda t: (["train"], {"MLFLOW_TRACKING_URI": f"sqlite:///{write(t / 'f', b'x')}/m.db"}),
        "lies under",
    ),
    (
        "store-corrupt",
        lambda t: (
            ["train"],
            {"MLFLOW_TRACKING_URI": f"sqlite:///{write(t / 'bad.db', SQLITE_GARBAGE)}"},
        ),
        "is not an SQLite database",
    ),
    (
        "store-is-a-folder",
        lambda t: (["train"], {"MLFLOW_TRACKING_URI": f"sqlite:///{t}"}),
        "is a folder; point tracking.uri",
    ),
    (
        "run-dir-under-a-file",
        lambda t: (["train"], {"LABRUN_RUN_DIR": f"{write(t / 'f', b'x')}/runs"}),
        "the run folder",
    ),
    (
        "artifacts-under-a-file",
        lambda t: (["train", f"tracking.artifact_root={write(t / 'f', b'x')}/art"], {}),
        "the artifact folder",
    ),
    (
        "multirun-store-corrupt",
        lambda t: (
            ["train", "-m", "seed=1,2"],
            {"MLFLOW_TRACKING_URI": f"sqlite:///{write(t / 'bad.db', SQLITE_GARBAGE)}"},
        ),
        "is not an SQLite database",
    ),
    (
        "eval-store-corrupt",
        lambda t: (
            ["eval", "ckpt_path=x.ckpt"],
            {"MLFLOW_TRACKING_URI": f"sqlite:///{write(t / 'bad.db', SQLITE_GARBAGE)}"},
        ),
        "is not an SQLite database",
    ),
    (
        "runs-store-corrupt",
        lambda t: (
            ["runs", "--tracking-uri", f"sqlite:///{write(t / 'b.db', SQLITE_GARBAGE)}"],
            {},
        ),
        "is not an SQLite database",
    ),
    (
        "sweep-space-typo",
        lambda t: (
            space(t / "conf", "typo", "model.hiden_size: {type: int, low: 8, high: 16}"),
            {},
        ),
        "hparams_search.params['model.hiden_size']: 'model.hiden_size' is not a key",
    ),
    (
        "sweep-range-refused",
        lambda t: (
            space(t / "conf", "drop", "model.dropout: {type: float, low: 0.1, high: 1.5}"),
            {},
        ),
        "'model.dropout' must be in [0, 1), got 1.5; fix the value in the config or on the "
        "command line (in the search space: model.dropout=1.5)",
    ),
    (
        "sweep-choice-refused",
        lambda t: (
            space(t / "conf", "hid", "model.hidden_size: {type: categorical, choices: [16, 0]}"),
            {},
        ),
        "(in the search space: model.hidden_size=0)",
    ),
    (
        "sweep-low-above-high",
        lambda t: (
            space(t / "conf", "lh", "model.optimizer.lr: {type: float, low: 0.1, high: 0.01}"),
            {},
        ),
        "low (0.1) must be below high (0.01)",
    ),
    (
        "sweep-log-from-zero",
        lambda t: (
            space(
                t / "conf", "lg", "model.optimizer.lr: {type: float, low: 0, high: 0.1, log: true}"
            ),
            {},
        ),
        "a log range needs low > 0",
    ),
    (
        "sweep-empty-choices",
        lambda t: (
            space(t / "conf", "ec", "model.hidden_size: {type: categorical, choices: []}"),
            {},
        ),
        "choices must be a non-empty list",
    ),
    (
        "sweep-unknown-kind",
        lambda t: (space(t / "conf", "uk", "model.dropout: {type: beta, low: 0.1, high: 0.5}"), {}),
        ".type must be one of categorical, float, int, got 'beta'",
    ),
    (
        "sweep-int-range-of-floats",
        lambda t: (
            space(t / "conf", "ir", "model.hidden_size: {type: int, low: 8.5, high: 16}"),
            {},
        ),
        ".low must be a finite int, got 8.5",
    ),
    (
        "sweep-no-params",
        lambda t: (space(t / "conf", "np", "null"), {}),
        "'hparams_search.params' must map config keys to distributions",
    ),
]


@pytest.mark.parametrize(("build", "says"), [c[1:] for c in PLACES], ids=[c[0] for c in PLACES])
def test_bad_places_and_spaces_are_one_line_before_anything_runs(
    build, says, shell: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, env = build(shell)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(ERR) and says in lines[-1], err
    assert "Traceback" not in err
    assert not list(shell.rglob("mlflow.db")) and not list(shell.rglob("optuna.db"))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


TREC = [
    f"{c}:x question {i} about {c.lower()} ?" for i in range(30) for c in ("DESC", "ENTY", "HUM")
]


def trec_files(data: Path, train: bytes, test: bytes | None = None) -> list[str]:
    write(data / "mine/train.label", train)
    write(data / "mine/test.label", test if test is not None else "\n".join(TREC).encode() + b"\n")
    return ["data.files.train=mine/train.label", "data.files.test=mine/test.label"]


# Cases that need data, a store or a process: (id, argv builder, expected line, exit code).
RUNTIME = [
    (
        "utf16-file",
        lambda d: ["train", *trec_files(d, "\n".join(TREC).encode("utf-16"))],
        "is UTF-16; labrun reads UTF-8",
        2,
    ),
    (
        "folder-as-file",
        lambda d: [
            "train",
            "data.files.train=mine",
            "data.files.test=mine/test.label",
            *trec_files(d, b"x")[1:],
        ],
        "is a folder, not a data file",
        2,
    ),
    (
        "label-not-in-list",
        lambda d: ["train", *trec_files(d, "\n".join(TREC).encode()), "+data.labels=[DESC,ENTY]"],
        "unknown label 'HUM'",
        2,
    ),
    (
        "not-a-checkpoint",
        lambda d: ["eval", f"ckpt_path={write(d / 'x.ckpt', b'garbage')}"],
        "is not a readable checkpoint",
        2,
    ),
    (
        "truncated-checkpoint",
        lambda d: ["eval", f"ckpt_path={write(d / 't.ckpt', b'PK' + bytes(40))}"],
        "is not a readable checkpoint",
        2,
    ),
    (
        "eval-needs-a-source",
        lambda d: ["eval"],
        "eval needs run_id=<MLflow run id> or ckpt_path=<checkpoint file>",
        2,
    ),
    (
        "compare-dead-server",
        lambda d: ["compare", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:9"],
        "cannot reach the tracking server at http://127.0.0.1:9",
        2,
    ),
    ("rerun-unknown-run", lambda d: ["rerun", "0" * 32], "0" * 32, 2),
]


@pytest.mark.parametrize(
    ("build", "says", "code"), [c[1:] for c in RUNTIME], ids=[c[0] for c in RUNTIME]
)
def test_bad_input_at_run_time_is_one_line_and_closes_the_run(
    build, says, code, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    data = tmp_path / "data"
    argv = build(data)
    env = labrun_env(
        tmp_path, store, LABRUN_DATA_DIR=str(data), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"
    )
    done = run_labrun(
        [*argv, "~callbacks.progress_bar"] if argv[0] == "train" else argv, env, timeout=180
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr[-2000:]
    assert lines[-1].startswith(ERR) and says in lines[-1], lines[-1]
    assert "Traceback" not in done.stderr
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(store)
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")


def in_mounts(mounts: list[str], argv: list[str]) -> list[str]:
    """`labrun ARGV` in a mount namespace of its own, with `mounts` (mount(8) arguments) made
    there first: a real read-only folder or a real full disk, for this process only. As root
    (where permission bits do not stop writes) and as a user alike (a user namespace)."""
    setup = " && ".join(f"mount {m}" for m in mounts)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    command = " ".join(shlex.quote(a) for a in [str(labrun_command()), *argv])
    return ["unshare", "--mount", *user, "sh", "-c", f"{setup} && exec {command}"]


def read_only(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"--bind -o ro {folder} {folder}"


def tiny_disk(folder: Path, size: str = "200k") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"-t tmpfs -o size={size} tmpfs {folder}"


# Read-only and full places: (id, builder(tmp) -> (mounts, argv, environment), line, exit code,
# whether a run is opened first and must end FAILED).
MOUNTED = [
    (
        "store-read-only",
        lambda t: (
            [read_only(t / "ro")],
            ["train"],
            {"MLFLOW_TRACKING_URI": f"sqlite:///{t}/ro/m.db"},
        ),
        "cannot be written: {t}/ro is on a read-only file system",
        2,
        False,
    ),
    (
        "run-dir-read-only",
        lambda t: ([read_only(t / "ro")], ["train"], {"LABRUN_RUN_DIR": f"{t}/ro/runs"}),
        "the run folder {t}/ro/runs cannot be written: {t}/ro is on a read-only file system",
        2,
        False,
    ),
    (
        "artifacts-read-only",
        lambda t: ([read_only(t / "ro")], ["train", f"tracking.artifact_root={t}/ro/a"], {}),
        "the artifact folder {t}/ro/a cannot be written",
        2,
        False,
    ),
    (
        "artifact-disk-full",
        lambda t: (
            [tiny_disk(t / "full")],
            ["train", *TINY, f"tracking.artifact_root={t}/full"],
            {},
        ),
        "No space left on device; free space there or point tracking.artifact_root at another",
        2,
        True,
    ),
]
TINY = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "~callbacks.progress_bar",
]


@pytest.mark.parametrize(
    ("build", "says", "code", "opens"), [c[1:] for c in MOUNTED], ids=[c[0] for c in MOUNTED]
)
def test_read_only_and_full_places_are_one_line_and_lose_nothing(
    build, says, code, opens, tmp_path: Path
) -> None:
    mounts, argv, extra = build(tmp_path)
    store = extra.get("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    env = labrun_env(tmp_path, store, **extra)
    done = subprocess.run(
        in_mounts(mounts, argv), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr[-2000:]
    assert lines[-1].startswith(ERR) and says.format(t=tmp_path) in lines[-1], lines[-1]
    assert "Traceback" not in done.stderr
    runs = []
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(store)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == (["FAILED"] if opens else [])
    if opens:
        assert "No space left" in runs[0].data.tags["labrun.error"]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One finished tiny run in its own store: what rerun and eval variants start from."""
    import labrun
    from labrun.environ import environ

    home = tmp_path_factory.mktemp("stored")
    with environ({"LABRUN_RUN_DIR": str(home / "runs"), "MLFLOW_TRACKING_URI": ""}):
        os.environ.pop("MLFLOW_TRACKING_URI")  # put back (or left unset) on the way out
        result = labrun.train([*TINY, "tracking.log_model=false"])
    return home, result["run_id"]


# A stored run's rerun and eval, with a bad override: checked before a new run is opened.
VARIANTS = [
    ("rerun-bad-value", ["rerun", "{id}", "model.dropout=2"], "'model.dropout' must be in [0, 1)"),
    (
        "rerun-typo",
        ["rerun", "{id}", "model.hiden_size=3"],
        "unknown config key 'model.hiden_size' in the stored config",
    ),
    ("rerun-store", ["rerun", "{id}", "tracking.uri=foo://x"], "unknown tracking URI scheme"),
    ("rerun-objective", ["rerun", "{id}", "objective.metric=val/x"], "'objective.metric' is"),
    ("rerun-one-seed", ["rerun", "{id}", "--seeds", "1"], "needs at least 2 seeds"),
    (
        "rerun-seeds-word",
        ["rerun", "{id}", "--seeds", "five"],
        "--seeds: takes a whole number of seeds, not 'five'",
    ),
    ("rerun-trials-of-a-run", ["rerun", "{id}", "--trials", "best"], "is not a sweep's run"),
    ("eval-bad-value", ["eval", "run_id={id}", "model.dropout=2"], "'model.dropout' must be in"),
    ("eval-unknown-run", ["eval", f"run_id={'f' * 32}"], "no run '" + "f" * 32),
    (
        "register-no-model",
        ["register", "{id}", "--name", "trec"],
        "logged no model (it ran with tracking.log_model=false",
    ),
    ("register-bad-name", ["register", "{id}", "--name", "my model"], "cannot name a registered"),
    (
        "register-bad-alias",
        ["register", "{id}", "--name", "m", "--alias", "v2"],
        "cannot be an alias",
    ),
    ("register-unknown-run", ["register", "f" * 32, "--name", "m"], "no run '" + "f" * 32),
]


@pytest.mark.parametrize(("argv", "says"), [c[1:] for c in VARIANTS], ids=[c[0] for c in VARIANTS])
def test_rerun_and_eval_variants_are_checked_before_a_new_run(
    argv, says, stored_run, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, run_id = stored_run
    monkeypatch.setenv("LABRUN_RUN_DIR", str(home / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as ended:
        main([a.format(id=run_id) for a in argv])
    err = capsys.readouterr().err
    assert ended.value.code == 2, err
    assert err.strip().splitlines()[-1].startswith(ERR) and says in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    client = MlflowClient(f"sqlite:///{home}/runs/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [run_id]  # no new run, none left RUNNING


def test_a_config_node_that_cannot_be_built_says_which_and_why(shell: Path) -> None:
    """Hydra's error names only the target ("Error in call to target ...Trainer"): the line
    names the config key and the class's own reason."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from labrun.cli.common import explain_exception

    cfg = OmegaConf.create(
        {"trainer": {"_target_": "lightning.pytorch.Trainer", "strategy": "fsdp",
                     "accelerator": "cpu", "logger": False}}
    )  # fmt: skip
    with pytest.raises(Exception) as built:
        instantiate(cfg.trainer)
    line = explain_exception(built.value)
    assert line.startswith("trainer could not be built: The strategy `fsdp` requires a GPU"), line
