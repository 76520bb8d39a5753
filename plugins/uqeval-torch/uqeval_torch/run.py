"""A training run's folder: its settings, its members' weights and checkpoints, atomic writes.

Layout of ``RUN/``::

    run.json                       the settings (RunSettings), written once
    members/seed-0.pt              a finished member: its EMA weights
    members/seed-1.checkpoint.pt   an unfinished member: weights, EMA, optimiser, RNG, step
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from uqeval import AUMethod, DatasetSource, EUMethod, UQEvalError, plugin_manager, write_bytes, write_json
from uqeval_torch import __version__
from uqeval_torch.backbone import SIZES

SETTINGS_FILE = "run.json"

#: Named settings of ``uqeval train --profile``. ``cpu`` trains the synthetic task to a
#: model that has learned (ID Dice 0.8–0.85 against the raters, AU NCC about 0.5, mean
#: AU about 0.1 nats) in about a minute per network on one core: the tiny network,
#: 48² images with half the default share of faint shapes, batches of 16, a learning
#: rate 30× the study's (its zero-initialised last convs barely move in a few hundred
#: steps at 1e-4) and 30 epochs. At 32² the tiny network's deepest scale is 4², too
#: coarse for the small shapes (ID Dice stays near 0.6). Flags given explicitly win
#: over a profile.
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "size": "tiny",
        "epochs": 30,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "synthetic_options": {"size": 48, "n_train": 96, "n_calibration": 16, "n_test": 32, "faint": 0.1},
        # What `uqeval study --profile cpu` predicts unless told otherwise: 5 EU members of
        # every method with several, 5 AU samples per member.
        "study": {"members": 5, "samples": 5},
    },
}


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines a training run (and so its folder's contents).

    Attributes
    ----------
    au, eu, data : names of the AU method, EU method and dataset (any plugin's).
    data_options : the dataset's ``configure`` options (``{"size": 32}``), as the dataset types them.
    au_options : the AU method's ``configure`` options (``{"beta": 0.0025}``), as the method types them.
    size : network size, ``tiny`` or ``full`` (:data:`uqeval_torch.backbone.SIZES`).
    epochs : passes over the training split per member.
    members : networks the EU method trains (an ensemble's N); 1 for ``none``.
    seed : seed of the first member; member ``i`` of an ensemble uses ``seed + i``.
    data_seed : seed of the dataset's draws (the same for every model seed).
    batch_size, learning_rate, weight_decay, clip_norm, ema_decay : the optimiser
        (AdamW), gradient clipping (max global L2 norm) and EMA decay of the study's §3.5.
    """

    au: str
    eu: str
    data: str
    data_options: dict[str, Any] = field(default_factory=dict)
    au_options: dict[str, Any] = field(default_factory=dict)
    size: str = "full"
    epochs: int = 100
    members: int = 1
    seed: int = 0
    data_seed: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    clip_norm: float = 0.5
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UQEvalError(f"unknown size {self.size!r}; sizes are {', '.join(sorted(SIZES))}", parameter="size")
        for name in ("epochs", "members", "batch_size"):
            if getattr(self, name) < 1:
                raise UQEvalError(f"{name} must be at least 1, got {getattr(self, name)}", parameter=name)
        if not 0 <= self.ema_decay < 1:
            raise UQEvalError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> RunSettings:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError as error:
            raise UQEvalError(f"{where}: not a run's settings ({error})") from None

    def differences(self, other: RunSettings) -> list[str]:
        """``name: mine → other`` for every setting that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{key}: {mine[key]!r} → {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]


@dataclass(frozen=True)
class Components:
    """The plugins a run's settings name, looked up and configured."""

    au: AUMethod
    eu: EUMethod
    dataset: DatasetSource


def components(settings: RunSettings) -> Components:
    """The AU method, EU method and (configured) dataset that ``settings`` name, from any plugin."""
    manager = plugin_manager()
    au = _argument("au", manager.au_method, settings.au)
    if settings.au_options:
        au = _argument("au-option", configured_au, au, settings.au_options)
    return Components(
        au=au,
        eu=_argument("eu", manager.eu_method, settings.eu),
        dataset=_argument("data", manager.dataset, settings.data, settings.data_options),
    )


def configured_au(method: AUMethod, options: dict[str, Any]) -> AUMethod:
    """``method.configure(**options)``; an AU method without ``configure`` takes no options."""
    configure = getattr(method, "configure", None)
    if configure is None:
        raise UQEvalError(f"AU method {method.name!r} takes no options (it has no configure method)")
    return configure(**options)


def _argument(parameter: str, getter: Callable[..., Any], *arguments: Any) -> Any:
    """``getter(*arguments)``, its error marked as being about ``parameter``."""
    try:
        return getter(*arguments)
    except UQEvalError as error:
        raise UQEvalError(str(error), parameter=parameter) from None


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS_FILE

    def member_path(self, seed: int) -> Path:
        return self.path / "members" / f"seed-{seed}.pt"

    def checkpoint_path(self, seed: int) -> Path:
        return self.path / "members" / f"seed-{seed}.checkpoint.pt"

    def read_settings(self) -> RunSettings:
        """The settings of an existing run; a clear error when ``path`` is not one."""
        if not self.settings_path.is_file():
            raise UQEvalError(f"{self.path}: not a training run (no {SETTINGS_FILE}); make one with `uqeval train`")
        try:
            data = json.loads(self.settings_path.read_text())
        except (OSError, ValueError) as error:
            raise UQEvalError(f"{self.settings_path}: unreadable ({error})") from None
        return RunSettings.from_json(data, self.settings_path)

    def start(self, settings: RunSettings) -> bool:
        """Create the run, or check that an existing one has the same settings (to resume it).

        Returns True when the run already existed.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UQEvalError(f"{self.path} is a file; a run is a folder", parameter="out")
        if self.settings_path.exists():
            existing = self.read_settings()
            if existing != settings:
                changed = "; ".join(existing.differences(settings))
                raise UQEvalError(
                    f"{self.path} holds a run with other settings ({changed}); "
                    "resume it with the same options or choose another --out"
                )
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise UQEvalError(
                f"{self.path} is a folder with other files in it; choose an empty or new folder", parameter="out"
            )
        (self.path / "members").mkdir(parents=True, exist_ok=True)
        write_json(self.settings_path, {"uqeval_torch": __version__, **asdict(settings)})
        return False


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through uqeval's atomic write: ``path`` is always whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getbuffer())


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint or member file, on the CPU; a clear error when it is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UQEvalError(f"{path}: cannot be read ({type(error).__name__}: {error}); delete it to retrain") from None
