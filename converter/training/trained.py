"""Rebuild a trained zoo model from ``python -m converter train`` output (or plain safetensors weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from converter.training.clipfloor import clip_floor_model
from converter.training.models import build_model


class TrainedModelError(ValueError):
    """The weights cannot be read or do not fit the model named."""


@dataclass
class Trained:
    """A trained model and what its training run recorded."""

    model: nn.Module
    name: str
    classes: list[str]
    clip_floor_T: int | None
    info: dict


def load_trained(path: str | Path, model_name: str | None = None, num_classes: int | None = None) -> Trained:
    """A run directory (``model.safetensors`` + ``model.json``) or a weights file plus ``model_name``."""
    path = Path(path)
    info: dict = {}
    weights = path
    if not path.exists():
        raise TrainedModelError(f"{path}: no such run folder or weights file")
    if path.is_dir():
        weights, meta = path / "model.safetensors", path / "model.json"
        if not meta.is_file():
            raise TrainedModelError(
                f"{path}: no model.json (is this a `python -m converter train` output folder?)"
            )
        info = json.loads(meta.read_text())
    if not weights.is_file():
        raise TrainedModelError(f"{weights}: no such weights file")
    name = model_name or info.get("model")
    if name is None:
        raise TrainedModelError(f"{weights}: say which zoo model these weights belong to (--model)")
    classes = info.get("classes") or [str(i) for i in range(num_classes or 10)]
    clip_info = info.get("clip_floor") or {}
    clip = clip_info.get("T")
    try:
        model = build_model(name, num_classes or info.get("num_classes") or len(classes))
        if clip:
            model = clip_floor_model(
                model, clip, clip_info.get("shift", 0.5), input_T=clip_info.get("input_T")
            )
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, OSError) as e:
        raise TrainedModelError(f"{weights}: cannot read weights ({e})") from None
    except (RuntimeError, ValueError) as e:
        raise TrainedModelError(
            f"{weights}: weights do not fit {name}: {' '.join(str(e).split())[:300]}"
        ) from None
    return Trained(model.eval(), name, list(classes), clip, info)
