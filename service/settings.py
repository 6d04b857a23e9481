"""Service configuration, read from ``TSC_*`` environment variables."""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from converter.snn import available_cores

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def default_concurrency_limit() -> int:
    """Half the soft file-descriptor limit (each connection holds one), at most 1024, at least 2."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(2, min(1024, soft // 2))


def default_body_budget() -> int:
    """A quarter of the memory this process may use (its cgroup v2 limit, else the machine's), >= 64 MiB."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        memory = int(limit) if limit.isdigit() else None
    except OSError:
        memory = None
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(64 * MiB, memory // 4)


def resolve_device(setting: str) -> torch.device:
    """The torch device of a TSC_DEVICE value; ``ValueError`` when cuda is asked for and there is none."""
    import torch  # here, not at the top: the healthcheck reads these settings and must stay light

    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("TSC_DEVICE=cuda, but torch sees no CUDA device; use cpu or auto")
    return torch.device("cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu")


class Settings(BaseSettings):
    """Every knob of the service; each field ``x`` is set by the environment variable ``TSC_X``."""

    # hide_input_in_errors: a refused TSC_API_KEY must not be echoed in the error
    model_config = SettingsConfigDict(
        env_prefix="TSC_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = Field("127.0.0.1", description="Interface uvicorn binds (the container sets 0.0.0.0).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port uvicorn binds.")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol's gRPC service (KServe / Triton v2; 8001, as "
        "Triton's), on TSC_HOST; 0: no gRPC.",
    )
    model_dir: Path = Field(REPO_ROOT / "models", description="Directory of checkpoints, one per entry.")
    default_model: str = Field("resnet20-cifar10", description="Model used when a request names none.")
    max_upload_bytes: int = Field(16 * MiB, ge=1024, description="Largest request body, all files together.")
    max_batch_files: int = Field(32, ge=1, description="Most files in one /classify/batch request.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height).")
    max_full_decode_pixels: int = Field(
        8_000_000,
        ge=1,
        description="Largest PNG, WebP, BMP or GIF (decoded at full size, unlike JPEG, which is reduced on "
        "load) for a model with a small input; a model allows at least TSC_FULL_DECODE_SCALE times its input "
        "per side, and no format more than TSC_MAX_IMAGE_PIXELS.",
    )
    full_decode_scale: int = Field(32, ge=1, description="See TSC_MAX_FULL_DECODE_PIXELS.")
    max_large_decodes: int = Field(
        default_factory=lambda: max(1, available_cores() // 2),
        ge=1,
        description="Decodes of large images (over 1 MP once reduced on load) at once; more wait their turn, "
        "so that small images are never held up behind them.",
    )
    max_batch_size: int = Field(32, ge=1, description="Most images the dynamic batcher runs together.")
    max_batch_delay_ms: float = Field(5.0, ge=0, le=10_000, description="Longest wait to fill a batch.")
    max_queue_size: int = Field(
        256,
        ge=1,
        description="Images waiting per model and lane (fast+ann; stepped+rate) before 503 queue_full.",
    )
    max_client_queue_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Part of a lane's queue one client (remote address) may fill; beyond it that client gets "
        "503 queue_full while others are still served.",
    )
    torch_threads: int = Field(
        default_factory=lambda: max(1, available_cores() - 1),
        ge=1,
        description="Intra-op torch threads; the default leaves one core to HTTP and decoding.",
    )
    engine_workers: Literal["thread", "process"] = Field(
        "thread",
        description="Where each engine lane runs its batches: a thread of the server's process (one copy of "
        "each network; measured faster, see benchmarks/load.py) or a process of its own (its Python then "
        "never takes turns with request handling for the interpreter lock; about 300 MB more per lane).",
    )
    api_key: SecretStr | None = Field(None, description="When set, classify and model routes need it.")
    rate_steps: int = Field(256, ge=1, description="Time steps of the rate-coded run of compare=true.")
    precision: Literal["float32", "float64"] = Field(
        "float32",
        description="Arithmetic of the engines. The fast and stepped engines give float64's levels, counts "
        "and logits in either (float32's fast engine guards its rounding, spec section 7); float32 is "
        "several times faster; the raw engine and the ANN compute in this precision as they are.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the engines run: cuda when asked (or, for auto, when one is available)."
    )
    graceful_timeout_s: float = Field(30.0, gt=0, description="Time in-flight requests get at shutdown.")
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line and headers together (431 beyond)."
    )
    max_headers: int = Field(100, ge=8, description="Most header lines of a request (431 beyond).")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a connection has to send a request's line and headers (408 after)."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest pause while a request body streams in (408 after)."
    )
    body_min_rate: int = Field(
        16 * 1024,
        ge=1,
        description="Bytes per second a body must average: it must arrive within TSC_BODY_TIMEOUT_S plus its "
        "Content-Length (or TSC_MAX_UPLOAD_BYTES) at this rate (408 after), so trickling cannot hold a slot.",
    )
    body_budget_bytes: int = Field(
        default_factory=default_body_budget,
        ge=1024,
        description="Request-body bytes all connections together may hold at once, and one client address "
        "its TSC_MAX_CLIENT_CONNECTIONS share of them (at least one largest body); beyond it 503 overloaded "
        "with Connection: close. The default is a quarter of the process's memory limit (cgroup, else RAM).",
    )
    keep_alive_timeout_s: int = Field(5, ge=1, description="Time an idle keep-alive connection stays open.")
    limit_concurrency: int = Field(
        default_factory=default_concurrency_limit,
        ge=2,
        description="Open connections (and requests being handled) at most; beyond it 503 overloaded. The "
        "default is half the process's file-descriptor limit, at most 1024.",
    )
    max_client_connections: int | None = Field(
        None,
        ge=0,
        description="Open connections one client address may hold; beyond it 503 overloaded, so that one "
        "client cannot take every slot. Default: a quarter of TSC_LIMIT_CONCURRENCY; 0: no cap (behind a "
        "proxy every client has the proxy's address).",
    )

    @property
    def client_connection_cap(self) -> int | None:
        """The per-address connection cap in force (None: none)."""
        if self.max_client_connections is None:
            return max(1, self.limit_concurrency // 4)
        return self.max_client_connections or None

    @property
    def client_body_budget(self) -> int | None:
        """Request-body bytes one address may hold (None: no cap): the share of TSC_BODY_BUDGET_BYTES its
        connection cap gives it of TSC_LIMIT_CONCURRENCY, and at least one body of TSC_MAX_UPLOAD_BYTES."""
        cap = self.client_connection_cap
        if cap is None:
            return None
        share = self.body_budget_bytes * min(cap, self.limit_concurrency) // self.limit_concurrency
        return max(share, self.max_upload_bytes)

    backlog: int = Field(
        1024, ge=1, description="Connections the kernel holds before the server accepts them."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text or as JSON objects (time, level, logger, message, request_id; access "
        "lines also method, route, status, duration_ms, client).",
    )

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        """Refuse TSC_DEVICE=cuda where there is no CUDA device, at start rather than at the first load."""
        if value == "cuda":
            resolve_device(value)
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_key")
    @classmethod
    def _key_can_be_sent(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a key no client could send in a header: it would answer 401 to everyone."""
        key = None if value is None else value.get_secret_value()
        if key is not None and not (key.isascii() and key.isprintable() and key.strip() == key):
            raise ValueError(
                "TSC_API_KEY must be printable ASCII without leading or trailing whitespace (a header "
                "cannot carry anything else, so no request could ever match it); leave it empty for no key"
            )
        return value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> Settings:
        if self.max_batch_files > self.max_queue_size:
            raise ValueError("TSC_MAX_BATCH_FILES must not exceed TSC_MAX_QUEUE_SIZE")
        if self.max_batch_files > self.client_queue_size:
            raise ValueError(
                "TSC_MAX_BATCH_FILES must not exceed TSC_MAX_CLIENT_QUEUE_SHARE x TSC_MAX_QUEUE_SIZE"
            )
        return self

    @property
    def client_queue_size(self) -> int:
        """Images one client may have waiting in one lane (TSC_MAX_CLIENT_QUEUE_SHARE of the queue)."""
        return math.ceil(self.max_client_queue_share * self.max_queue_size)

    def full_decode_pixels(self, height: int, width: int) -> int:
        """The pixel limit of formats decoded at full size, for a model of input ``height`` x ``width``."""
        scaled = self.full_decode_scale**2 * height * width
        return min(self.max_image_pixels, max(self.max_full_decode_pixels, scaled))
