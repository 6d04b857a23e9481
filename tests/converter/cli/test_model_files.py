"""``convert --model-file``: a small CNN saved in each format becomes a checkpoint whose ANN is the model."""

from __future__ import annotations

import json

import pytest
import torch

from converter import load
from converter.cli import main
from tests.converter.exported import FORMATS, save, small_cnn
from tsc_snn.__main__ import main as tsc_snn

DATA = "synthetic:classes=4,n=64,size=16,test_n=16"


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_model_file_writes_a_checkpoint_whose_ann_is_the_model(tmp_path, fmt, capsys):
    model = small_cnn(residual=True, size=16, classes=4)
    path, out = save(model, fmt, tmp_path, size=16), tmp_path / "ck"
    argv = ["convert", "--model-file", str(path), "--data", DATA, "--T", "4", "--calibration-images", "16"]
    command = tsc_snn if fmt == "onnx" else main  # the installed command and python -m converter alike
    assert command([*argv, "--limit", "8", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tsc"]["images"] == 8 and report["checkpoint"] == str(out)
    net = load(out)
    assert net.manifest["provenance"]["weights"] == str(path)
    images = torch.rand(8, 3, 16, 16)
    torch.testing.assert_close(net.run(images, "ann").logits, model(images), rtol=1e-5, atol=1e-5)


def test_an_unknown_model_file_is_one_error_line_naming_it_and_the_formats(tmp_path, capsys):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n")
    argv = ["convert", "--model-file", str(path), "--data", DATA, "--out", str(tmp_path / "ck"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"error: {path} is not a model file") and "ONNX" in err and len(err.splitlines()) == 1
    )


def test_a_model_file_for_other_classes_is_refused(tmp_path, capsys):
    path = save(small_cnn(residual=False, size=16, classes=3), "torch.export", tmp_path, size=16)
    assert main(["convert", "--model-file", str(path), "--data", DATA, "--out", str(tmp_path / "ck")]) == 2
    assert "the data has 4 classes, the model 3" in capsys.readouterr().err
