"""Service configuration, read from ``TSC_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from converter.system import available_cores

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; each field ``x`` is set by the environment variable ``TSC_X``."""

    model_config = SettingsConfigDict(env_prefix="TSC_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface uvicorn binds (the container sets 0.0.0.0).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port uvicorn binds.")
    model_dir: Path = Field(REPO_ROOT / "models", description="Directory of checkpoints, one per entry.")
    default_model: str = Field("resnet20-cifar10", description="Model used when a request names none.")
    max_upload_bytes: int = Field(16 * MiB, ge=1024, description="Largest request body, all files together.")
    max_batch_files: int = Field(32, ge=1, description="Most files in one /classify/batch request.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height).")
    max_batch_size: int = Field(32, ge=1, description="Most images the dynamic batcher runs together.")
    max_batch_delay_ms: float = Field(5.0, ge=0, le=10_000, description="Longest wait to fill a batch.")
    max_queue_size: int = Field(
        256,
        ge=1,
        description="Images waiting per model and lane (fast+ann; stepped+rate) before 503 queue_full.",
    )
    torch_threads: int = Field(
        default_factory=lambda: max(1, available_cores() - 1),
        ge=1,
        description="Intra-op torch threads; the default leaves one core to HTTP and decoding.",
    )
    api_key: SecretStr | None = Field(None, description="When set, classify and model routes need it.")
    rate_steps: int = Field(256, ge=1, description="Time steps of the rate-coded run of compare=true.")
    precision: Literal["float64", "float32"] = Field(
        "float64",
        description="Arithmetic of every engine. float64: fast and stepped give identical counts on every "
        "image (spec section 7); float32: about 6x faster fast engine, counts may differ from the reference "
        "engine's on images with values within rounding of a level boundary.",
    )
    graceful_timeout_s: float = Field(30.0, gt=0, description="Time in-flight requests get at shutdown.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> Settings:
        if self.max_batch_files > self.max_queue_size:
            raise ValueError("TSC_MAX_BATCH_FILES must not exceed TSC_MAX_QUEUE_SIZE")
        return self
