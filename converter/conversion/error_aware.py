"""Error-aware calibration: thresholds chosen layer by layer on the *quantised* outputs of the layers before.

Layers are visited in topological order with two activations per population, the float ANN's ``a_l`` and
the TSC network's dequantised ``q_l = lam_l * d_l / T_l`` (spec section 2)::

    z_l  = sum_t W_t a_src        (float path)         zq_l = sum_t W_t q_src + c_l   (quantised path)
    c_l  = mean over images and positions of (z_l - zq_l), per channel       (bias correction, optional)
    q_l(lam) = lam * clip(floor(T_l zq_l / lam + s), 0, T_l) / T_l
    lam_l = argmin over candidates of || logits(q_1 .. q_l(lam), ANN after l) - logits(ANN) ||^2

The candidates are percentiles (99, 99.9, 99.99, 100) of the ANN's activations ``relu(z_l)`` and the lam
minimising the layer's own output error ``|| relu(z_l) - q_l(lam) ||^2``; the one chosen is the one that
leaves the smallest error at the *network output* (layers after ``l`` still float, on a subset of the
calibration images). So each ``lam_l`` accounts for the errors every layer before it already makes, and
``c_l`` removes the mean error those upstream layers push into it (as post-training quantisation's bias
correction does). The output layer gets ``c`` too. Layers whose threshold was fixed by clip-floor
training keep it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from converter.conversion.calibrate import Calibration, choose
from converter.snn.engines import ann
from converter.snn.graph import Graph, Population
from converter.snn.ops import run_chain
from converter.snn.quantise import dequantised, lam_view, levels

GRID = 24
SAMPLES = 100_000
PERCENTILES = (99.0, 99.9, 99.99, 100.0)
OBJECTIVE_IMAGES = 256


def _channel_mean(v: Tensor) -> Tensor:
    """Mean over every dimension but the channel (dim 1)."""
    return v.transpose(0, 1).reshape(v.shape[1], -1).mean(1)


def _errors(target: Tensor, z: Tensor, grid: Tensor, T: int, shift: float) -> Tensor:
    """Squared error of ``z`` quantised at each threshold of ``grid`` against ``target``."""
    lam = grid.view(-1, 1)
    q = levels(z, T / lam, T, shift) * (lam / T)
    return ((target - q) ** 2).sum(1)


def _search(
    target: Tensor, zq: Tensor, T: int, shift: float, per_channel: bool, gen: torch.Generator
) -> Tensor:
    """The threshold (scalar or per channel) minimising the squared error of the quantised ``zq``.

    A coarse grid over ``(0, max]`` first, then a fine one around its best point.
    """
    rows_t = target.transpose(0, 1).reshape(target.shape[1], -1)
    rows_z = zq.transpose(0, 1).reshape(zq.shape[1], -1)
    if not per_channel:
        rows_t, rows_z = rows_t.reshape(1, -1), rows_z.reshape(1, -1)
    keep = max(1, SAMPLES // rows_t.shape[0])
    if rows_t.shape[1] > keep:
        pick = torch.randperm(rows_t.shape[1], generator=gen)[:keep]
        rows_t, rows_z = rows_t[:, pick], rows_z[:, pick]
    top = torch.maximum(rows_t.amax(1), rows_z.amax(1))
    lams = []
    for t, z, m in zip(rows_t, rows_z, top, strict=True):
        if m <= 0:
            lams.append(torch.tensor(1.0))
            continue
        grid = m * torch.linspace(1.0 / GRID, 1.0, GRID)
        best = grid[_errors(t, z, grid, T, shift).argmin()]
        fine = torch.linspace(best - m / GRID, best + m / GRID, GRID + 1).clamp_min(m / GRID**2)
        lams.append(fine[_errors(t, z, fine, T, shift).argmin()])
    lam = torch.stack(lams)
    return lam if per_channel else lam[0]


def _candidates(
    target: Tensor, zq: Tensor, T: int, shift: float, per_channel: bool, gen: torch.Generator
) -> list[Tensor]:
    """Thresholds to choose from: percentiles of the ANN's activations and the layer-error optimum."""
    rows = target.transpose(0, 1).reshape(target.shape[1], -1)
    rows = rows if per_channel else rows.reshape(1, -1)
    keep = max(1, 4 * SAMPLES // rows.shape[0])
    if rows.shape[1] > keep:
        rows = rows[:, torch.randperm(rows.shape[1], generator=gen)[:keep]]
    vmax = target.transpose(0, 1).reshape(target.shape[1], -1).amax(1)
    vmax = vmax if per_channel else vmax.amax().reshape(1)
    out = []
    for q in PERCENTILES:
        lam = choose(rows.double(), vmax.double(), Calibration("percentile", q), T, shift).float()
        out.append(lam if per_channel else lam[0])
    return [*out, _search(target, zq, T, shift, per_channel, gen)]


def _exact(p: Population, z: Tensor, lam: Tensor | None) -> Tensor:
    """The ANN's activation: ReLU (clipped at ``p.clip`` for a clipped ReLU), or its trained clip-floor."""
    return dequantised(z, lam, *p.quantised) if lam is not None and p.quantised else z.clamp(0, p.clip)


def calibrate_error_aware(
    graph: Graph,
    images: Tensor,
    windows: dict[str, int],
    shift: float,
    *,
    per_channel: bool = False,
    bias_correction: bool = True,
    fixed: dict[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, dict]]:
    """Thresholds and bias corrections by population, chosen in order on quantised inputs; and a report."""
    fixed = fixed or {}
    gen = torch.Generator().manual_seed(0)
    x = images.float()
    n = min(OBJECTIVE_IMAGES, x.shape[0])
    reference = ann.forward(graph, x[:n], lams=fixed)
    trained_input = graph.populations[0].quantised  # the ANN as trained saw quantised pixels
    exact: dict[str, Tensor] = {
        "input": dequantised(x, torch.ones(()), *trained_input) if trained_input else x
    }
    quant: dict[str, Tensor] = {"input": dequantised(x, torch.ones(()), windows["input"], shift)}
    lams: dict[str, Tensor] = {}
    corrections: dict[str, Tensor] = {}
    report: dict[str, dict] = {}
    with torch.no_grad():
        for p in graph.populations:
            if p.kind == "input":
                continue
            if p.kind == "switch":
                exact[p.name] = p.pool(exact[p.source])
                quant[p.name] = p.pool(quant[p.source])
                continue
            z = sum(run_chain(t.ops, exact[t.source]) for t in p.terms)
            zq = sum(run_chain(t.ops, quant[t.source]) for t in p.terms)
            if bias_correction:
                c = _channel_mean(z - zq)
                corrections[p.name] = c.float()
                zq = zq + lam_view(c, zq.dim())
            if p.kind == "output":
                break
            T = windows[p.name]
            exact[p.name] = _exact(p, z, fixed.get(p.name))
            if p.name in fixed:
                lam, errors = fixed[p.name].float(), None
            else:
                candidates = _candidates(exact[p.name], zq, T, shift, per_channel, gen)
                if p.clip is not None:  # a clipped ReLU's threshold never exceeds its clip
                    candidates = [c.clamp_max(p.clip) for c in candidates]
                errors = []
                for lam in candidates:
                    acts = {k: v[:n] for k, v in quant.items()} | {p.name: dequantised(zq[:n], lam, T, shift)}
                    logits = ann.forward(graph, acts["input"], lams=fixed, given=acts)
                    errors.append(float((logits - reference).pow(2).mean()))
                lam = candidates[min(range(len(errors)), key=errors.__getitem__)]
            lams[p.name] = lam
            quant[p.name] = dequantised(zq, lam, T, shift)
            err = (exact[p.name] - quant[p.name]).pow(2).mean() / exact[p.name].pow(2).mean().clamp_min(1e-12)
            positive = exact[p.name][exact[p.name] > 0]
            above = exact[p.name] > lam_view(lam, exact[p.name].dim())
            report[p.name] = {
                "lam": lam.tolist(),
                "max": float(exact[p.name].max()),
                "clipped_fraction": float(above.sum() / max(1, positive.numel())),
                "method": "trained clip-floor" if p.name in fixed else "error-aware",
                "relative_output_error": float(err),
                "bias_correction_abs_mean": float(corrections[p.name].abs().mean())
                if bias_correction
                else 0.0,
            }
            if errors is not None:
                report[p.name]["logit_mse_by_candidate"] = dict(
                    zip(
                        [*(f"percentile {q:g}" for q in PERCENTILES), "layer-error optimum"],
                        errors,
                        strict=True,
                    )
                )
    return lams, corrections, report
