"""The contract a datamodule and a model meet to run under labrun, labrun's own and yours.

Structural (`typing.Protocol`): nothing to inherit, nothing to register. The train and eval
tasks check these with `isinstance` before training, so a missing piece is one line naming it
instead of a traceback after the first epoch. The README's "Your own code" section shows a
complete small example.

What flows between them, in order:

1. `data = build(cfg.data)`; `data.prepare_data()`; `data.setup("fit")`.
2. `model = build(cfg.model, **data.model_kwargs())`: the data tells the model its shape
   (`vocab_size`/`num_classes` for text, `channels`/`image_size`/`num_classes` for images).
3. `model.prepare(data, run_dir)` when the model has it (`Prepares`): one-off set-up that
   needs the data, such as the GAN's feature space; its returned numbers are logged.
4. Lightning fits and tests; the model logs the metric its callbacks monitor (`val/acc` by
   default, `val/fid` for the GAN: the `objective.metric` of the recipe), and may say so in
   advance (`DeclaresMetrics`).
5. After testing: `model.test_results` (`HasTestResults`) becomes plots, and
   `model.export(data)` (`Exports`) becomes the run's loadable `model/`.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict, runtime_checkable

import torch


@runtime_checkable
class DataModule(Protocol):
    """Required of every `data._target_`, beside LightningDataModule's own hooks."""

    fingerprint: dict[str, str]  # sha256 of every file read, keyed by its path under data_dir
    stats: dict[str, Any]  # counts logged as `data.*` metrics (rows, drops, vocabulary)
    class_names: list[str]  # one display name per class, in label order

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the model takes from the data."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What the data learned (a vocabulary); kept in every checkpoint."""
        ...


@runtime_checkable
class NamesSplitFiles(Protocol):
    """A datamodule that says which of its files each split was read from (the run's MLflow
    datasets); without it, every split names all the files in `fingerprint`."""

    def split_files(self) -> dict[str, list[str]]: ...


@runtime_checkable
class ResumableData(Protocol):
    """A datamodule whose training order can restart part-way (exact `labrun resume`)."""

    def resume_at(self, epoch: int, batch: int) -> None: ...


@runtime_checkable
class Prepares(Protocol):
    """A model with set-up that needs the data before training (the GAN's feature space)."""

    def prepare(self, datamodule: Any, run_dir: str) -> dict[str, float]: ...


@runtime_checkable
class Exports(Protocol):
    """A model that hands MLflow the module users load back (`runs:/<id>/model`)."""

    def export(self, datamodule: Any) -> torch.nn.Module: ...


class TestResults(TypedDict, total=False):
    """What a model may leave in `test_results` after testing; each key becomes an artifact."""

    confusion: torch.Tensor  # [C, C] counts -> plots/confusion_matrix.png
    roc: tuple[list[torch.Tensor], list[torch.Tensor]]  # per-class fpr, tpr -> plots/roc.png
    samples: torch.Tensor  # [N, C, H, W] in [0, 1] -> plots/samples_final.png
    coverage: dict[str, Any]  # kl, classes_covered, generated, real -> metrics/coverage.json


@runtime_checkable
class HasTestResults(Protocol):
    test_results: TestResults


@runtime_checkable
class DeclaresMetrics(Protocol):
    """A model class that names what it logs in validation, so the preflight can refuse a
    monitored key it never logs (a typo in objective.metric) before anything runs. Without it
    the same check waits for the sanity check, after the data is read."""

    validation_metrics: tuple[str, ...]


def missing(obj: Any, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks, by name."""
    import typing

    members = getattr(protocol, "__protocol_attrs__", None) or typing._get_protocol_attrs(protocol)  # type: ignore[attr-defined]
    return sorted(m for m in members if not hasattr(obj, m))


def require(obj: Any, protocol: type, where: str) -> None:
    """One line naming what `obj` (built from config node `where`) lacks of `protocol`."""
    from labrun.errors import ConfigError

    if lacking := missing(obj, protocol):
        raise ConfigError(
            f"'{where}._target_' builds {type(obj).__qualname__}, which lacks "
            f"{', '.join(lacking)} of labrun's {protocol.__name__} contract (labrun.contracts)"
        )
