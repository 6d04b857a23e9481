"""Per-model settings: a ``settings.json`` beside a checkpoint overrides the global ``TSC_*`` values for it.

    models/resnet20-cifar10/manifest.json, weights.safetensors, settings.json
    models/small.safetensors, small.settings.json

Any of ``max_batch_size``, ``max_batch_delay_ms`` (the model's batching), ``engines`` (the engines requests
may ask of it; the baselines a comparison runs stay allowed) and ``compare`` (what a request that does not
say gets). The file is validated when the model loads: an unknown key, a wrong type or an engine that does
not exist makes that model fail to load, with the reason, and nothing else is disturbed.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from converter.snn import ENGINES, TSC_ENGINES

MAX_SETTINGS_BYTES = 64 * 1024


class ModelSettings(BaseModel):
    """What one model's ``settings.json`` may set; unset fields take the global ``TSC_*`` values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(None, ge=1, le=1024, description="Images one batch may hold.")
    max_batch_delay_ms: float | None = Field(
        None, ge=0, le=1000, description="How long a batch behind a running one waits to fill."
    )
    engines: tuple[str, ...] | None = Field(
        None, min_length=1, description="Engines requests may ask of this model (all when unset)."
    )
    compare: bool | None = Field(None, description="Whether a request that does not say compares.")

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Only engines that exist, each once, at least one of them spiking with TSC."""
        if value is None:
            return None
        unknown = [e for e in value if e not in ENGINES]
        if unknown:
            raise ValueError(f"unknown engines {unknown}; choose among {', '.join(ENGINES)}")
        if len(set(value)) != len(value):
            raise ValueError("an engine is listed twice")
        if not set(value) & set(TSC_ENGINES):
            raise ValueError(f"allow at least one TSC engine ({', '.join(TSC_ENGINES)})")
        return value

    def allows(self, engine: str) -> bool:
        """Whether a request may ask this model for ``engine``."""
        return self.engines is None or engine in self.engines


class ModelSettingsError(ValueError):
    """A model's settings file is unreadable or invalid (the message names the file and the problem)."""


def settings_path(checkpoint: Path) -> Path:
    """Where a checkpoint's settings live: ``settings.json`` in its folder, or ``<name>.settings.json``."""
    if checkpoint.is_dir():
        return checkpoint / "settings.json"
    return checkpoint.with_name(f"{checkpoint.stem}.settings.json")


def read_model_settings(checkpoint: Path) -> ModelSettings:
    """The checkpoint's settings (all unset when it has no file); ``ModelSettingsError`` when invalid."""
    path = settings_path(checkpoint)
    if not path.is_file():
        return ModelSettings()
    try:
        data = path.read_bytes()
        if len(data) > MAX_SETTINGS_BYTES:
            raise ValueError(f"larger than {MAX_SETTINGS_BYTES} bytes")
        return ModelSettings.model_validate(json.loads(data))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelSettingsError(f"{path.name}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """One line saying what is wrong with a settings file."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg}, line {exc.lineno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)
