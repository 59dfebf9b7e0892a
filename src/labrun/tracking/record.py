"""What every task writes into its run: config, provenance, data, results and the model."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from labrun.config.locations import CONFIG_HASH_TAG, SEED_GROUP_TAG, config_hash, seed_group
from labrun.contracts import HasTestResults, TestResults
from labrun.tracking import code, provenance
from labrun.tracking.params import flatten
from labrun.tracking.plots import confusion_png, coverage_png, roc_png
from labrun.tracking.run import TrackedRun
from labrun.tracking.secrets import redact, scrub_text


def open_run(
    cfg: DictConfig, task: str, tags: dict[str, str] | None = None, resume_run_id: str | None = None
) -> TrackedRun:
    """The task's run: named by config, tagged with the task, the config's tags and `tags`;
    with `resume_run_id`, that existing run reopened."""
    t = cfg.tracking
    all_tags = {
        "labrun.task": task,
        **{str(k): str(v) for k, v in t.tags.items()},
        **{f"labrun.tag.{tag}": "1" for tag in cfg.tags},
        **(tags or {}),
    }
    name = t.run_name
    if name and "labrun.trial" in all_tags:  # trials of one sweep often start in one second
        name = f"{name}-t{all_tags['labrun.trial']}"
    return TrackedRun(
        uri=t.uri,
        experiment=t.experiment,
        artifact_root=t.artifact_root,
        run_name=name,
        tags=all_tags,
        connect_timeout_s=t.connect_timeout_s,
        resume_run_id=resume_run_id,
    )


def record_config(run: TrackedRun, cfg: DictConfig) -> None:
    """Flattened params for search; the resolved config and Hydra's files as artifacts, all
    with secrets redacted."""
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    run.log_params(flatten(resolved))
    run.log_text(OmegaConf.to_yaml(resolved), "config/config.yaml")
    if HydraConfig.initialized():
        hydra_dir = Path(cfg.paths.output_dir) / ".hydra"
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            if (hydra_dir / name).is_file():
                text = (hydra_dir / name).read_text(encoding="utf-8")
                if name == "config.yaml":  # the same tree as config/config.yaml, unresolved
                    text = OmegaConf.to_yaml(redact(OmegaConf.to_container(OmegaConf.create(text))))
                run.log_text(text, f"config/hydra/{name}")
        overrides = list(HydraConfig.get().overrides.task)
        choices = OmegaConf.to_container(HydraConfig.get().runtime.choices)
    else:
        overrides, choices = [], {}
    run.log_dict({"overrides": overrides, "choices": choices}, "config/overrides.json")
    run.set_tags({CONFIG_HASH_TAG: config_hash(cfg), SEED_GROUP_TAG: seed_group(cfg)})


def record_provenance(run: TrackedRun, cfg: DictConfig) -> None:
    """The project's git state, each package's code (`labrun.tracking.code`), the config
    folders searched, packages, machine; diffs apart as text artifacts."""
    from labrun.config.search_path import in_use, relative

    root = Path(cfg.paths.root_dir)
    prov = provenance.collect(root, cfg.seed, cfg.threads)
    prov["code"] = code.code_state(cfg)
    prov["config_dirs"] = relative(in_use(), root)
    run.set_tags(provenance.tags(prov))
    diff = prov["git"].pop("diff") or ""
    prov["git"]["diff_redacted"] = scrub_text(diff, assignments=False) != diff
    run.log_text(diff, "provenance/git.diff", code=True)
    for name, state in prov["code"].items():
        if package_diff := state.pop("diff", None):
            state["diff_redacted"] = scrub_text(package_diff, assignments=False) != package_diff
            run.log_text(package_diff, f"provenance/code/{name}.diff", code=True)
    run.log_text("\n".join(prov.pop("packages")) + "\n", "provenance/requirements.txt")
    run.log_dict(prov, "provenance/provenance.json")


def record_numerics(run: TrackedRun, trajectory: Any, first_process: bool) -> None:
    """The trajectory fingerprint, and (from the run's first process, not a resume on another
    machine) what decides its last bits (`tracking.numerics`), read after training so that the
    Trainer's precision switches are the ones it trained under."""
    from labrun.tracking import numerics
    from labrun.tracking import trajectory as fingerprint

    run.log_text(trajectory.dumps(), fingerprint.ARTIFACT, code=True)
    if first_process:
        run.log_dict(numerics.capture(), numerics.ARTIFACT)


def record_resume(run: TrackedRun, cfg: DictConfig) -> None:
    """A resumed run keeps its config; this process's provenance goes beside the original's."""
    count = int(run.client.get_run(run.run_id).data.tags.get("labrun.resumes", "0")) + 1
    prov = provenance.collect(Path(cfg.paths.root_dir), cfg.seed, cfg.threads)
    prov["git"].pop("diff")
    prov["code"] = code.code_state(cfg)
    for state in prov["code"].values():
        state.pop("diff", None)
    prov.pop("packages")
    prov["checkpoint"] = cfg.ckpt_path
    run.log_dict(prov, f"provenance/resume_{count}.json")
    run.set_tags({"labrun.resumes": count, "labrun.resumed_from": cfg.ckpt_path})


def record_data(run: TrackedRun, dm: Any) -> None:
    """Fingerprint, row counts and the data's learned state (a text vocabulary)."""
    run.log_dict(dm.fingerprint, "provenance/data_fingerprint.json")
    run.set_tags({"labrun.data_fingerprint": provenance.data_digest(dm.fingerprint)})
    run.log_metrics({f"data.{k}": v for k, v in dm.stats.items()})
    if state := dm.state_dict():
        run.log_dict({**state, "class_names": dm.class_names}, "data/vocab.json")


def record_results(
    run: TrackedRun,
    cfg: DictConfig,
    checkpoints: dict[str, str],
    model: Any,
    dm: Any,
    metrics: dict[str, float],
    exported: Any = None,
) -> None:
    """Final metrics, test plots, best and last checkpoints and the loadable model."""
    run.log_dict(metrics, "metrics/final.json")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        results = model.test_results if isinstance(model, HasTestResults) else {}
        record_test_results(run, results, dm.class_names, tmp_path)
        for name, path in checkpoints.items():
            if path and Path(path).is_file():
                target = tmp_path / f"{name}.ckpt"
                target.symlink_to(Path(path).resolve())
                run.log_file(target, "checkpoints")
        if exported is not None and cfg.tracking.log_model:
            log_model(run, exported, tmp_path / "model")


def record_test_results(
    run: TrackedRun, results: TestResults, class_names: list[str], tmp: Path
) -> None:
    """Each kind of test result the contract names (`contracts.TestResults`) as its artifact."""
    if "confusion" in results:
        confusion = confusion_png(results["confusion"], class_names, tmp / "confusion_matrix.png")
        run.log_file(confusion, "plots")
    if "roc" in results:
        run.log_file(roc_png(*results["roc"], class_names, tmp / "roc.png"), "plots")
    if "samples" in results:
        from torchvision.utils import save_image

        save_image(results["samples"], tmp / "samples_final.png", nrow=8)
        run.log_file(tmp / "samples_final.png", "plots")
    if "coverage" in results:
        run.log_dict(results["coverage"], "metrics/coverage.json")
        run.log_file(coverage_png(results["coverage"], class_names, tmp / "coverage.png"), "plots")


def log_model(run: TrackedRun, model: Any, path: Path) -> None:
    """The model users load back: `mlflow.pytorch.load_model("runs:/<id>/model")`.

    Pickled, not `pt2`: that export needs tensor inputs and the text model takes strings, so
    MLflow's warning about pickle is silenced.
    """
    import logging
    from unittest import mock

    import mlflow.pytorch
    from mlflow.utils import environment

    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

    requirements = [
        line
        for line in provenance.pip_freeze()
        if line.split("==")[0].lower() in {"torch", "labrun", "mlflow", "lightning"}
    ]
    # The pins come from this very environment, so MLflow's check that it satisfies them can
    # only pass; it maps every installed file to its package first (1.25 s under cProfile).
    check = "warn_dependency_requirement_mismatches"
    skip = (
        mock.patch.object(environment, check, lambda _: None)
        if hasattr(environment, check)
        else contextlib.nullcontext()
    )
    with skip:
        mlflow.pytorch.save_model(
            model, str(path), pip_requirements=requirements, serialization_format="pickle"
        )
    run.log_dir(path, "model")
