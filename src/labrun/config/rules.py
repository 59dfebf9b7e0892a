"""Value rules, declared once beside what they constrain, checked before anything runs.

labrun's own classes say their rules in their signatures with `typing.Annotated` and the
`annotated_types` markers (`hidden_size: Annotated[int, Gt(0)]`, `dropout: Probability`), the
way pydantic and FastAPI read them; rules that tie keys together are a class's
`config_rules` (`Together`). Third-party classes (torch optimisers and schedulers, Lightning's
Trainer and callbacks) cannot carry our annotations, so their rules are a table by parameter
name below. `labrun.config.targets` checks all of them for every `_target_` node, in the
preflight of every path (single runs, each job of `-m`, sweeps, reruns, eval).
"""

from __future__ import annotations

import codecs
import contextvars
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval, Le, Lt

Positive = Annotated[int, Gt(0)]
NonNegative = Annotated[int, Ge(0)]
Probability = Annotated[float, Interval(ge=0, lt=1)]  # dropout: 1.0 would drop everything
Fraction = Annotated[float, Interval(ge=0, lt=1)]  # a share of a split
Decay = Annotated[float, Interval(ge=0, lt=1)]  # a moving average's weight on its past


@dataclass(frozen=True)
class Codec:
    """A text encoding Python knows (`codecs.lookup`)."""

    def check(self, value: Any) -> str | None:
        try:
            codecs.lookup(str(value))
        except LookupError:
            return "a text encoding Python knows (utf-8, latin-1, cp1252, ...)"
        return None


@dataclass(frozen=True)
class PositiveInts:
    """A non-empty list of whole numbers > 0 (a CNN's filter widths)."""

    def check(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or not value:
            return "a non-empty list of whole numbers > 0"
        if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
            return "a non-empty list of whole numbers > 0"
        return None


@dataclass(frozen=True)
class Betas:
    """Adam's two moment decays: two numbers, each in [0, 1). Torch checks them only when it
    builds the optimizer, after the run has started (and [0.9] is an IndexError there)."""

    def check(self, value: Any) -> str | None:
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        numbers = pair and not any(isinstance(v, bool) for v in value)
        if numbers and all(isinstance(v, (int, float)) and 0 <= v < 1 for v in value):
            return None
        return "two numbers, each in [0, 1), e.g. [0.9, 0.999]"


@dataclass(frozen=True)
class Distinct:
    """A list without repeats, compared as strings."""

    def check(self, value: Any) -> str | None:
        if isinstance(value, (list, tuple)) and len({str(v) for v in value}) != len(value):
            return "a list without repeats"
        return None


@dataclass(frozen=True)
class Together:
    """A rule over several keys of one node: `holds(**values)` must be true."""

    keys: tuple[str, ...]
    holds: Callable[..., bool]
    rule: str  # as the error states it: "val_fraction + test_fraction < 1"


def bound_text(marker: Any) -> str | None:
    """The rule an `annotated_types` bound states, or None for a marker that is not one."""
    if isinstance(marker, Interval):
        low = f"[{marker.ge}" if marker.ge is not None else f"({marker.gt}"
        high = f"{marker.le}]" if marker.le is not None else f"{marker.lt})"
        return f"in {low}, {high}"
    for kind, op in ((Gt, ">"), (Ge, ">="), (Lt, "<"), (Le, "<=")):
        if isinstance(marker, kind):
            return f"{op} {_limit(marker)}"
    return None


def _limit(bound: Any) -> Any:
    """The number of one `annotated_types` bound (Gt(0).gt, Ge(1).ge, ...)."""
    return getattr(bound, type(bound).__name__.lower())


def violates(value: Any, marker: Any) -> str | None:
    """The rule `value` breaks, stated for the error, or None."""
    if hasattr(marker, "check"):
        return marker.check(value)
    if value is None:
        return None  # a null the signature allows; the type check refuses one it does not
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "a number"  # a bound on a parameter typed loosely (torch's `float | Tensor`)
    if isinstance(value, float) and math.isnan(value):
        return "a number (not nan)"
    bounds = [marker] if not isinstance(marker, Interval) else []
    if isinstance(marker, Interval):
        bounds = [
            kind(bound)
            for kind, bound in ((Gt, marker.gt), (Ge, marker.ge), (Lt, marker.lt), (Le, marker.le))
            if bound is not None
        ]
    import operator

    ops = {Gt: operator.gt, Ge: operator.ge, Lt: operator.lt, Le: operator.le}
    for b in bounds:
        limit = _limit(b)
        if type(b) in ops and not ops[type(b)](value, limit):
            return bound_text(marker)
    return None


# Rules for third-party classes, by parameter name: torch.optim.*, torch.optim.lr_scheduler.*,
# lightning's Trainer and callbacks. Applied only to targets outside labrun.
BY_PARAMETER: dict[str, Any] = {
    "lr": Gt(0),
    "weight_decay": Ge(0),
    "momentum": Interval(ge=0, lt=1),
    "betas": Betas(),
    "dampening": Interval(ge=0, le=1),
    "eps": Gt(0),
    "rho": Interval(ge=0, le=1),
    "max_epochs": Ge(-1),
    "min_epochs": Ge(0),
    "gradient_clip_val": Ge(0),
    "accumulate_grad_batches": Ge(1),
    "log_every_n_steps": Ge(1),
    "num_sanity_val_steps": Ge(-1),
    "patience": Ge(0),
    "min_delta": Ge(0),
    "save_top_k": Ge(-1),
    "factor": Interval(gt=0, lt=1),
    "step_size": Gt(0),
    "gamma": Gt(0),
    "T_max": Gt(0),
    "eta_min": Ge(0),
}


@dataclass(frozen=True)
class OneOf:
    """One of a few strings (a key the root schema types only as `str`)."""

    choices: tuple[str, ...]

    def check(self, value: Any) -> str | None:
        return None if value in self.choices else "one of " + ", ".join(map(repr, self.choices))


@dataclass(frozen=True)
class Matches:
    """A string (or null) matching a pattern: a name another system will refuse otherwise."""

    pattern: str
    says: str

    def check(self, value: Any) -> str | None:
        return None if value is None or re.fullmatch(self.pattern, str(value)) else self.says


DIRECTIONS = {"maximize": "max", "minimize": "min"}  # objective.direction -> callbacks' mode

# Root keys of every task (labrun.config.schema), by dotted key.
ROOT: dict[str, Any] = {
    "seed": Interval(ge=0, lt=2**32),  # numpy refuses seeds outside [0, 2**32)
    "threads": Ge(1),
    "objective.direction": OneOf(tuple(DIRECTIONS)),
    "tracking.connect_timeout_s": Gt(0),
    "tracking.fingerprint_every": Ge(0),
    "tracking.system_metrics_s": Ge(0),
    "tracking.register_as": Matches(
        r"[A-Za-z0-9][A-Za-z0-9_.\-]*", "a registered model's name: letters, digits, '_', '-', '.'"
    ),
}


# False while checking jobs that a cluster launcher runs elsewhere: the GPUs that count are
# the cluster's, checked again by the job itself where it runs.
ON_THIS_MACHINE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "on_this_machine", default=True
)


def _devices_exist(accelerator: Any, devices: Any) -> bool:
    """`trainer.devices` GPUs must exist here (an int count; a list names device indices)."""
    if str(accelerator) not in ("gpu", "cuda") or not ON_THIS_MACHINE.get():
        return True
    import torch

    have = torch.cuda.device_count()
    if isinstance(devices, int) and not isinstance(devices, bool):
        return devices == -1 or 0 < devices <= have
    if isinstance(devices, (list, tuple)):
        return all(isinstance(d, int) and 0 <= d < have for d in devices)
    return have > 0  # "auto"


def _sharded_on_gpus(strategy: Any, accelerator: Any) -> bool:
    """Lightning's FSDP runs on CUDA devices only (it refuses `accelerator=cpu` after the
    data is read); `ddp_cpu` is the CPU strategy."""
    return str(strategy) != "fsdp" or str(accelerator) in ("gpu", "cuda", "auto")


_TRAINER = [
    Together(
        ("accelerator", "devices"),
        _devices_exist,
        "as many GPUs as trainer.devices asks for on this machine (use trainer=cpu here)",
    ),
    Together(
        ("strategy", "accelerator"),
        _sharded_on_gpus,
        "GPUs for strategy=fsdp (trainer=fsdp); on CPUs use trainer=ddp_cpu",
    ),
]
TOGETHER: dict[str, list[Together]] = {
    "lightning.pytorch.Trainer": _TRAINER,
    "lightning.Trainer": _TRAINER,
    "lightning.pytorch.trainer.trainer.Trainer": _TRAINER,
}
