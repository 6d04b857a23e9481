"""A training run's folder: resumable state in safetensors (weights, momenta, EMA) and ``state.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from converter.snn.system import atomic_write

CHECKPOINT_FORMAT = "tsc-snn-train/1"


class ResumeError(ValueError):
    """An output folder holds a run that cannot be resumed with these settings."""


def fingerprint(model: nn.Module) -> str:
    """A digest of the model's state names and shapes, to refuse resuming into another architecture."""
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies, as safetensors needs them."""
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write tensors (any device or layout) to a safetensors file atomically."""
    state = _cpu_state(tensors)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def save_checkpoint(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, ema: AveragedModel | None
) -> None:
    """``last.safetensors`` (weights, momenta, EMA weights, the state as metadata), then ``state.json``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    for name, param in model.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"optimizer.momentum_buffer.{name}"] = buffer
    text = json.dumps(state, indent=1)
    save_safetensors(tensors, out_dir / "last.safetensors", {"format": CHECKPOINT_FORMAT, "state": text})
    atomic_write(out_dir / "state.json", lambda tmp: Path(tmp).write_text(text + "\n"))


def resume(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, args: dict, ema: AveragedModel | None
) -> dict | None:
    """The saved state of a matching earlier run in ``out_dir`` (weights, momenta, EMA restored), or None."""
    if not (out_dir / "state.json").is_file():
        return None
    saved = json.loads((out_dir / "state.json").read_text()).get("args", {})
    if saved != args:
        changed = sorted(k for k in {*saved, *args} if saved.get(k) != args.get(k))
        raise ResumeError(
            f"{out_dir} holds a run with other settings ({', '.join(changed)}); use another output folder"
        )
    path = out_dir / "last.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
        tensors = load_file(str(path))
    except (OSError, KeyError, ValueError) as exc:
        raise ResumeError(f"{path}: unreadable checkpoint ({exc}); delete {out_dir} to start over") from None
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")})
    for name, param in model.named_parameters():
        buffer = tensors.get(f"optimizer.momentum_buffer.{name}")
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = torch.empty_like(param).copy_(buffer)
    return state
