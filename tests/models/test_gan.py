"""The DCGAN on the real MNIST files: train, measure, record, reload, and fail clearly."""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import Tensor
from torch.utils.data import DataLoader

from labrun.config.targets import check_targets
from labrun.data import ImageDataModule
from labrun.data.images import read_idx
from labrun.errors import ConfigError, DataError
from labrun.job.build import build
from labrun.job.train import train
from labrun.metrics import confident_by_class, confident_share, load_or_train, mode_coverage
from labrun.models import GAN
from labrun.models.diff_augment import diff_augment
from labrun.models.gan import BN_BATCH
from labrun.models.gan_losses import discriminator_loss, generator_loss
from tests.helpers import DATA_DIR, artifact_paths, bare_trainer, labrun_env, run_labrun

TINY_GAN = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=6",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=4",
    "~callbacks.progress_bar",
    "model.features.max_epochs=1",
    "model.features.train_rows=10000",  # a quick feature space: ~18 s, not 100, to train
    "model.features.n_floor=2000",
    "model.recompute_bn=4",  # the recipe's 50 batches cost ~2.3 s a call, 4-5 calls a run
]


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature classifier per session: every GAN test after the first loads it."""
    return tmp_path_factory.mktemp("feature-cache")


def gan_args(cache: Path) -> list[str]:
    return ["experiment=mnist_dcgan", *TINY_GAN, f"+model.features.cache_dir={cache}"]


class GradNorms(L.Callback):
    """Records each optimizer's total gradient norm just before it steps."""

    def __init__(self) -> None:
        self.norms: dict[int, list[float]] = {0: [], 1: []}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        index = trainer.optimizers.index(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms[index].append(torch.norm(torch.stack([p.grad.norm() for p in params])).item())


def test_mnist_dcgan_trains_measures_and_records(
    make_cfg, store: str, feature_cache: Path, tmp_path: Path
) -> None:
    metrics = train(make_cfg(*gan_args(feature_cache)))
    client = MlflowClient(store)
    run = client.get_run(metrics["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for name in [
        "test/fid",
        "test/kid",
        "test/coverage_kl",
        "test/classes_covered",
        "test/fid_floor",
        "val/fid",
        "train/g_loss_epoch",
        "train/d_loss_epoch",
        "features/test_acc",
        "features/floor_fid",
    ]:
        assert name in m, name
    assert m["test/fid"] > m["features/floor_fid"] > 0  # one short epoch is far from real
    assert {k for k in m if k.startswith("val/")} == set(GAN.validation_metrics)
    assert m["test/n_samples"] == 4 * 128
    coverage = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "metrics/coverage.json", str(tmp_path))
        ).read_text()
    )
    real, gen = torch.tensor(coverage["real"]), torch.tensor(coverage["generated"])
    assert real.sum().item() == pytest.approx(1.0) and gen.sum().item() == pytest.approx(1.0)
    assert m["test/classes_covered"] == float((gen >= 0.25 * real).sum().item())
    kl = (real * ((real + 1e-6) / (gen + 1e-6)).log()).sum().item()
    assert m["test/coverage_kl"] == pytest.approx(kl, rel=1e-5)
    # the share of confidently classified samples, and per class, weighted by the histogram
    shares = [0.0 if c is None else c for c in coverage["confident_by_class"]]
    weighted = sum(g * c for g, c in zip(gen.tolist(), shares, strict=True))
    assert m["test/confident"] == pytest.approx(weighted)
    assert 0 <= m["test/confident"] < m["test/confident_real"] <= 1  # 6 steps: far from real
    assert [c is None for c in coverage["confident_by_class"]] == (gen == 0).tolist()
    assert m["features/test_acc"] > 0.9  # even one epoch of LeNet separates MNIST digits
    trajectory = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "trajectory/fingerprint.json", str(tmp_path))
        ).read_text()
    )  # manual optimisation: no loss handed back; one gradient norm over both optimizers
    assert trajectory["steps"] == 6 and trajectory["loss"] == [None] * 6
    assert all(isinstance(v, float) and v > 0 for v in trajectory["grad_norm"])
    assert len(set(trajectory["batch"])) == 6  # six different batches
    have = artifact_paths(client, run.info.run_id)
    for path in [
        "samples/epoch_000.png",
        "plots/samples_final.png",
        "plots/coverage.png",
        "metrics/coverage.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config/config.yaml",
        "provenance/data_fingerprint.json",
    ]:
        assert path in have, path

    mlflow.set_tracking_uri(store)
    (logged,) = client.search_logged_models([run.info.experiment_id])  # the run's model
    assert logged.source_run_id == run.info.run_id
    signature = mlflow.models.get_model_info(f"models:/{logged.model_id}").signature
    assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 100)  # latent in
    sampler = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    images = sampler.sample(6, seed=3)
    assert images.shape == (6, 1, 28, 28)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert torch.equal(images, sampler.sample(6, seed=3))


def test_eval_of_a_gan_run_reproduces_its_scores(
    make_cfg, store: str, feature_cache: Path, tmp_path: Path
) -> None:
    metrics = train(make_cfg(*gan_args(feature_cache)))
    env = labrun_env(tmp_path, store)
    proc = run_labrun(
        [
            "eval",
            f"run_id={metrics['run_id']}",
            "+trainer.limit_test_batches=4",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (evaluation,) = client.search_runs(
        [client.get_run(metrics["run_id"]).info.experiment_id], "tags.`labrun.task` = 'eval'"
    )
    assert evaluation.data.metrics["test/fid"] == pytest.approx(metrics["test/fid"], rel=1e-6)
    assert "plots/samples_final.png" in artifact_paths(client, evaluation.info.run_id)


def test_same_config_same_fid(make_cfg, feature_cache: Path) -> None:
    """Identical FID twice, whether the feature net was just trained or came from the cache."""
    fresh = feature_cache / "fresh"
    a = train(make_cfg(*gan_args(fresh), "tracking.log_model=false"))  # trains the feature net
    b = train(make_cfg(*gan_args(fresh), "tracking.log_model=false"))  # loads it from the cache
    for name in ["test/fid", "test/kid", "test/coverage_kl", "val/fid", "train/g_loss_epoch"]:
        assert a[name] == b[name], name
    c = train(make_cfg(*gan_args(fresh), "tracking.log_model=false", "seed=7"))
    assert c["test/fid"] != a["test/fid"]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` where no write can succeed: a read-only bind mount as root (root ignores file
    modes), the folder with its write bits cleared otherwise."""
    if os.geteuid() != 0:
        for p in [*folder.rglob("*"), folder]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(0o755)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_fashion_mnist_reads_gz_from_a_read_only_folder(tmp_path: Path) -> None:
    src = tmp_path / "data"
    shutil.copytree(DATA_DIR / "FashionMNIST", src / "FashionMNIST")
    with read_only(src) as ro:
        with pytest.raises(OSError):  # the folder really refuses writes
            (ro / "FashionMNIST" / "probe").write_text("x")
        dm = ImageDataModule(str(ro), "fashion_mnist", download=False)
        dm.prepare_data()
        dm.setup()
        assert dm.stats == {"train_rows": 55000, "val_rows": 5000, "test_rows": 10000}
        assert torch.bincount(dm.tensors["test"][1]).tolist() == [1000] * 10
        x, _ = dm.normalized("val")
        assert x.min() == -1.0 and x.max() == 1.0
        assert all(name.endswith(".gz") for name in dm.fingerprint)


def test_mnist_download_checks_md5(tmp_path: Path, monkeypatch) -> None:
    """torchvision's download helper against a real HTTP server on loopback."""
    import torchvision.datasets as tvd

    served = tmp_path / "served"
    served.mkdir()
    for gz in (DATA_DIR / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(gz, served / gz.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
        dm = ImageDataModule(str(tmp_path / "data"), "mnist")
        dm.prepare_data()
        dm.setup()
        assert dm.stats["test_rows"] == 10000
        downloaded = sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir())
        assert downloaded == sorted(gz.name for gz in served.iterdir())
        (served / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the real file")
        (tmp_path / "data2").mkdir()
        with pytest.raises(DataError, match="download failed"):
            ImageDataModule(str(tmp_path / "data2"), "mnist").prepare_data()
    finally:
        server.shutdown()


def test_corrupt_idx_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(DataError, match="bytes of data, expected"):
        read_idx(bad)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+model.generator.image_size=32",
            "model.generator makes 1x32x32 images but the data has 1x28x28",
        ),
        (
            "+model.generator.channels=3",
            "model.generator makes 3x28x28 images but the data has 1x28x28",
        ),
        ("+model.discriminator.image_size=32", "model.discriminator cannot take 1x28x28 images"),
    ],
)
def test_nets_that_do_not_fit_the_data_fail_before_training(
    override: str, message: str, make_cfg
) -> None:
    cfg = make_cfg("experiment=mnist_dcgan", override)
    with pytest.raises(ConfigError, match=message):
        build(cfg.model, channels=1, image_size=28, num_classes=10)


def test_inception_without_local_weights_is_a_clear_error(tmp_path: Path) -> None:
    from labrun.metrics.features import InceptionFeatures

    with pytest.raises(ConfigError, match=r"Inception weights not found at .*features\.kind=lenet"):
        InceptionFeatures(str(tmp_path / "pt_inception-2015-12-05.pth"))


def test_unbuildable_image_size_is_explained(make_cfg) -> None:
    cfg = make_cfg("experiment=mnist_dcgan")
    with pytest.raises(ConfigError, match="image_size 27 cannot be built"):
        build(cfg.model, channels=1, image_size=27, num_classes=10)


def test_gan_cli_bad_input(tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store, LABRUN_DATA_DIR=str(tmp_path / "empty"))
    proc = run_labrun(["train", "experiment=mnist_dcgan", "data.download=false"], env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("labrun: error: missing data file")
    # nets that do not fit the data: test_nets_that_do_not_fit_the_data_fail_before_training


def test_feature_space_is_cached_by_fingerprint(feature_cache: Path) -> None:
    dm = ImageDataModule(str(DATA_DIR), "mnist")
    dm.setup()
    quick = {"max_epochs": 1, "n_floor": 2000, "train_rows": 10000}  # TINY_GAN's space
    first = load_or_train(dm, feature_cache, **quick)
    files = sorted((feature_cache / "features").glob("mnist-*.pt"))
    stamp = [f.stat().st_mtime_ns for f in files]
    again = load_or_train(dm, feature_cache, **quick)
    assert again.key == first.key and again.floor_fid == first.floor_fid
    assert [f.stat().st_mtime_ns for f in files] == stamp  # loaded, not retrained


def test_mode_coverage_sees_a_dropped_class() -> None:
    real = torch.arange(10).repeat(100)
    even = mode_coverage(torch.arange(10).repeat(100), real, 10)
    dropped = mode_coverage(torch.arange(9).repeat(111), real, 10)
    assert even["kl"] == pytest.approx(0.0, abs=1e-9) and even["classes_covered"] == 10
    assert dropped["kl"] > 1.0 and dropped["classes_covered"] == 9


def test_confident_share_counts_real_digits_not_blends_of_two(feature_cache: Path) -> None:
    """What `test/confident` claims: a real digit is recognisable, the mean of two digits of
    different classes (a 3 over a 7) is not, and the per-class shares name which is which."""
    dm = ImageDataModule(str(DATA_DIR), "mnist")
    dm.setup()
    space = load_or_train(dm, feature_cache, max_epochs=1, n_floor=2000, train_rows=10000)
    images, labels = next(iter(DataLoader(dm.test_dataloader().dataset, batch_size=1000)))
    other = torch.roll(torch.arange(len(labels)), 1)
    differ = labels != labels[other]
    blends = (images + images[other]) / 2
    with torch.no_grad():
        real_p, blend_p = space.net(images).softmax(-1), space.net(blends[differ]).softmax(-1)
    real, blend = confident_share(real_p.amax(-1)), confident_share(blend_p.amax(-1))
    assert real > 0.5 and blend < real / 3, (real, blend)  # the quick space: real ~0.8
    # half the images blended: those classes' shares fall, the others' do not
    blend_low = ((labels < 5) & differ)[:, None, None, None]
    with torch.no_grad():
        p = space.net(torch.where(blend_low, blends, images)).softmax(-1)
    by_class = confident_by_class(p.amax(-1), labels, 10)
    assert max(by_class[:5]) < min(by_class[5:]), by_class


def fit_on_mnist(
    model: GAN, max_steps: int, callback: L.Callback, extra: list[L.Callback] | None = None
) -> None:
    """A bare Trainer over real MNIST batches of 32: no validation, logger or checkpoints."""
    dm = ImageDataModule(str(DATA_DIR), "mnist", batch_size=32)
    dm.setup()
    trainer = bare_trainer(max_steps=max_steps, callbacks=[callback, *(extra or [])])
    trainer.fit(model, train_dataloaders=dm.train_dataloader())


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_reaches_both_nets(clip: float | None, make_cfg) -> None:
    cfg = make_cfg(
        "experiment=mnist_dcgan",
        f"model.gradient_clip_val={clip or 'null'}",
        "model.loss=bce",  # the smoothing needs BCE; the recipe's hinge refuses it
        "model.label_smoothing=0.1",
    )
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    norms = GradNorms()
    fit_on_mnist(model, 3, norms)
    g_norms, d_norms = norms.norms[0], norms.norms[1]
    assert len(g_norms) == len(d_norms) >= 1
    if clip:
        assert max(g_norms + d_norms) <= clip * 1.0001
    else:
        assert min(g_norms) > 0.01 and min(d_norms) > 0.01  # so the clipped case means something


def test_augmentation_changes_train_images_reproducibly() -> None:
    from torchvision.transforms import v2

    def first_batch(augment):
        torch.manual_seed(0)
        dm = ImageDataModule(str(DATA_DIR), "mnist", batch_size=16, augment=augment)
        dm.setup()
        return next(iter(dm.train_dataloader()))[0]

    plain = first_batch(None)
    shifted = first_batch([v2.RandomAffine(degrees=0, translate=(0.2, 0.2))])
    assert not torch.equal(plain, shifted)
    assert torch.equal(shifted, first_batch([v2.RandomAffine(degrees=0, translate=(0.2, 0.2))]))
    assert shifted.min() >= -1.0 and shifted.max() <= 1.0


class GeneratorSnapshots(L.Callback):
    """The generator's weights after each training step (both nets have stepped then)."""

    def __init__(self) -> None:
        self.after: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.after.append([p.detach().clone() for p in pl_module.generator.parameters()])


def test_ema_weights_trail_the_generator_and_are_what_samples(make_cfg) -> None:
    """`model.ema_decay`: after every generator step the average moves (1 - decay) of the way
    to the new weights; the average, not the raw generator, draws the grids and is exported.
    Unset, there is no average and the checkpoint holds what it always held."""
    cfg = make_cfg(
        "experiment=mnist_dcgan",
        "model.ema_decay=0.5",
        "model.ema_warmup=false",
        "model.recompute_bn=null",
    )
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    expected = [p.detach().clone() for p in model.generator_ema.parameters()]
    snapshots = GeneratorSnapshots()
    fit_on_mnist(model, 6, snapshots)  # two optimizer steps a batch: 3 batches
    assert len(snapshots.after) == 3
    for weights in snapshots.after:
        expected = [0.5 * e + 0.5 * w for e, w in zip(expected, weights, strict=True)]
    averaged = list(model.generator_ema.parameters())
    for got, want in zip(averaged, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    raw = list(model.generator.parameters())
    assert any(not torch.equal(a, r) for a, r in zip(averaged, raw, strict=True))
    assert model.sampler is model.generator_ema
    with torch.no_grad():
        by_average = (model.generator_ema.eval()(model.fixed_noise) + 1) / 2
        by_raw = (model.generator.eval()(model.fixed_noise) + 1) / 2
    assert torch.equal(model.sample_grid(), by_average) and not torch.equal(by_average, by_raw)
    exported = model.export(None).generator.state_dict()
    for name, value in model.generator_ema.state_dict().items():
        assert torch.equal(exported[name], value.cpu()), name

    plain = build(
        make_cfg("experiment=mnist_dcgan", "model.ema_decay=null", "model.ema_warmup=false").model,
        channels=1,
        image_size=28,
        num_classes=10,
    )
    assert plain.generator_ema is None and plain.sampler is plain.generator
    assert not any(k.startswith("generator_ema") for k in plain.state_dict())


class GridEachBatch(L.Callback):
    """Draws the sample grid after every batch, as a validation or the grid callback would."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        pl_module.sample_grid()


def batchnorm_inputs(net: torch.nn.Module, batches: list[torch.Tensor]) -> list[list[Tensor]]:
    """Each BatchNorm's input for each batch, the net in train mode."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    seen: list[list[Tensor]] = [[] for _ in norms]
    hooks = [
        m.register_forward_pre_hook(lambda _, x, i=i: seen[i].append(x[0].detach()))
        for i, m in enumerate(norms)
    ]
    net.train()
    with torch.no_grad():
        for z in batches:
            net(z)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("ema", [True, False])
def test_recompute_bn_measures_the_samplers_own_statistics(ema: bool, make_cfg) -> None:
    """`model.recompute_bn`: before a grid, the sampler's BatchNorm statistics become the mean
    and unbiased variance of its own inputs over that many batches of fixed noise (the live
    generator's trailing ones otherwise), and drawing grids never changes training."""
    ema_args = ["model.ema_decay=0.5"] if ema else ["model.ema_decay=null"]

    def fit(batches: str) -> tuple[GAN, GeneratorSnapshots]:
        L.seed_everything(5)
        cfg = make_cfg("experiment=mnist_dcgan", *ema_args, "model.ema_warmup=false", batches)
        model = build(cfg.model, channels=1, image_size=28, num_classes=10)
        snapshots = GeneratorSnapshots()
        fit_on_mnist(model, 6, snapshots, extra=[GridEachBatch()])
        return model, snapshots

    running, running_steps = fit("model.recompute_bn=null")
    model, steps = fit("model.recompute_bn=3")
    for a, b in zip(running_steps.after, steps.after, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # training untouched

    grid = model.sample_grid()
    sampler = model.sampler
    assert sampler is (model.generator_ema if ema else model.generator)
    noise = [model._noise(BN_BATCH, 200_000 + i) for i in range(3)]
    inputs = batchnorm_inputs(copy.deepcopy(sampler), noise)
    norms = [m for m in sampler.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == len(inputs) == 2  # the projection's and the one upsampling's
    for norm, seen in zip(norms, inputs, strict=True):
        dims = [0, 2, 3] if seen[0].dim() == 4 else [0]
        mean = torch.stack([x.mean(dims) for x in seen]).mean(0)
        var = torch.stack([x.var(dims, unbiased=True) for x in seen]).mean(0)
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
        assert norm.momentum == 0.1  # put back: training's running statistics go on as before
    old = next(m for m in running.sampler.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(old.running_mean, norms[1].running_mean)
    with torch.no_grad():
        assert torch.equal(grid, (sampler.eval()(model.fixed_noise) + 1) / 2)
    assert not torch.equal(grid, running.sample_grid())
    exported = model.export(None).generator.state_dict()
    assert torch.equal(exported["project.1.running_mean"], norms[0].running_mean)
    model.load_state_dict(running.state_dict())  # the same weights, the trailing statistics
    assert torch.equal(model.sample_grid(), grid)  # measured again after a load


def test_ema_warmup_forgets_the_first_generators(make_cfg) -> None:
    """`model.ema_warmup`: update t uses decay min(ema_decay, (1 + t) / (10 + t)), so the
    first average is 90% the trained weights, not 0.1% as a plain 0.999 average would be;
    the update count is in the checkpoint, so a resumed run does not warm up again."""
    cfg = make_cfg("experiment=mnist_dcgan", "model.ema_decay=0.999", "model.ema_warmup=true")
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    expected = [p.detach().clone() for p in model.generator_ema.parameters()]
    snapshots = GeneratorSnapshots()
    fit_on_mnist(model, 6, snapshots)
    for t, weights in enumerate(snapshots.after):
        decay = min(0.999, (1 + t) / (10 + t))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    for got, want in zip(model.generator_ema.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert int(model.state_dict()["ema_updates"]) == 3
    with pytest.raises(ConfigError, match="ema_decay set"):
        check_targets(
            make_cfg("experiment=mnist_dcgan", "model.ema_decay=null", "model.ema_warmup=true")
        )


def test_hinge_loss_is_the_hinge_and_trains_differently(make_cfg) -> None:
    sure = discriminator_loss("hinge", torch.tensor([1.5, 2.0]), torch.tensor([-1.0, -3.0]))
    assert sure.item() == 0.0  # past the margins on both sides: nothing to learn
    unsure = discriminator_loss("hinge", torch.tensor([0.0]), torch.tensor([0.5]))
    assert unsure.item() == pytest.approx(1.0 + 1.5)
    assert generator_loss("hinge", torch.tensor([0.5, -1.5])).item() == pytest.approx(0.5)
    bce = discriminator_loss("bce", torch.tensor([0.0]), torch.tensor([0.0]))
    assert bce.item() == pytest.approx(2 * 0.6931, abs=1e-4)

    def generator_after(*overrides: str) -> list[torch.Tensor]:
        L.seed_everything(0)
        model = build(
            make_cfg("experiment=mnist_dcgan", *overrides).model,
            channels=1,
            image_size=28,
            num_classes=10,
        )
        snapshots = GeneratorSnapshots()
        fit_on_mnist(model, 4, snapshots)
        return snapshots.after[-1]

    plain = generator_after("model.loss=bce", "model.label_smoothing=0")
    hinge = generator_after("model.loss=hinge", "model.label_smoothing=0")
    assert any(not torch.equal(a, b) for a, b in zip(plain, hinge, strict=True))


def test_diff_augment_moves_pixels_and_passes_gradients() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 1, 28, 28, requires_grad=True)
    shifted = diff_augment(images, ("translation",))
    assert shifted.shape == images.shape and not torch.equal(shifted, images)
    # a translation moves pixels, it does not invent values: every one is an input pixel or 0
    inputs = set(images.detach().flatten().tolist()) | {0.0}
    assert set(shifted.detach().flatten().tolist()) <= inputs
    cut = diff_augment(torch.ones(8, 1, 28, 28), ("cutout",))
    zeroed = (cut == 0).flatten(1).sum(1)
    assert ((zeroed > 0) & (zeroed <= 14 * 14)).all()  # one square of half the side, clipped
    diff_augment(images, ("translation", "cutout")).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    torch.manual_seed(0)
    again = diff_augment(torch.rand(8, 1, 28, 28), ("translation",))
    assert torch.equal(again, shifted.detach())  # the global seed decides: runs repeat


def test_new_gan_options_repeat_bit_for_bit(make_cfg) -> None:
    """Hinge, DiffAugment and a warmed-up average together: two fits from one seed give the
    same generator and the same average, and the options make a different one than none."""
    options = (
        "model.loss=hinge",
        "model.label_smoothing=0",
        "model.d_augment=[translation,cutout]",
        "model.ema_decay=0.999",
        "model.ema_warmup=true",
    )

    def fit(*overrides: str) -> GAN:
        L.seed_everything(3)
        model = build(
            make_cfg("experiment=mnist_dcgan", *overrides).model,
            channels=1,
            image_size=28,
            num_classes=10,
        )
        fit_on_mnist(model, 6, GeneratorSnapshots())
        return model

    a, b, plain = fit(*options), fit(*options), fit("model.ema_warmup=false")
    ema_a, ema_b = a.generator_ema.state_dict(), b.generator_ema.state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert not torch.equal(a.sample_grid(), plain.sample_grid())
    assert torch.equal(a.sample_grid(), b.sample_grid())


class LearningRates(L.Callback):
    """Both optimizers' learning rates as each training batch used them."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        g, d = (opt.param_groups[0]["lr"] for opt in trainer.optimizers)
        self.seen.append((g, d))


def fit_eight_batches(model: GAN, callback: L.Callback) -> None:
    """Two epochs of four MNIST batches: batch b starts at b/8 of training."""
    dm = ImageDataModule(str(DATA_DIR), "mnist", batch_size=32)
    dm.setup()
    trainer = bare_trainer(max_epochs=2, limit_train_batches=4, callbacks=[callback])
    trainer.fit(model, train_dataloaders=dm.train_dataloader())


@pytest.mark.parametrize("start", [None, 0.5, 0.0])
def test_lr_decay_start_lowers_both_learning_rates_to_zero(start: float | None, make_cfg) -> None:
    """`model.lr_decay_start`: from that fraction of max_epochs on, both learning rates fall
    linearly towards 0 at the last batch; unset, they stay what the optimizers were given."""
    cfg = make_cfg(
        "experiment=mnist_dcgan", f"model.lr_decay_start={start}".replace("None", "null")
    )
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    lrs = LearningRates()
    fit_eight_batches(model, lrs)
    scales = {
        None: [1] * 8,
        0.5: [1, 1, 1, 1, 1, 0.75, 0.5, 0.25],
        0.0: [1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    }[start]
    g0, d0 = cfg.model.g_optimizer.lr, cfg.model.d_optimizer.lr
    assert [g for g, _ in lrs.seen] == pytest.approx([g0 * s for s in scales], rel=1e-9)
    assert [d for _, d in lrs.seen] == pytest.approx([d0 * s for s in scales], rel=1e-9)


def test_schedules_follow_max_steps_and_need_an_end(make_cfg) -> None:
    """Without max_epochs the schedule runs over max_steps (global steps: two per batch here,
    one per optimizer); a trainer with neither end cannot say where training is."""
    cfg = make_cfg("experiment=mnist_dcgan", "model.lr_decay_start=0.0")
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    lrs = LearningRates()
    fit_on_mnist(model, 8, lrs)  # max_steps=8: four batches
    g0 = cfg.model.g_optimizer.lr
    assert [g for g, _ in lrs.seen] == pytest.approx([g0, g0 * 0.75, g0 * 0.5, g0 * 0.25])
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    dm = ImageDataModule(str(DATA_DIR), "mnist", batch_size=32)
    dm.setup()
    endless = L.Trainer(max_epochs=-1, limit_train_batches=2, logger=False, barebones=True)
    with pytest.raises(ConfigError, match=r"lr_decay_start is scheduled over trainer\.max_epochs"):
        endless.fit(model, train_dataloaders=dm.train_dataloader())


def test_spectral_norm_bounds_each_discriminator_layer(make_cfg) -> None:
    """`model.discriminator.norm=spectral`: no BatchNorm in D, and after training steps each
    layer's weight has largest singular value ~1 while the weight Adam moves does not."""
    L.seed_everything(2)
    cfg = make_cfg("experiment=mnist_dcgan", "model.discriminator.norm=spectral")
    model = build(cfg.model, channels=1, image_size=28, num_classes=10)
    fit_on_mnist(model, 6, GeneratorSnapshots())
    d = model.discriminator
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        raw = torch.linalg.matrix_norm(layer.parametrizations.weight.original.flatten(1), ord=2)
        assert 0.9 < sigma < 1.1 and not 0.9 < raw < 1.1, (sigma, raw)

    plain = build(
        make_cfg("experiment=mnist_dcgan", "model.discriminator.norm=batch").model,
        channels=1,
        image_size=28,
        num_classes=10,
    )
    norms = [m for m in plain.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 and not hasattr(plain.discriminator.net[0], "parametrizations")


def test_g_top_k_counts_only_the_fakes_d_rates_most_real(make_cfg, monkeypatch) -> None:
    """`model.g_top_k`: G's loss is over the fakes D scores highest, the others get no
    gradient, and the share kept falls linearly from all to g_top_k; unset, all count."""
    logits = torch.tensor([[0.5], [-2.0], [1.5], [-0.5]], requires_grad=True)
    top = generator_loss("hinge", logits, keep=0.5)
    assert top.item() == pytest.approx(-(0.5 + 1.5) / 2)
    top.backward()
    assert logits.grad is not None and logits.grad.flatten().tolist() == [-0.5, 0.0, -0.5, 0.0]
    bce = generator_loss("bce", logits.detach(), keep=0.25)
    assert bce.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(-1.5)).item())

    import labrun.models.gan as gan_module

    def trained(top_k: str) -> tuple[list[float], list[torch.Tensor]]:
        kept: list[float] = []

        def spy(kind: str, fake: torch.Tensor, keep: float = 1.0) -> torch.Tensor:
            kept.append(keep)
            return generator_loss(kind, fake, keep)

        monkeypatch.setattr(gan_module, "generator_loss", spy)
        L.seed_everything(0)
        cfg = make_cfg("experiment=mnist_dcgan", f"model.g_top_k={top_k}")
        model = build(cfg.model, channels=1, image_size=28, num_classes=10)
        snapshots = GeneratorSnapshots()
        fit_eight_batches(model, snapshots)
        return kept, snapshots.after[-1]

    (kept, top_k), (kept_all, every) = trained("0.5"), trained("null")
    assert kept == pytest.approx([1 - 0.5 * b / 8 for b in range(8)])
    assert kept_all == [1.0] * 8
    assert any(not torch.equal(a, b) for a, b in zip(top_k, every, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(top_k, trained("0.5")[1], strict=True))
