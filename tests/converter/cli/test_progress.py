"""Without a terminal every long stage of convert, evaluate and train is one line on stderr; --quiet none."""

from __future__ import annotations

import pytest

from converter.cli import main
from tests.converter.exported import save, small_cnn

DATA = "synthetic:classes=4,n=64,size=16,test_n=16"
TRAIN_DATA = "synthetic:classes=4,n=32,size=32,test_n=16"  # ResNet-20 takes 32 x 32
CONVERT = [
    "loading the train images of " + DATA,
    "tracing the model and checking the converted graph against it",
    "calibration (percentile 99.99, 16 images)",
    "loading the test images of " + DATA,
    "evaluation (ann) on 8 images",
    "evaluation (fast) on 8 images",
]


@pytest.mark.parametrize("quiet", [False, True], ids=["stages", "quiet"])
def test_convert_and_evaluate_say_each_stage_once_unless_quiet(tmp_path, quiet, capsys):
    model_file, out = (
        save(small_cnn(residual=True, size=16, classes=4), "torch.export", tmp_path, 16),
        tmp_path / "ck",
    )
    flag = ["--quiet"] if quiet else []
    argv = [
        "convert",
        "--model-file",
        str(model_file),
        "--data",
        DATA,
        "--T",
        "4",
        "--calibration-images",
        "16",
    ]
    assert main([*argv, "--limit", "8", "--out", str(out), *flag]) == 0
    assert capsys.readouterr().err.splitlines() == ([] if quiet else CONVERT)
    assert main(["evaluate", str(out), "--data", DATA, "--limit", "8", "--rate-steps", "4", *flag]) == 0
    evaluate = [CONVERT[3], *CONVERT[4:], "evaluation (rate v0=0) on 8 images"]
    assert capsys.readouterr().err.splitlines() == ([] if quiet else evaluate)


@pytest.mark.parametrize("quiet", [False, True], ids=["stages", "quiet"])
def test_train_says_the_data_and_each_epoch_unless_quiet(tmp_path, quiet, capsys):
    argv = ["train", "--model", "resnet20", "--data", TRAIN_DATA, "--epochs", "2", "--batch-size", "16"]
    assert main([*argv, "--out", str(tmp_path / "run"), *(["--quiet"] if quiet else [])]) == 0
    stages = [f"loading the {split} images of {TRAIN_DATA}" for split in ("train", "test")]
    stages += ["training epoch 1", "training epoch 2"]
    assert capsys.readouterr().err.splitlines() == ([] if quiet else stages)
