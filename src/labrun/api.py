"""labrun from Python, for notebooks: `labrun.train`, `labrun.evaluate`, `labrun.runs` (and
`labrun.rerun`, `labrun.compare`, which live in their rooms).

The same path as the command line: the one-line preflight before anything runs, the run
closed FINISHED or FAILED whatever happens, and every one-line error raised as a `LabrunError`
whose text is the line the CLI prints.

    import labrun
    result = labrun.train(["experiment=trec_lstm", "seed=1"])
    result["run_id"], result["metrics"]["test/acc"]
    labrun.rerun(result["run_id"])["verdict"]                  # REPRODUCED
    labrun.compare(experiment="trec_lstm", group_by="model.hidden_size")   # a DataFrame
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labrun.compare.frames import runs as runs_frame


def _task(task: str, overrides: Sequence[str], config_dirs: Sequence[str]) -> dict[str, Any]:
    from labrun.config.compose import compose_task, preflight
    from labrun.config.search_path import extra_config_dirs
    from labrun.store.places import check_run_places

    overrides = [str(o) for o in overrides]
    with extra_config_dirs(list(config_dirs)):
        checked = preflight(task, overrides)
        check_run_places(checked)
        run_dir = Path(checked.paths.run_dir)
        output_dir = run_dir / task / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        output_dir.mkdir(parents=True)
        cfg = compose_task(overrides, str(output_dir), task)
        if task == "train":
            from labrun.job.train import train as run_train

            result = run_train(cfg)
        else:
            from labrun.job.eval import evaluate as run_eval

            result = run_eval(cfg)
    run_id = result.pop("run_id")
    return {
        "run_id": run_id,
        "metrics": result,
        "tracking_uri": str(cfg.tracking.uri),
        "output_dir": str(output_dir),
    }


def train(overrides: Sequence[str] = (), config_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """`labrun train OVERRIDES`: `run_id`, final `metrics`, `tracking_uri`, `output_dir`."""
    return _task("train", overrides, config_dirs)


def evaluate(overrides: Sequence[str] = (), config_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """`labrun eval OVERRIDES` (`run_id=...` or `ckpt_path=...`): the new run and its metrics."""
    return _task("eval", overrides, config_dirs)


def runs(**selection: Any) -> Any:
    """The runs `labrun compare` would select (`experiment=`, `sweep=`, `tag={...}`,
    `filter=`, `runs=[ids]`, `tracking_uri=`) as a DataFrame: all params and final metrics."""
    return runs_frame(**selection)
