"""``convert()``: the conversion pipeline, step by step (trace, calibrate, allocate windows, assemble).

1. trace the ANN with torch.fx into populations and synapse paths, BatchNorm and pooling folded
   (``conversion.trace``, ``converter.snn.fold``), and check the result computes what the model computes
   (``conversion.selfcheck``);
2. calibrate a threshold ``lam_l`` per neuron layer for its window ``T_l`` (``conversion.calibrate``,
   ``conversion.error_aware``), or read it from a clip-floor trained activation;
3. choose the windows: given, trained, or allocated within an accuracy budget (``conversion.allocate``);
4. assemble the ``SpikingNetwork`` (fan-outs and ANN MACs counted once, ``converter.snn.counting``);
5. with ``method="reconstruct"``, tune weights, thresholds and corrections block by block at the chosen
   windows (``conversion.reconstruct``; the windows are chosen with error-aware calibration).
"""

from __future__ import annotations

import datetime as dt
import platform
from typing import Any

import torch
from torch import Tensor, nn

from converter.conversion.allocate import allocate_windows, windows_for_total
from converter.conversion.calibrate import Calibration, calibrate
from converter.conversion.error_aware import calibrate_error_aware
from converter.conversion.reconstruct import reconstruct
from converter.conversion.selfcheck import self_check
from converter.conversion.trace import trace_model
from converter.progress import stage
from converter.snn.engines import ann
from converter.snn.graph import Graph
from converter.snn.model import InputSpec, check_pixels
from converter.snn.network import SpikingNetwork
from converter.snn.windows import check_windows, latency_target, uniform


def _calibrate(
    graph: Graph,
    images: Tensor,
    fixed: dict[str, Tensor],
    cal: Calibration,
    windows: dict[str, int],
    shift: float,
    batch_size: int,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, dict]]:
    """Thresholds, bias corrections and the per-layer report for these windows."""
    if cal.method in ("error-aware", "reconstruct"):  # reconstruct starts from error-aware
        return calibrate_error_aware(
            graph,
            images,
            windows,
            shift,
            per_channel=cal.per_channel,
            bias_correction=cal.bias_correction,
            fixed=fixed,
        )
    lams, report = calibrate(graph, images, cal, windows, shift, batch_size, skip=frozenset(fixed))
    for p in graph.neurons:  # a clipped ReLU's threshold never exceeds its clip
        if p.clip is not None and p.name in lams:
            lams[p.name] = lams[p.name].clamp_max(p.clip)
    for k, v in fixed.items():
        lams[k] = v.float()
        report[k] = {"lam": v.tolist(), "method": "trained clip-floor"}
    return lams, {}, report


def convert(
    model: nn.Module,
    calibration_images: Tensor,
    *,
    T: int | dict[str, int] | str = 16,
    shift: float = 0.5,
    method: str = "percentile",
    percentile: float = 99.99,
    per_channel: bool = False,
    bias_correction: bool = True,
    holdout: tuple[Tensor, Tensor] | None = None,
    max_drop: float = 0.1,
    max_T: int = 32,
    name: str | None = None,
    version: str = "1",
    labels: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
    batch_size: int = 128,
) -> SpikingNetwork:
    """Trace ``model`` (pixels in [0, 1] in, logits out), calibrate thresholds, return the TSC-SNN.

    ``T`` is one window for every layer, per-layer windows by population name, ``"trained"`` (the levels a
    clip-floor network was trained with, layer by layer: lossless), ``"auto"``: the windows
    with the fewest total timesteps whose accuracy on ``holdout`` (images, labels; default: the calibration
    images labelled by the ANN) stays within ``max_drop`` points of the ANN's (``allocate``), or
    ``"latency:N"``: windows whose latency is exactly ``N`` steps, the spare steps placed by ``holdout``.
    """
    if calibration_images.dim() != 4 or calibration_images.shape[0] == 0:
        raise ValueError(
            f"calibration images must be a non-empty (N, C, H, W) batch, got "
            f"{tuple(calibration_images.shape)}"
        )
    target = latency_target(T)
    if not (T in ("auto", "trained") or target or isinstance(T, (int, dict))) or isinstance(T, bool):
        raise ValueError(
            f"T must be a number of steps, per-layer windows, 'trained', 'auto' or 'latency:N', got {T!r}"
        )
    if T == "auto" and not (max_T >= 1 and max_drop >= 0):
        raise ValueError(f"T='auto' needs max_T >= 1 and max_drop >= 0, got {max_T} and {max_drop}")
    images = calibration_images.detach().float()
    check_pixels(images, "calibration images must be pixels")
    cal = Calibration(method, percentile, per_channel, bias_correction)
    modes = {m: m.training for m in model.modules()}
    try:
        # 1. trace: populations and synapse paths, BatchNorm and pooling folded; checked against the model
        with stage("tracing the model and checking the converted graph against it"):
            graph, fixed = trace_model(model, images[:1])
            self_check(model, images)
    finally:
        for m, training in modes.items():  # the user's model as it was, frozen BatchNorms included
            m.training = training
    described = {
        "source_model": type(model).__name__,
        "converted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **(provenance or {}),
    }

    made: list[SpikingNetwork] = []  # the first network; later calibrations share its fan-outs and counts

    def calibrated(windows: dict[str, int]) -> SpikingNetwork:
        # 2. calibrate: a threshold (and bias correction) per neuron layer for these windows
        with stage(f"calibration ({cal.describe()}, {images.shape[0]} images)"):
            lams, corrections, report = _calibrate(graph, images, fixed, cal, windows, shift, batch_size)
        calibration = {"method": cal.describe(), "images": images.shape[0], "layers": report}
        if made:
            return made[0].with_windows(windows).with_calibration(lams, corrections, calibration)
        made.append(
            SpikingNetwork(
                graph,
                lams,
                windows,
                shift,
                name=name or type(model).__name__.lower(),
                version=version,
                labels=labels or [str(i) for i in range(graph.output.size)],
                input_spec=InputSpec(*images.shape[1:]),
                calibration=calibration,
                provenance=described,
                corrections=corrections,
            )
        )
        return made[0]

    if T == "trained":
        untrained = [p.name for p in graph.populations if p.kind in ("input", "neuron") and not p.quantised]
        if untrained:
            raise ValueError(f"T='trained' needs a clip-floor trained network; {untrained} are not quantised")
        T = {p.name: int(p.quantised[0]) for p in graph.populations if p.kind in ("input", "neuron")}
    if T != "auto" and target is None:
        net = calibrated(check_windows(graph, uniform(graph, T) if isinstance(T, int) else T))
        return _reconstructed(net, images, fixed) if cal.method == "reconstruct" else net
    # 3. allocate: per-layer windows within the accuracy budget (or for a latency), judged on held-out images
    if holdout is None:
        holdout = (images, ann.forward(graph, images, lams=fixed).argmax(1))
    if holdout[0].shape[0] == 0 or holdout[0].shape[0] != holdout[1].shape[0]:
        raise ValueError("the held-out set needs images and as many labels, at least one of each")
    with stage(f"window allocation ({T}, judged on {holdout[0].shape[0]} held-out images)"):
        if target is not None:
            net, report = windows_for_total(
                graph, holdout[0].float(), holdout[1], total=target, calibrated=calibrated
            )
        else:
            net, report = allocate_windows(
                graph, holdout[0].float(), holdout[1], max_drop=max_drop, calibrated=calibrated, max_T=max_T
            )
    net = net.with_calibration(net.lams, net.corrections, {**net.calibration, "allocation": report})
    return _reconstructed(net, images, fixed) if cal.method == "reconstruct" else net


def _reconstructed(net: SpikingNetwork, images: Tensor, fixed: dict[str, Tensor]) -> SpikingNetwork:
    """``net`` (error-aware, at its final windows) with weights, thresholds and corrections reconstructed."""
    graph, lams, corrections, report = reconstruct(
        net.graph, images, net.windows, net.shift, net.lams, net.corrections, fixed=fixed
    )
    layers = {k: {**net.calibration["layers"].get(k, {}), **v} for k, v in report.items()}
    return net.with_weights(
        graph, lams, corrections, {**net.calibration, "layers": layers, "weights": "reconstructed"}
    )
