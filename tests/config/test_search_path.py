"""A user's own config folders, found without Hydra flags, after labrun's own, with the same
one-line errors as labrun's configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrun.config.compose import compose, preflight
from labrun.config.search_path import config_dirs, trusted_targets
from labrun.errors import ConfigError
from tests.helpers import labrun_env, run_labrun

SMALL_LSTM = "defaults:\n  - lstm_classifier\n  - _self_\n\nnum_layers: 3\n"


def project(root: Path, pyproject: str = "", folder: str = "conf") -> Path:
    """A user's project: a pyproject.toml and a `model/small_lstm` option in `folder`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "mine"\n{pyproject}')
    (root / folder / "model").mkdir(parents=True)
    (root / folder / "model" / "small_lstm.yaml").write_text(SMALL_LSTM)
    return root


@pytest.fixture
def inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of a user in their own project (and no other hints)."""
    monkeypatch.delenv("LABRUN_CONFIG_PATH", raising=False)
    monkeypatch.delenv("LABRUN_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_projects_conf_folder_is_found(inside: Path) -> None:
    project(inside)
    assert config_dirs() == [inside / "conf"]
    assert compose("train", ["model=small_lstm"]).model.num_layers == 3


def test_a_sub_folder_of_the_project_finds_it_too(inside: Path, monkeypatch) -> None:
    project(inside)
    (inside / "notebooks").mkdir()
    monkeypatch.chdir(inside / "notebooks")
    assert compose("train", ["model=small_lstm"]).model.num_layers == 3


def test_pyproject_names_the_folders(inside: Path) -> None:
    project(inside, '[tool.labrun]\nconfig_dirs = ["configs"]\n', folder="configs")
    (inside / "conf" / "model").mkdir(parents=True)  # not searched: pyproject says where
    assert config_dirs() == [inside / "configs"]
    assert compose("train", ["model=small_lstm"]).model.num_layers == 3


def test_the_environment_adds_folders_first(inside: Path, tmp_path: Path, monkeypatch) -> None:
    elsewhere = project(tmp_path / "shared", folder="team_conf") / "team_conf"
    monkeypatch.setenv("LABRUN_CONFIG_PATH", str(elsewhere))
    assert config_dirs() == [elsewhere]
    assert compose("train", ["model=small_lstm"]).model.num_layers == 3


def test_labrun_options_win_a_name_clash(inside: Path) -> None:
    """The user's folders come after labrun's: `model=lstm_classifier` means labrun's."""
    project(inside)
    (inside / "conf" / "model" / "lstm_classifier.yaml").write_text("num_layers: 3\n")
    assert compose("train", ["model=lstm_classifier"]).model.num_layers == 1


def test_without_a_project_folder_nothing_is_added(inside: Path) -> None:
    assert config_dirs() == []
    with pytest.raises(ConfigError, match="Could not find 'model/small_lstm'"):
        compose("train", ["model=small_lstm"])


@pytest.mark.parametrize(
    ("pyproject", "message"),
    [
        (
            '[tool.labrun]\nconfig_dirs = ["nope"]\n',
            "names the config folder .*nope, which does not exist",
        ),
        ("[tool.labrun]\nconfig_dirs = 'conf'\n", r"config_dirs in .* must be a list of strings"),
        ("[tool.labrun\n", r"is not valid TOML"),
    ],
)
def test_a_bad_project_setting_is_one_line(inside: Path, pyproject: str, message: str) -> None:
    project(inside, pyproject)
    with pytest.raises(ConfigError, match=message) as caught:
        preflight("train", [])
    assert "\n" not in str(caught.value)


def test_a_typo_in_the_users_own_config_is_one_line(inside: Path) -> None:
    project(inside)
    (inside / "conf" / "model" / "typo.yaml").write_text(SMALL_LSTM + "hiden_size: 3\n")
    with pytest.raises(ConfigError, match="hiden_size") as caught:
        preflight("train", ["model=typo"])
    assert "\n" not in str(caught.value)


def test_the_project_trusts_its_own_packages(inside: Path, monkeypatch) -> None:
    project(inside, '[tool.labrun]\nallowed_targets = ["mylab"]\n')
    monkeypatch.setenv("LABRUN_ALLOWED_TARGETS", "teamlib, other")
    assert trusted_targets() == ["teamlib", "other", "mylab"]


def test_config_dir_and_hydra_searchpath_keep_the_one_line_preflight(tmp_path: Path) -> None:
    """The CLI with `--config-dir` (anywhere in the line) or `hydra.searchpath`: a typo in
    an override is labrun's one line and exit 2, not Hydra's multi-line error."""
    conf = project(tmp_path / "mine") / "conf"
    env = labrun_env(tmp_path)
    for args in (
        ["train", "model=small_lstm", "--config-dir", str(conf), "model.hiden_size=3"],
        ["train", f"hydra.searchpath=[file://{conf}]", "model=small_lstm", "model.hiden_size=3"],
    ):
        done = run_labrun(args, env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "labrun: error: unknown config key 'model.hiden_size'; check the spelling, or add "
            "a new key with '+model.hiden_size=VALUE'"
        ]
    missing = run_labrun(["train", "--config-dir", str(tmp_path / "nope")], env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "--config-dir" in missing.stderr and "no such folder" in missing.stderr
