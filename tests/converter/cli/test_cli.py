"""``python -m converter`` convert / evaluate / sweep on a tiny synthetic run, and their errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from converter import load
from converter.cli import main

DATA = "synthetic:classes=4,n=96,size=32,test_n=48"


def _train(out, *extra: str) -> int:
    """One epoch of ``train`` on the synthetic set (small batches), plus ``extra`` arguments."""
    argv = ["train", "--model", "resnet20", "--data", DATA, "--epochs", "1", "--batch-size", "32"]
    return main([*argv, *extra, "--out", str(out), "--json"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _train(out) == 0
    return out


def test_convert_writes_checkpoint_with_accuracy_table(run_dir, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "ck"
    code = main(
        [
            "convert",
            "--run",
            str(run_dir),
            "--data",
            DATA,
            "--T",
            "8",
            "--calibration-images",
            "32",
            "--out",
            str(out),
            "--rate-steps",
            "4,8",
            "--rate-images",
            "4",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tsc"]["timesteps"] == 20 * 8
    assert [r["timesteps"] for r in report["rate"]] == [4, 8]
    net = load(out)
    assert net.accuracy["images"] == 48 and set(net.accuracy["tsc"]) == {"8"}
    assert net.labels == json.loads((run_dir / "model.json").read_text())["classes"]
    assert net.manifest["provenance"]["source_model"] == "resnet20"


def test_evaluate_prints_table_and_json(run_dir, tmp_path, capsys):
    out = tmp_path / "ck"
    assert (
        main(["convert", "--run", str(run_dir), "--data", DATA, "--T", "4", "--out", str(out), "--no-eval"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(["evaluate", str(out), "--data", DATA, "--limit", "16", "--json-out", str(tmp_path / "r.json")])
        == 0
    )
    text = capsys.readouterr().out
    assert "ANN" in text and "TSC T=4" in text and "layer" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert (
        report["tsc"]["images"] == 16
        and report["tsc"]["memory_accesses"] == report["tsc"]["synaptic_additions"]
    )


def test_sweep_over_T_and_methods(run_dir, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "sweep",
                "--run",
                str(run_dir),
                "--data",
                DATA,
                "--limit",
                "16",
                "--T",
                "4,8",
                "--methods",
                "max,percentile:99.9",
                "--calibration-images",
                "16",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [(r["calibration"], r["T"]) for r in report["runs"]] == [
        ("max", 4),
        ("max", 8),
        ("percentile 99.9", 4),
        ("percentile 99.9", 8),
    ]
    assert 0 <= report["ann"]["accuracy"] <= 1


def test_sweep_runs_every_latency_lever(run_dir, capsys):
    """Error-aware calibration, window allocation and the v0 = 1/2 rate baseline from the command line."""
    capsys.readouterr()
    argv = ["sweep", "--run", str(run_dir), "--data", DATA, "--limit", "16", "--T", "4,auto,latency:70"]
    argv += ["--methods", "error-aware", "--calibration-images", "16", "--holdout-images", "32"]
    argv += [
        "--max-drop",
        "5",
        "--max-T",
        "4",
        "--rate-steps",
        "8",
        "--rate-images",
        "4",
        "--rate-v0",
        "0,0.5",
    ]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fixed, auto, latency = report["runs"]
    assert fixed["calibration"] == auto["calibration"] == "error-aware + bias correction"
    assert latency["tsc"]["timesteps"] == 70 and sorted(set(latency["windows"].values())) == [3, 4]
    assert latency["allocation"]["target_timesteps"] == 70
    assert fixed["tsc"]["timesteps"] == 20 * 4 and set(fixed["windows"].values()) == {4}
    assert auto["allocation"]["holdout_images"] == 32 and auto["allocation"]["windows"] == auto["windows"]
    assert auto["tsc"]["timesteps"] == auto["allocation"]["timesteps"] <= 20 * 8
    assert [(r["timesteps"], r["v0"]) for r in report["rate"]] == [(8, 0.0), (8, 0.5)]


def test_convert_auto_records_the_search_in_the_manifest(run_dir, tmp_path):
    out = tmp_path / "auto"
    argv = f"convert --run {run_dir} --data {DATA} --T auto --max-T 8 --max-drop 5 --calibration-images 16"
    argv += f" --holdout-images 32 --no-eval --out {out}"
    assert main(argv.split()) == 0
    net = load(out)
    allocation = net.manifest["calibration"]["allocation"]
    assert allocation["windows"] == net.windows and allocation["evaluations"]
    assert net.manifest["latency_steps"] == net.timesteps == allocation["timesteps"]


@pytest.mark.parametrize("bad", ["0", "auto,x", "", "latency:0", "latency:", "latency:ten"])
def test_bad_windows_are_refused(run_dir, bad, capsys):
    assert main(["sweep", "--run", str(run_dir), "--data", DATA, "--T", bad]) == 2
    assert "argument --T" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "--run", "/nonexistent", "--data", DATA, "--out", "x"], "no such run folder"),
        (
            [
                "convert",
                "--weights",
                "/nonexistent.safetensors",
                "--model",
                "resnet20",
                "--data",
                DATA,
                "--out",
                "x",
            ],
            "no such run folder or weights file",
        ),
        (["evaluate", "/nonexistent", "--data", DATA], "no such checkpoint"),
        (["sweep", "--factory", "nosuchmodule:f", "--data", DATA], "--factory"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_arguments(capsys):
    assert main(["sweep", "--run", "x", "--data", DATA, "--T", "0,4"]) == 2
    assert "positive integers" in capsys.readouterr().err
    assert main(["sweep", "--run", "x", "--data", DATA, "--methods", "median"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_lossless_option_end_to_end(run_dir, tmp_path, capsys):
    """train --clip-floor from a trained run, convert at the same T: the SNN answers exactly like its ANN."""
    cf = tmp_path / "cf"
    init = str(run_dir / "model.safetensors")
    extra = ["--init", init, "--clip-floor", "4", "--lr", "0.01", "--warmup-epochs", "0"]
    assert _train(cf, *extra) == 0
    assert json.loads((cf / "model.json").read_text())["clip_floor"] == {"T": 4, "shift": 0.5, "input_T": 4}
    capsys.readouterr()
    assert (
        main(
            ["convert", "--run", str(cf), "--data", DATA, "--T", "4", "--out", str(tmp_path / "ck"), "--json"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["tsc"]["accuracy"] == report["ann"]["accuracy"]
    net = load(tmp_path / "ck")
    assert all(r["method"] == "trained clip-floor" for r in net.calibration["layers"].values())


def test_low_T_training_with_its_own_input_window_converts_at_the_trained_windows(run_dir, tmp_path, capsys):
    """--clip-floor 2 --clip-floor-input 8, then --T trained: input window 8, every layer 2, lossless."""
    cf = tmp_path / "cf2"
    extra = ["--init", str(run_dir / "model.safetensors"), "--clip-floor", "2", "--clip-floor-input", "8"]
    assert _train(cf, *extra, "--lr", "0.01", "--warmup-epochs", "0") == 0
    capsys.readouterr()
    argv = f"convert --run {cf} --data {DATA} --T trained --out {tmp_path / 'ck'} --json"
    assert main(argv.split()) == 0
    report = json.loads(capsys.readouterr().out)
    # the report runs in float32, where one image near a level boundary may flip (spec 7); exact below
    assert abs(report["tsc"]["accuracy"] - report["ann"]["accuracy"]) <= 1 / report["tsc"]["images"] + 1e-9
    net = load(tmp_path / "ck")
    assert net.windows["input"] == 8 and set(net.windows.values()) == {8, 2}
    assert net.timesteps == 8 + 19 * 2  # input window, then 19 neuron layers on the longest path
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)).double()
    net = net.to(torch.float64)  # in float32 a value within rounding of a level boundary may flip (spec 7)
    torch.testing.assert_close(net.run(x).logits, net.run(x, "ann").logits, rtol=1e-9, atol=1e-9)


def test_train_refuses_an_input_window_without_clip_floor(tmp_path, capsys):
    assert _train(tmp_path / "x", "--clip-floor-input", "8") == 2
    assert "--clip-floor-input needs --clip-floor" in capsys.readouterr().err


def test_low_T_training_distils_and_lowers_T_step_by_step(run_dir, tmp_path):
    """--teacher distils from the float run; --init from a clip-floor run keeps its trained levels."""
    first, second = tmp_path / "t4", tmp_path / "t2"
    extra = ["--clip-floor", "4", "--lr", "0.01", "--warmup-epochs", "0", "--teacher", str(run_dir)]
    assert _train(first, "--init", str(run_dir / "model.safetensors"), *extra) == 0
    recorded = json.loads((first / "model.json").read_text())["teacher"]
    assert recorded == {"path": str(run_dir), "temperature": 4.0, "weight": 0.9}
    trained = {k: v for k, v in load_file(first / "model.safetensors").items() if k.endswith(".lam")}
    assert trained
    # one step at a vanishing learning rate: the T=2 network starts from the T=4 network's levels
    lower = [
        "--init",
        str(first / "model.safetensors"),
        "--clip-floor",
        "2",
        "--lr",
        "1e-12",
        "--epochs",
        "1",
    ]
    assert _train(second, *lower, "--warmup-epochs", "0", "--limit-train", "32") == 0
    kept = load_file(second / "model.safetensors")
    assert all(torch.allclose(kept[k], v) for k, v in trained.items())
    state = json.loads((second / "model.json").read_text())
    assert state["clip_floor"]["T"] == 2 and state["init"] == str(first / "model.safetensors")


def test_clip_floor_weights_need_clip_floor(run_dir, tmp_path, capsys):
    first = tmp_path / "t4"
    assert (
        _train(
            first, "--init", str(run_dir / "model.safetensors"), "--clip-floor", "4", "--limit-train", "32"
        )
        == 0
    )
    capsys.readouterr()
    assert _train(tmp_path / "float", "--init", str(first / "model.safetensors")) != 0
    assert "clip-floor weights; continue them with --clip-floor T" in capsys.readouterr().err
