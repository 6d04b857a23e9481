"""Configuration: TSC_* environment variables, defaults that start with zero configuration, validation."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from converter.snn.system import available_cores
from service.settings import REPO_ROOT, Settings, default_concurrency_limit


def test_defaults_serve_the_embedded_model_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"TSC_{name.upper()}", raising=False)
    settings = Settings()
    assert settings.model_dir == REPO_ROOT / "models"
    assert settings.default_model == "resnet20-cifar10"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.api_key is None
    assert settings.torch_threads == max(1, available_cores() - 1)


def test_every_field_reads_its_tsc_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "TSC_HOST": "0.0.0.0",
        "TSC_PORT": "9000",
        "TSC_MODEL_DIR": str(tmp_path),
        "TSC_DEFAULT_MODEL": "vgg",
        "TSC_MAX_UPLOAD_BYTES": "2048",
        "TSC_MAX_BATCH_SIZE": "7",
        "TSC_MAX_BATCH_DELAY_MS": "0.5",
        "TSC_TORCH_THREADS": "3",
        "TSC_API_KEY": "s3cr3t-key",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.host, s.port, s.model_dir, s.default_model) == ("0.0.0.0", 9000, tmp_path, "vgg")
    assert (s.max_upload_bytes, s.max_batch_size, s.max_batch_delay_ms, s.torch_threads) == (2048, 7, 0.5, 3)
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cr3t-key"
    assert "s3cr3t-key" not in repr(s)


def test_an_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSC_API_KEY", "")
    assert Settings().api_key is None


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 70000},
        {"max_batch_size": 0},
        {"torch_threads": 0},
        {"max_batch_files": 300, "max_queue_size": 8},
        {"max_batch_files": 32, "max_queue_size": 40},  # one client may queue only 20 of them
        {"max_client_queue_share": 0},
        {"max_header_bytes": 100},
        {"header_timeout_s": 0},
        {"limit_concurrency": 1},
    ],
)
def test_invalid_values_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_connection_and_decode_limits_have_safe_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"TSC_{name.upper()}", raising=False)
    s = Settings()
    assert (s.max_header_bytes, s.max_headers, s.header_timeout_s, s.body_timeout_s) == (16384, 100, 10, 30)
    assert (s.keep_alive_timeout_s, s.backlog) == (5, 1024)
    assert s.limit_concurrency == default_concurrency_limit() <= 1024
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert Settings().limit_concurrency == 128  # half the descriptors: 300 stalled clients cannot take all
    assert (s.max_full_decode_pixels, s.full_decode_scale, s.max_large_decodes) == (
        8_000_000,
        32,
        max(1, available_cores() // 2),
    )
    assert (s.max_client_queue_share, s.client_queue_size) == (0.5, 128)


def test_device_defaults_to_auto_and_resolves_to_what_torch_has() -> None:
    from service.settings import resolve_device

    assert Settings().device == "auto"
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_device_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSC_DEVICE", "cuda")
    with pytest.raises(ValidationError, match="TSC_DEVICE=cuda, but torch sees no CUDA device"):
        Settings()
