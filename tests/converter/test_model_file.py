"""``load_model``: TorchScript, torch.export archives and ONNX convert (self-check included) into networks
whose ANN computes what the file computes; pickles, unknown files and fixed-batch ONNX are refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converter import ModelFileError, convert, load_model
from tests.converter.exported import FORMATS, file_outputs, save, small_cnn


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_saved_model_converts_and_its_ann_computes_what_the_file_computes(tmp_path, fmt, residual):
    path = save(small_cnn(residual), fmt, tmp_path, size=8)
    torch.manual_seed(1)
    images = torch.rand(16, 3, 8, 8)
    net = convert(load_model(path, (3, 8, 8)), images, T=8)  # the self-check ran in convert
    torch.testing.assert_close(
        net.run(images, "ann").logits, file_outputs(path, fmt, images), rtol=1e-5, atol=1e-5
    )
    assert net.timesteps == (3 if residual else 2) * 8


def test_a_weight_computed_from_the_input_is_refused():
    class Computed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x.flatten(1), x.flatten(1))

    with pytest.raises(ValueError, match="its weight must be a parameter or buffer of the model"):
        convert(Computed(), torch.rand(4, 3, 5, 5), T=4)


def test_a_pickled_model_is_refused_unread(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(small_cnn(False), path)
    with pytest.raises(
        ModelFileError, match=r"model\.pt is a pickled model \(torch\.save\), which is not loaded"
    ):
        load_model(path, (3, 8, 8))


@pytest.mark.parametrize("name", ["weights.bin", "model.onnx.txt", "notes.pt2"])
def test_an_unknown_file_is_refused_naming_it_and_the_formats(tmp_path, name):
    path = tmp_path / name
    path.write_text("not a model")
    with pytest.raises(
        ModelFileError, match=rf"{name} is not a model file .*TorchScript.*torch.export.*ONNX"
    ):
        load_model(path)


def test_a_missing_file_and_a_torchscript_model_without_shape_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "absent.onnx")
    path = save(small_cnn(False), "torchscript", tmp_path, size=8)
    with pytest.raises(ModelFileError, match=r"needs the input's shape \(C, H, W\)"):
        load_model(path)


def test_a_damaged_onnx_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelFileError, match=r"broken\.onnx: cannot read it as onnx"):
        load_model(path)


def test_an_onnx_export_for_one_image_only_is_refused_with_the_fix(tmp_path):
    path = save(small_cnn(False), "onnx", tmp_path, size=8, dynamic=False)
    with pytest.raises(
        ModelFileError, match=r"does not run on a batch of two .*export it with a dynamic batch"
    ):
        load_model(path)
