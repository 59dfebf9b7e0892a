"""Every recipe and every option of every group composes, instantiates and is typed."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from labrun.config import targets as schema
from labrun.config.compose import config_dir, recipes_dir
from labrun.data import ImageDataModule, TextClassificationData
from labrun.errors import ConfigError
from labrun.models import GAN, ImageClassifier, KimCNN, TextClassifier
from tests.helpers import RECIPES

CONF = config_dir()


# an option tried inside a recipe of its kind: trec_lstm sets text-only keys (data.lowercase)
RECIPE_FOR = {
    ("model", "dcgan"): "mnist_dcgan",
    ("model", "image_classifier"): "mnist_features",
    ("data", "mnist"): "mnist_dcgan",
    ("data", "fashion_mnist"): "mnist_dcgan",
}


FAKE_SHAPES = {
    TextClassificationData: {"vocab_size": 50, "num_classes": 3},
    ImageDataModule: {"channels": 1, "image_size": 28, "num_classes": 10},
}


GROUPS = [
    "data",
    "model",
    "model/optimizer",
    "model/scheduler",
    "trainer",
    "logger",
    "callbacks",
    "tracking",
    "paths",
    "hydra",
    "debug",
    "experiment",
]


def options(group: str) -> list[str]:
    """A group's options: its files, less the `_`-prefixed parts other options include."""
    folder = recipes_dir() if group == "experiment" else CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_"))


def test_recipes_are_the_promised_ones() -> None:
    assert {
        "trec_lstm",
        "sst2_lstm",
        "agnews_lstm",
        "sms_spam_lstm",
        "mnist_dcgan",
        "fashion_mnist_dcgan",
        "mnist_features",
    } <= set(RECIPES)


def assert_optimizers_follow_the_config(model: L.LightningModule, node) -> None:
    """The optimizers a model builds are the config's classes with the config's rates."""
    made = model.configure_optimizers()
    if isinstance(made, dict):
        made = made["optimizer"]
    optimizers = made if isinstance(made, list) else [made]
    wanted = [node.g_optimizer, node.d_optimizer] if "g_optimizer" in node else [node.optimizer]
    assert [type(o).__name__ for o in optimizers] == [w._target_.rsplit(".", 1)[1] for w in wanted]
    for optimizer, w in zip(optimizers, wanted, strict=True):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(w.lr)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_instantiates(recipe: str, make_cfg) -> None:
    cfg = make_cfg(f"experiment={recipe}")
    schema.check_targets(cfg)
    assert cfg.tracking.experiment == recipe
    dm = instantiate(cfg.data)
    assert isinstance(dm, (TextClassificationData, ImageDataModule))
    shape = FAKE_SHAPES[type(dm)]
    model = instantiate(cfg.model, **shape)
    assert isinstance(model, (TextClassifier, KimCNN, ImageClassifier, GAN))
    assert_optimizers_follow_the_config(model, cfg.model)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes(group: str, option: str, make_cfg) -> None:
    recipe = RECIPE_FOR.get((group, option), "trec_lstm")
    cfg = make_cfg(f"experiment={recipe}", f"{group}={option}")
    gpus_asked = group == "trainer" and cfg.trainer.get("accelerator") in ("gpu", "cuda")
    if gpus_asked and torch.cuda.device_count() < int(cfg.trainer.get("devices") or 1):
        with pytest.raises(ConfigError, match=r"needs as many GPUs as trainer\.devices asks for"):
            schema.check_targets(cfg)  # refused before anything runs on a machine without them
        return
    schema.check_targets(cfg)
    if group == "model/optimizer":
        target = cfg.model.optimizer._target_
        assert target.startswith("torch.optim.")
        model = instantiate(cfg.model, vocab_size=20, num_classes=2)
        assert type(model.configure_optimizers()).__name__ == target.rsplit(".", 1)[1]
    if group == "model/scheduler" and option != "none":
        model = instantiate(cfg.model, vocab_size=20, num_classes=2)
        assert "lr_scheduler" in model.configure_optimizers()
    if group == "data":
        assert isinstance(instantiate(cfg.data), (TextClassificationData, ImageDataModule))
    if group == "model":
        text = option in ("lstm_classifier", "kim_cnn")
        dm_type = TextClassificationData if text else ImageDataModule
        assert_optimizers_follow_the_config(
            instantiate(cfg.model, **FAKE_SHAPES[dm_type]), cfg.model
        )
    if group == "trainer" and option == "cpu":
        assert isinstance(instantiate(cfg.trainer), L.Trainer)
    if group == "callbacks":
        nodes = {k: c for k, c in cfg.callbacks.items() if c is not None}
        built = {k: instantiate(c) for k, c in nodes.items()}
        for key, callback in built.items():
            assert type(callback).__name__ == nodes[key]._target_.rsplit(".", 1)[1], key
            if "monitor" in nodes[key]:
                assert callback.monitor == nodes[key].monitor, key
    if group == "debug" and option == "fdr":
        assert cfg.trainer.fast_dev_run is True


def test_all_groups_exist() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} has no options"


def test_misspelled_override_names_the_key(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.hiden_size'"):
        make_cfg("model.hiden_size=3")


def test_misspelled_key_in_a_config_is_caught_against_the_class(make_cfg) -> None:
    cfg = make_cfg("+model.hiden_size=3")
    with pytest.raises(
        ConfigError, match=r"unknown key 'model.hiden_size'.*did you mean 'model.hidden_size'"
    ):
        schema.check_targets(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden_size=abc", r"'model.hidden_size' must be int, got 'abc'"),
        ("model.dropout=high", r"'model.dropout' must be float"),
        ("model.pooling=median", r"'model.pooling' must be one of 'last', 'mean', 'max'"),
        ("data.batch_size=1.5", r"'data.batch_size' must be int"),
        ("trainer.max_epochs=many", r"'trainer.max_epochs' must be"),
        ("model.bidirectional=3", r"'model.bidirectional' must be bool"),
    ],
)
def test_wrong_type_names_the_key(override: str, message: str, make_cfg) -> None:
    cfg = make_cfg(override)
    with pytest.raises(ConfigError, match=message):
        schema.check_targets(cfg)


@pytest.mark.parametrize("override", ["seed=abc", "seed=null", "threads=two"])
def test_root_keys_are_typed_at_compose_time(override: str, make_cfg) -> None:
    with pytest.raises(ConfigError) as info:
        make_cfg(override)
    assert f"'{override.split('=')[0]}'" in str(info.value)


@pytest.mark.parametrize(
    ("body", "key"),
    [("sed: 1", "sed"), ("seed: one", "seed"), ("tracking:\n  urii: x", "tracking.urii")],
)
def test_a_recipe_with_a_typo_fails_to_compose(
    body: str, key: str, make_cfg, tmp_path: Path
) -> None:
    """A user's own recipe is checked against the root schema while Hydra composes it."""
    (tmp_path / "extra" / "experiment").mkdir(parents=True)
    (tmp_path / "extra" / "experiment" / "typo.yaml").write_text(f"# @package _global_\n{body}\n")
    with pytest.raises(ConfigError) as info:
        make_cfg(f"hydra.searchpath=[file://{tmp_path}/extra]", "experiment=typo")
    assert key in str(info.value)


def test_unknown_target_is_a_config_error(make_cfg) -> None:
    cfg = make_cfg("model._target_=labrun.models.NoSuchModel")
    with pytest.raises(ConfigError, match=r"cannot import 'labrun\.models\.NoSuchModel'"):
        schema.check_targets(cfg)


def test_configs_ship_with_the_package() -> None:
    """The wheel maps conf/ to labrun/conf and the recipes to its `experiment` group."""
    from hydra.core.config_store import ConfigStore

    assert (CONF / "train.yaml").is_file()
    registered = {name.removesuffix(".yaml") for name in ConfigStore.instance().list("experiment")}
    assert registered == set(RECIPES)


def test_an_edited_recipe_is_seen_by_the_next_compose(tmp_path: Path) -> None:
    """Recipes are parsed once per change, not once per compose, and an edit is picked up."""
    import os

    from hydra.core.config_store import ConfigStore

    from labrun.config import schema

    recipe = tmp_path / "probe_recipe.yaml"
    recipe.write_text("# @package _global_\nseed: 1\n")
    store = ConfigStore.instance()
    try:
        schema.register_recipes(tmp_path)
        assert store.load("experiment/probe_recipe.yaml").node.seed == 1
        recipe.write_text("# @package _global_\nseed: 2\n")
        stamp = recipe.stat().st_mtime_ns + 1_000_000_000  # a later mtime, however coarse
        os.utime(recipe, ns=(stamp, stamp))
        schema.register_recipes(tmp_path)
        assert store.load("experiment/probe_recipe.yaml").node.seed == 2
    finally:
        store.repo["experiment"].pop("probe_recipe.yaml", None)
        schema._STORED.pop(recipe, None)


def test_a_big_grid_is_checked_once_per_swept_value() -> None:
    """Up to 32 jobs every combination is composed; beyond, each value once (others at their
    first value), so a 40 x 2 grid costs 42 compositions, not 80."""
    from labrun.config.compose import sweep_jobs

    small = sweep_jobs(["seed=1,2,3", "model.hidden_size=8,16", "trainer.max_epochs=1"])
    assert len(small) == 6 and ["seed=3", "model.hidden_size=16", "trainer.max_epochs=1"] in [
        sorted(j, key=lambda o: ["seed", "model", "trainer"].index(o.split(".")[0].split("=")[0]))
        for j in small
    ]
    seeds = ",".join(str(i) for i in range(40))
    big = sweep_jobs([f"seed={seeds}", "model.hidden_size=8,16"])
    assert len(big) == 42
    assert ["seed=0", "model.hidden_size=16"] in big and ["seed=39", "model.hidden_size=8"] in big
