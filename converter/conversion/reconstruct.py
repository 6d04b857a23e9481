"""Reconstruction calibration: post-training, no labels, block by block (spec section 10).

It starts from the error-aware thresholds and bias corrections (``error_aware``). The populations are cut
into *blocks* wherever one population carries everything the later layers read (a residual block, a conv
and its ReLU, the classifier). Block by block, in order, with the blocks before it already reconstructed,
the block's weights ``W`` (zeros stay zero, so synapses and counts do not change), bias corrections ``c``
and thresholds ``lam`` are tuned by Adam so that the quantised block reproduces the float ANN's output
``a_exit`` of the block on the calibration images:

    zq_l = sum_t W_t x_src + c_l,     q_l = lam_l * clip(floor(T_l zq_l / lam_l + s), 0, T_l) / T_l
    x_src = q_src, or with probability p_drop per element the float a_src     (QDrop; training only)
    min over (W, c, lam) of  mean (q_exit - a_exit)^2                          (logits for the output block)

``floor`` passes its gradient straight through, which gives ``lam`` LSQ's gradient: ``q/lam - zq/lam``
inside the range, 1 above it. Then the whole network is tuned the same way against the ANN's logits,
``min mean (logits_q(x') - logits_ANN(x'))^2``, on calibration images ``x'`` flipped and shifted at random
(the ANN's answer on the same ``x'`` is the target, so no label and no assumption about the images).
The result is a TSC-SNN of the same graph whose weights and thresholds differ from the ANN's, so its
engines agree on it exactly as on any other; the float network with these weights is its own ANN, while
the report measures it against the original ANN.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from converter.progress import steps
from converter.snn.engines import ann
from converter.snn.graph import Graph, Population
from converter.snn.ops import Op, run_chain
from converter.snn.quantise import dequantised, lam_view, levels

ITERATIONS = 600  # Adam steps per block
NETWORK_ITERATIONS = 600  # Adam steps of the whole network at the end, against the ANN's logits
NETWORK_LR_SCALE = 0.1  # of the blocks' rates
BATCH = 32
DROP = 0.5  # QDrop: share of the block's input and inner elements taken from the float ANN while training
LR_WEIGHTS = 1e-3
LR_THRESHOLDS = 1e-3
TRAINED = ("weight", "bias", "scale")  # op tensors the reconstruction tunes
CHUNK = 256  # images per batch when a block's quantised outputs are computed for every image


def _sources(p: Population) -> list[str]:
    """The populations ``p`` reads."""
    return [p.source] if p.kind == "switch" else [t.source for t in p.terms]


def blocks(graph: Graph) -> list[list[Population]]:
    """The populations after the input, cut after every one that alone carries what later layers read."""
    pops = graph.populations
    index = {p.name: i for i, p in enumerate(pops)}
    last_read = list(range(len(pops)))
    for j, p in enumerate(pops):
        for s in _sources(p):
            last_read[index[s]] = max(last_read[index[s]], j)
    out: list[list[Population]] = []
    current: list[Population] = []
    for i in range(1, len(pops)):
        current.append(pops[i])
        if max(last_read[:i], default=0) <= i:
            out.append(current)
            current = []
    return out


def _quantise(z: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """TSC's clip-and-quantise map with a straight-through gradient of ``floor`` (LSQ's for ``lam``)."""
    lam = lam_view(lam.abs().clamp_min(1e-6), z.dim())
    y = (z / lam).clamp(0, 1)
    d = levels(z.detach(), T / lam.detach(), T, shift) / T
    return (y + (d - y).detach()) * lam


def _drop(q: Tensor, a: Tensor, gen: torch.Generator) -> Tensor:
    """QDrop: each element the quantised ``q``, or with probability ``DROP`` the float ``a``."""
    return torch.where(torch.rand(q.shape, generator=gen) < DROP, a, q)


def _augmented(x: Tensor, gen: torch.Generator) -> Tensor:
    """A batch flipped left-right (each image with probability 1/2) and shifted by up to 1/8 of its size.

    The ANN's answer on the same augmented images is the target, so any change of the input is valid."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, *[1] * (x.dim() - 1))
    x = torch.where(flip, x.flip(-1), x)
    pad = max(1, x.shape[-1] // 8)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return F.pad(x, (pad,) * 4)[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def _float_activations(graph: Graph, x: Tensor, fixed: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ANN's activations of every population (a clip-floor trained layer keeps its levels)."""
    act: dict[str, Tensor] = {}
    ann.forward(graph, x, lams=fixed, activations=act)
    return act


class _Block:
    """One block's trainable copy: its ops (tensors in ``TRAINED``), thresholds and bias corrections."""

    def __init__(
        self,
        pops: list[Population],
        done: dict[int, Op],
        lams: dict[str, Tensor],
        corrections: dict[str, Tensor],
        fixed: dict[str, Tensor],
    ) -> None:
        self.pops = pops
        self.ops: dict[int, Op] = {}  # id of the original op -> its trainable copy
        self.masks: list[tuple[Tensor, Tensor]] = []  # (weight, where it may be nonzero)
        weights: list[Tensor] = []
        for p in pops:
            for t in p.terms:
                for op in t.ops:
                    if id(op) in done or id(op) in self.ops:
                        continue
                    tensors = {
                        k: v.detach().clone().float().requires_grad_()
                        for k, v in op.tensors().items()
                        if k in TRAINED and v.is_floating_point()
                    }
                    self.ops[id(op)] = replace(op, **tensors) if tensors else op
                    weights += tensors.values()
                    self.masks += [(v, v != 0) for v in tensors.values() if bool((v == 0).any())]
        self.done = done
        self.lams = {
            p.name: lams[p.name].detach().clone().float().requires_grad_(p.name not in fixed)
            for p in pops
            if p.kind == "neuron"
        }
        self.corrections = {
            p.name: (
                corrections[p.name].detach().clone().float()
                if p.name in corrections
                else torch.zeros(p.shape[0])
            ).requires_grad_()
            for p in pops
            if p.kind in ("neuron", "output")
        }
        thresholds = [v for v in self.lams.values() if v.requires_grad]
        self.optimizer = torch.optim.Adam(
            [
                {"params": weights + list(self.corrections.values()), "lr": LR_WEIGHTS},
                {"params": thresholds, "lr": LR_THRESHOLDS},
            ]
        )

    def op(self, op: Op) -> Op:
        """The op as this block computes it: its trainable copy, or an earlier block's result."""
        return self.ops.get(id(op)) or self.done.get(id(op), op)

    def forward(
        self,
        inputs: dict[str, Tensor],
        windows: dict[str, int],
        shift: float,
        floats: dict[str, Tensor] | None,
        gen: torch.Generator,
    ) -> dict[str, Tensor]:
        """The block's quantised activations from its inputs (QDrop against ``floats`` when given)."""
        act = dict(inputs)
        exit_ = self.pops[-1].name
        for p in self.pops:
            if p.kind == "switch":
                act[p.name] = p.pool(act[p.source])
                continue
            z = sum(run_chain([self.op(op) for op in t.ops], act[t.source]) for t in p.terms)
            z = z + lam_view(self.corrections[p.name], z.dim())
            if p.kind == "output":
                act[p.name] = z
                continue
            q = _quantise(z, self.lams[p.name], windows[p.name], shift)
            act[p.name] = q if floats is None or p.name == exit_ else _drop(q, floats[p.name], gen)
        return act

    def step(self, loss: Tensor, lr_scale: float) -> None:
        """One Adam step at ``lr_scale`` of the base rates; zeros of the weights kept, clips respected."""
        for g, base in zip(self.optimizer.param_groups, (LR_WEIGHTS, LR_THRESHOLDS), strict=True):
            g["lr"] = base * lr_scale
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for w, mask in self.masks:
                w.mul_(mask)
            for p in self.pops:
                if p.kind == "neuron" and p.clip is not None:
                    self.lams[p.name].clamp_(max=p.clip)

    def results(self) -> dict[int, Op]:
        """The trained ops, detached, by id of the original op."""
        return {
            k: replace(op, **{n: t.detach() for n, t in op.tensors().items()}) for k, op in self.ops.items()
        }


def reconstruct(
    graph: Graph,
    images: Tensor,
    windows: dict[str, int],
    shift: float,
    lams: dict[str, Tensor],
    corrections: dict[str, Tensor],
    *,
    fixed: dict[str, Tensor] | None = None,
    iterations: int | None = None,
    network_iterations: int | None = None,
    seed: int = 0,
) -> tuple[Graph, dict[str, Tensor], dict[str, Tensor], dict[str, dict]]:
    """Weights, thresholds and bias corrections tuned block by block, then together against the ANN's
    logits; the graph, lams, corrections and report."""
    fixed = fixed or {}
    iterations = ITERATIONS if iterations is None else iterations
    network_iterations = NETWORK_ITERATIONS if network_iterations is None else network_iterations
    gen = torch.Generator().manual_seed(seed)
    x = images.float()
    n = x.shape[0]
    floats = _float_activations(graph, x, fixed)
    quant = {"input": dequantised(x, torch.ones(()), windows["input"], shift)}
    done: dict[int, Op] = {}
    new_lams, new_corrections = dict(lams), dict(corrections)
    report: dict[str, dict] = {}
    for block in steps(blocks(graph), "reconstruction, block by block"):
        names = {p.name for p in block}
        inputs = sorted({s for p in block for s in _sources(p) if s not in names})
        b = _Block(block, done, lams, corrections, fixed)
        exit_ = block[-1].name
        losses: list[float] = []
        trainable = bool(b.optimizer.param_groups[0]["params"] or b.optimizer.param_groups[1]["params"])
        drops = any(p.kind == "neuron" for p in block)  # QDrop where the block itself quantises
        for i in range(iterations if trainable else 0):
            idx = torch.randint(n, (min(BATCH, n),), generator=gen)
            given = {s: _drop(quant[s][idx], floats[s][idx], gen) if drops else quant[s][idx] for s in inputs}
            out = b.forward(given, windows, shift, {k: v[idx] for k, v in floats.items() if k in names}, gen)
            loss = (out[exit_] - floats[exit_][idx]).pow(2).mean()
            b.step(loss, 0.5 * (1 + math.cos(math.pi * i / iterations)))
            losses.append(float(loss.detach()))
        done.update(b.results())
        with torch.no_grad():
            parts = [
                b.forward({s: quant[s][k : k + CHUNK] for s in inputs}, windows, shift, None, gen)
                for k in range(0, n, CHUNK)
            ]
        for p in block:
            quant[p.name] = torch.cat([part[p.name] for part in parts]).detach()
            a = floats[p.name]
            err = float((quant[p.name] - a).pow(2).mean() / a.pow(2).mean().clamp_min(1e-12))
            report[p.name] = {"method": "reconstruct", "relative_output_error": err}
            if p.name in b.lams:
                new_lams[p.name] = b.lams[p.name].detach().to(lams[p.name].dtype)
                report[p.name]["lam"] = new_lams[p.name].tolist()
            if p.name in b.corrections:
                new_corrections[p.name] = b.corrections[p.name].detach()
        if losses:
            report[exit_]["block_loss"] = _ends(losses)
    rebuilt = graph.map_ops(lambda op: done.get(id(op), op))
    if not network_iterations:
        return rebuilt, new_lams, new_corrections, report
    whole = _Block(rebuilt.populations[1:], {}, new_lams, new_corrections, fixed)
    losses = []
    for i in range(network_iterations):
        xa = _augmented(x[torch.randint(n, (min(BATCH, n),), generator=gen)], gen)
        with torch.no_grad():
            target = ann.forward(graph, xa, lams=fixed)
        given = {"input": dequantised(xa, torch.ones(()), windows["input"], shift)}
        out = whole.forward(given, windows, shift, None, gen)[graph.output.name]
        loss = (out - target).pow(2).mean()
        whole.step(loss, NETWORK_LR_SCALE * 0.5 * (1 + math.cos(math.pi * i / network_iterations)))
        losses.append(float(loss.detach()))
    report[graph.output.name]["network_loss"] = _ends(losses)
    tuned = whole.results()
    lams_out = {k: v.detach().to(lams[k].dtype) for k, v in whole.lams.items()}
    corrections_out = {k: v.detach() for k, v in whole.corrections.items()}
    for k, v in lams_out.items():
        report[k]["lam"] = v.tolist()
    return rebuilt.map_ops(lambda op: tuned.get(id(op), op)), lams_out, corrections_out, report


def _ends(losses: list[float]) -> dict[str, float]:
    """Mean loss over the first and the last twentieth of the steps."""
    k = max(1, len(losses) // 20)
    return {"first": sum(losses[:k]) / k, "last": sum(losses[-k:]) / k}
