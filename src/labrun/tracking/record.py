"""What every task writes into its run: config, provenance, data, results and the model."""

from __future__ import annotations

import contextlib
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from labrun.config.locations import (
    CHOICE_TAG,
    CONFIG_HASH_TAG,
    SEED_GROUP_TAG,
    config_hash,
    seed_group,
)
from labrun.contracts import HasTestResults, NamesSplitFiles, TestResults
from labrun.store.client import again_if_raced
from labrun.store.registry import MODEL_TAG
from labrun.tracking import code, provenance
from labrun.tracking.params import flatten
from labrun.tracking.plots import confusion_png, coverage_png, roc_png
from labrun.tracking.run import TrackedRun, storing
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
    run.set_tags(
        {
            CONFIG_HASH_TAG: config_hash(cfg),
            SEED_GROUP_TAG: seed_group(cfg),
            "mlflow.note.content": description(choices.get("experiment")),
            **{
                CHOICE_TAG + group: str(choice)
                for group, choice in choices.items()
                # hydra's own groups say nothing about the experiment; MLflow refuses "@"
                if choice is not None and not group.startswith("hydra") and "@" not in group
            },
        }
    )


def description(recipe: str | None) -> str:
    """The run's description in MLflow's UI: the recipe's header comment, then the command."""
    from labrun.config.folders import recipes_dir
    from labrun.config.search_path import in_use

    header: list[str] = []
    if recipe:
        found = [d / "experiment" / f"{recipe}.yaml" for d in in_use()]
        for path in [*found, recipes_dir() / f"{recipe}.yaml"]:
            if path.is_file():
                lines = path.read_text(encoding="utf-8").splitlines()
                for line in lines:
                    if not line.startswith("#"):
                        break
                    if not line.startswith("# @package"):
                        header.append(line.lstrip("# ").rstrip())
                break
    title = f"Recipe `{recipe}`" if recipe else "No recipe"
    body = "\n".join(header) or "(the recipe has no header comment)"
    return f"{title}: {body}\n\n    {shlex.join(provenance.command_words())}"[:5000]


def record_datasets(run: TrackedRun, dm: Any, name: str) -> None:
    """Every split as an MLflow dataset input (the run page's Datasets): the files it was read
    from, their sha256 as the digest, its rows and its columns."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    files = dm.split_files() if isinstance(dm, NamesSplitFiles) else {}
    root = Path(getattr(dm, "data_dir", "."))
    schema = dataset_schema(dm)
    inputs = []
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        rows = dm.stats.get(f"{split}_rows")
        if rows is None:
            continue
        read = files.get(split) or sorted(dm.fingerprint)
        dataset = Dataset(
            name=f"{name}-{split}",
            digest=provenance.data_digest({f: dm.fingerprint.get(f, "") for f in read})[:16],
            source_type="local",
            source=json.dumps({"uris": [str(root / f) for f in read]}),
            schema=schema,
            profile=json.dumps({"num_rows": int(rows)}),
        )
        inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", context)]))
    if inputs:
        again_if_raced(lambda: run.client.log_inputs(run.run_id, datasets=inputs))


def dataset_schema(dm: Any) -> str | None:
    """MLflow's column spec of what the model reads: text and label, or an image tensor."""
    kwargs = dm.model_kwargs()
    if "vocab_size" in kwargs:
        cols = [{"type": "string", "name": "text"}, {"type": "string", "name": "label"}]
        return json.dumps({"mlflow_colspec": cols})
    if "channels" in kwargs:
        size = kwargs.get("image_size", -1)
        shape = [-1, kwargs["channels"], size, size]
        spec = [
            {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": shape}, "name": "image"}
        ]
        return json.dumps({"mlflow_tensorspec": {"features": json.dumps(spec), "targets": None}})
    return None


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
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    record_datasets(run, dm, choices.get("data") or type(dm).__name__)


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
            log_model(run, exported, tmp_path / "model", metrics)


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


def log_model(
    run: TrackedRun, model: Any, path: Path, metrics: dict[str, float] | None = None
) -> str:
    """The model as an MLflow logged model of the run (the run's "Logged models", with a
    signature and an input example where the module gives one, and its test metrics);
    `mlflow.pytorch.load_model("runs:/<id>/model")` loads it. Returns its model id.

    Pickled, not `pt2`: that export needs tensor inputs and the text model takes strings, so
    MLflow's warning about pickle is silenced.
    """
    import logging
    from unittest import mock

    import mlflow.pytorch
    from mlflow.utils import environment

    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)

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
    example, signature = signature_of(model)
    with skip:
        mlflow.pytorch.save_model(
            model,
            str(path),
            pip_requirements=requirements,
            serialization_format="pickle",
            signature=signature,
            input_example=example,
        )
    return upload_logged_model(run, path, metrics or {})


def upload_logged_model(run: TrackedRun, path: Path, metrics: dict[str, float]) -> str:
    """The saved model folder as the run's MLflow logged model, READY, with its test metrics
    linked (the Logged models table shows them); its id, also as the run's MODEL_TAG."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

    client = run.client
    experiment_id = client.get_run(run.run_id).info.experiment_id
    logged = client.create_logged_model(
        experiment_id, name="model", source_run_id=run.run_id, model_type="pytorch"
    )
    with storing("model", run.artifact_uri):
        client.log_model_artifacts(logged.model_id, str(path))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, 0)])
    now = int(time.time() * 1000)
    linked = [
        Metric(k, float(v), now, 0, model_id=logged.model_id, run_id=run.run_id)
        for k, v in metrics.items()
        if k.startswith("test/")
    ]
    if linked:
        client.log_batch(run.run_id, metrics=linked)
    run.set_tags({MODEL_TAG: logged.model_id})
    return logged.model_id


def signature_of(model: Any) -> tuple[Any, Any]:
    """(input example, MLflow signature) from the module's `input_example`, run once through
    it; (None, None) for a module without one."""
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    example = getattr(model, "input_example", None)
    if example is None:
        return None, None
    with torch.no_grad():
        out = model(example)
    as_input = example.numpy() if isinstance(example, torch.Tensor) else list(example)
    return as_input, infer_signature(as_input, np.asarray(out.cpu().numpy()))
