"""Where the configs live, the resolvers they use, and the one composer: the first step of the
loop. The CLI's preflight, sweep trials, reruns and tests all compose through `compose`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from labrun.config.folders import PACKAGE_DIR, config_dir, project_root, recipes_dir

__all__ = [
    "PACKAGE_DIR",
    "compose",
    "compose_task",
    "config_dir",
    "preflight",
    "project_root",
    "recipes_dir",
]


def direction_mode(direction: str) -> str:
    """`objective.direction` as a callback's `mode`: maximize -> max, minimize -> min."""
    from labrun.config.rules import DIRECTIONS
    from labrun.errors import ConfigError

    if direction not in DIRECTIONS:
        raise ConfigError(f"objective.direction must be maximize or minimize, not '{direction}'")
    return DIRECTIONS[direction]


def gpus_asked(accelerator: str, devices: object) -> int:
    """GPUs a job asks its cluster for: `devices` when the trainer runs on GPUs, else none."""
    if str(accelerator) not in ("gpu", "cuda"):
        return 0
    return devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1


def register_resolvers() -> None:
    """Resolvers, schemas and recipes the configs use; safe to call more than once."""
    from labrun.config.schema import register_recipes, register_schemas

    if not OmegaConf.has_resolver("labrun.root"):
        OmegaConf.register_new_resolver("labrun.root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("labrun.abspath"):
        OmegaConf.register_new_resolver("labrun.abspath", lambda p: str(Path(p).resolve()))
    if not OmegaConf.has_resolver("labrun.mode"):
        OmegaConf.register_new_resolver("labrun.mode", direction_mode)
    if not OmegaConf.has_resolver("labrun.gpus"):
        OmegaConf.register_new_resolver("labrun.gpus", gpus_asked)
    register_schemas()
    register_recipes(recipes_dir())


def compose(
    config_name: str, overrides: list[str], return_hydra_config: bool = False
) -> DictConfig:
    """Hydra's composition of `config_name` with `overrides`, outside `@hydra.main`.

    Any composition error (unknown key, wrong type, unknown group option) is a `ConfigError`
    of one line naming the key.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labrun.config.explain import explain
    from labrun.errors import ConfigError

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(
                config_name=config_name,
                overrides=overrides,
                return_hydra_config=return_hydra_config,
            )
    except Exception as exc:  # Hydra's and OmegaConf's errors, as one line naming the key
        raise ConfigError(explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def preflight(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose and check every `_target_` before Hydra starts the job: a bad key or type fails
    here, in one line, before any output folder, run or data read exists. Returns the config."""
    from labrun.config.explain import explain
    from labrun.config.search_path import config_dirs
    from labrun.config.targets import check_targets
    from labrun.errors import ConfigError

    config_dirs(check=True)  # a named folder that is missing, before Hydra skips it
    parse_overrides(overrides)  # the word that does not parse, by name
    cfg = compose(config_name, overrides)
    try:
        check_targets(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # a signature that cannot be read, an import that fails oddly
        raise ConfigError(explain(exc)) from None
    if config_name == "eval" and cfg.get("run_id"):
        check_eval_of_run(overrides, str(cfg.run_id))
    return cfg


FROM_THE_RUN = ("seed", "data", "model", "experiment", "tracking.experiment")


def check_eval_of_run(overrides: list[str], run_id: str) -> None:
    """`labrun eval run_id=` tests the run's own model on its own data under its seed, so an
    override of those would be dropped without a word: refuse it instead."""
    from labrun.errors import ConfigError

    for o in parse_overrides(overrides):
        key = o.key_or_group
        if any(key == k or key.startswith(f"{k}.") for k in FROM_THE_RUN):
            raise ConfigError(
                f"{o.input_line} has no effect with run_id={run_id}: eval takes the seed, data, "
                "model and experiment from the run; drop it (the data folder is paths.data_dir), "
                "or test under your own config with ckpt_path=<file>"
            )


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of `overrides`; one that does not parse is a line naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from labrun.errors import ConfigError

    parser = OverridesParser.create()
    for word in overrides:
        try:
            parser.parse_overrides([word])
        except Exception:
            raise ConfigError(
                f"cannot read the override '{word}': write key=value, a list of values as "
                "key=a,b,c without spaces, and quote a value that holds spaces or commas"
            ) from None
    return parser.parse_overrides(overrides)


ALL_JOBS_UP_TO = 32  # a bigger grid has each swept value checked once, not every combination


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of `labrun train -m OVERRIDES`, as Hydra's basic sweeper makes them: every
    combination for a grid of up to ALL_JOBS_UP_TO jobs, else one job per swept value (the
    other swept keys at their first value), so a typo in any value is still found."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = parse_overrides(overrides)
    swept = [o for o in parsed if o.is_sweep_override()]
    jobs = 1
    for o in swept:
        jobs *= len(list(o.sweep_string_iterator()))
    if jobs <= ALL_JOBS_UP_TO:
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    first = {o.key_or_group: next(iter(o.sweep_string_iterator())) for o in swept}
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    out = []
    for o in swept:
        for value in o.sweep_string_iterator():
            chosen = {**first, o.key_or_group: value}
            out.append([*fixed, *(f"{k}={v}" for k, v in chosen.items())])
    return out


def preflight_multirun(config_name: str, overrides: list[str]) -> list[DictConfig]:
    """`preflight` for every job of a multirun, before the sweep's parent run is opened;
    returns the configs checked. An error names the job's overrides."""
    from labrun.config.rules import ON_THIS_MACHINE
    from labrun.errors import ConfigError

    jobs = sweep_jobs(overrides)
    remote = any(o.startswith("hydra/launcher=") and "slurm" in o for o in overrides)
    token = ON_THIS_MACHINE.set(not remote)  # a SLURM job's GPUs are the cluster's
    checked = []
    try:
        for job in jobs:
            try:
                checked.append(preflight(config_name, job))
            except ConfigError as exc:
                swept = [o for o in job if o not in overrides]
                where = f" (in the job with {' '.join(swept)})" if swept else ""
                raise ConfigError(f"{exc}{where}") from None
    finally:
        ON_THIS_MACHINE.reset(token)
    return checked


def compose_task(overrides: list[str], output_dir: str, config_name: str = "train") -> DictConfig:
    """A task's config composed outside `@hydra.main` (sweep trials, tests), fully resolved.

    `output_dir` stands in for the run folder Hydra would have made; Hydra's own node is
    dropped once the `${hydra:...}` values it feeds are resolved.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose(
        config_name, [f"paths.output_dir={output_dir}", *overrides], return_hydra_config=True
    )
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.tracking.experiment = cfg.hydra.runtime.choices.experiment
    OmegaConf.resolve(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg
