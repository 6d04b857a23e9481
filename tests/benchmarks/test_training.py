"""The training-throughput benchmark runs the real training loop and reports both precisions."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from benchmarks import training
from converter.training import train as train_module
from converter.training.train import native_bf16


def test_benchmark_reports_both_precisions_and_their_ratio(monkeypatch, capsys):
    asked = []

    def autocast(device, amp):
        asked.append(amp)
        return real_autocast(device, amp)

    real_autocast = train_module._autocast
    monkeypatch.setattr(train_module, "_autocast", autocast)
    monkeypatch.setattr(
        sys, "argv", ["training", "--images", "128", "--repeats", "1", "--device", "auto", "--json"]
    )
    training.main()
    result = json.loads(capsys.readouterr().out)
    # each precision really trained: bf16 where the device computes it natively, and only there (a CPU
    # without AVX512-BF16 or AMX trains both rows in fp32)
    assert False in asked and (True in asked) == native_bf16(torch.device(result["device"]))
    rates = result["images_per_s"]
    assert set(rates) == {"bf16", "fp32"} and min(rates.values()) > 0
    assert result["bf16_speedup"] == pytest.approx(rates["bf16"] / rates["fp32"], abs=0.01)
    assert result["native_bf16"] == native_bf16(torch.device(result["device"]))
