"""A converted TSC-SNN as data: its graph, a threshold per neuron layer, per-layer windows, and the fan-outs
and MACs that follow from them. Engines read it (``converter.snn.engines``), checkpoints write and read it
(``converter.snn.checkpoint``); it imports neither, so that ``SpikingNetwork`` can offer both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from converter.snn.counting import ann_macs, fanouts, term_fanouts
from converter.snn.graph import Graph
from converter.snn.windows import Schedule, check_windows, uniform

N = TypeVar("N", bound="Network")  # a network class: copies keep it
T = TypeVar("T")


def _first_tensor(graph: Graph, lams: dict[str, Tensor], default: Tensor) -> Tensor:
    """The first float tensor of the thresholds or the graph (a network without neurons has no lam)."""
    return next((t for t in chain(lams.values(), graph.tensors()) if t.is_floating_point()), default)


def network_dtype(graph: Graph, lams: dict[str, Tensor]) -> torch.dtype:
    """What a network of ``graph`` and ``lams`` computes in: its tensors' float type (float32 if none)."""
    return _first_tensor(graph, lams, torch.zeros(())).dtype


def derived(cache: WeakKeyDictionary[Network, T], net: Network, make: Callable[[Network], T]) -> T:
    """What ``make`` derives from ``net``, made once per network object (copies get their own)."""
    value = cache.get(net)
    if value is None:
        value = cache[net] = make(net)
    return value


def check_pixels(images: Tensor, what: str) -> None:
    """Raise ``ValueError`` unless every value of ``images`` is a pixel in [0, 1] (NaN is not)."""
    low, high = (images.min().item(), images.max().item()) if images.numel() else (0, 0)
    if not (low >= 0 and high <= 1):  # NaN fails too
        raise ValueError(
            f"{what} in [0, 1], got values in [{low:.4g}, {high:.4g}] "
            "(divide 8-bit pixels by 255; normalise inside the model)"
        )


@dataclass(frozen=True)
class InputSpec:
    """What the network takes: pixels in [0, 1], ``channels`` x ``height`` x ``width`` (RGB when 3)."""

    channels: int
    height: int
    width: int

    def check(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is a batch this network accepts."""
        want = (self.channels, self.height, self.width)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"expected images of shape (N, {', '.join(map(str, want))}), got {tuple(images.shape)}"
            )
        check_pixels(images, "expected pixels")


class Network:
    """A converted TSC-SNN as data: graph, thresholds, per-layer windows and the counts they fix."""

    def __init__(
        self,
        graph: Graph,
        lams: dict[str, Tensor],
        T: int | dict[str, int],
        shift: float,
        *,
        name: str,
        version: str,
        labels: list[str],
        input_spec: InputSpec,
        calibration: dict[str, Any],
        provenance: dict[str, Any],
        accuracy: dict[str, Any] | None = None,
        corrections: dict[str, Tensor] | None = None,
    ) -> None:
        if isinstance(T, int) and T < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        if shift not in (0, 0.5):
            raise ValueError(f"shift must be 0 or 0.5 (spec section 2), got {shift}")
        if len(labels) != graph.output.size:
            raise ValueError(f"{len(labels)} labels for {graph.output.size} outputs")
        self.graph, self.lams, self.shift = graph, lams, float(shift)
        self.corrections = corrections or {}  # bias corrections the spiking engines add (error-aware)
        self.windows = check_windows(graph, uniform(graph, T) if isinstance(T, int) else T)
        self.schedule = Schedule.build(graph, self.windows)
        if not all(isinstance(label, (str, int)) and not isinstance(label, bool) for label in labels):
            raise ValueError(f"labels must be strings (or whole numbers), got {labels!r}")
        self.name, self.version, self.input_spec = name, version, input_spec
        self.labels = [str(label) for label in labels]
        self.calibration, self.provenance, self.accuracy = calibration, provenance, accuracy or {}
        self.term_fanouts = term_fanouts(graph)
        self.fanouts = fanouts(graph, self.term_fanouts)
        self.ann_macs = ann_macs(graph)
        first = _first_tensor(graph, lams, torch.zeros(()))
        self.dtype: torch.dtype = first.dtype  # what the engines compute in
        self.device: torch.device = first.device  # and where

    @property
    def T(self) -> int:
        """The longest window (every window, when they are uniform)."""
        return max(self.windows.values())

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same window."""
        return len(set(self.windows.values())) == 1

    @property
    def timesteps(self) -> int:
        """Latency of one inference: the sum of windows along the longest path (``L * T`` when uniform)."""
        return self.schedule.total

    def window(self, name: str) -> int:
        """Steps of the window a population speaks in (a switch shares its source's)."""
        return self.schedule.length[name]

    def lam(self, name: str) -> Tensor:
        """Threshold scale of a population (1 for input pixels and output; a switch shares its source's)."""
        p = self.graph.by_name[name]
        if p.kind in ("input", "output"):
            return torch.ones((), dtype=self.dtype)
        return self.lam(p.source) if p.kind == "switch" else self.lams[name]

    def to(self: N, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> N:
        """Copy computing in ``dtype`` (float64 for exact engine comparisons) and/or on ``device``."""
        graph = self.graph.to(dtype, device)
        lams = {k: v.to(device=device, dtype=dtype) for k, v in self.lams.items()}
        return self._copy(
            dtype=self.dtype if dtype is None else dtype,
            # read back from a moved tensor: "cuda" lands on "cuda:0"
            device=_first_tensor(graph, lams, torch.zeros((), device=device or self.device)).device,
            graph=graph,
            lams=lams,
            corrections={k: v.to(device=device, dtype=dtype) for k, v in self.corrections.items()},
            term_fanouts={k: [f.to(device) for f in v] for k, v in self.term_fanouts.items()},
            fanouts={k: v.to(device) for k, v in self.fanouts.items()},
        )

    def with_timesteps(self: N, T: int) -> N:
        """Copy with the window ``T`` in every layer (thresholds kept)."""
        if T < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        return self.with_windows(uniform(self.graph, T))

    def with_windows(self: N, windows: dict[str, int]) -> N:
        """Copy with per-layer windows (thresholds kept), naming the input and every neuron layer."""
        windows = check_windows(self.graph, windows)
        calibration = {k: v for k, v in self.calibration.items() if k != "allocation"}  # not these windows'
        return self._copy(
            windows=windows, schedule=Schedule.build(self.graph, windows), calibration=calibration
        )

    def with_calibration(
        self: N, lams: dict[str, Tensor], corrections: dict[str, Tensor], calibration: dict[str, Any]
    ) -> N:
        """Copy with other thresholds, bias corrections and calibration report (same graph and windows)."""
        return self._copy(lams=lams, corrections=corrections, calibration=calibration)

    def with_weights(
        self: N,
        graph: Graph,
        lams: dict[str, Tensor],
        corrections: dict[str, Tensor],
        calibration: dict[str, Any],
    ) -> N:
        """Copy with other weights on the same synapses (``graph`` has a zero wherever this one has), and
        other thresholds, corrections and report: the counts, which depend on the synapses only, are kept."""
        mine, theirs = list(self.graph.tensors()), list(graph.tensors())
        if len(mine) != len(theirs) or any(
            a.shape != b.shape or not torch.equal(a == 0, b == 0) for a, b in zip(mine, theirs, strict=False)
        ):
            raise ValueError("the new weights are not on the same synapses")
        return self._copy(graph=graph, lams=lams, corrections=corrections, calibration=calibration)

    def _copy(self: N, **changes: Any) -> N:
        """Shallow copy of the same class sharing the precomputed counts, with ``changes`` applied."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    @property
    def manifest(self) -> dict[str, Any]:
        """The JSON manifest (without the graph and the weights hash, which ``save`` adds)."""
        return {
            "name": self.name,
            "version": self.version,
            "T": self.T,
            "windows": self.windows,
            "shift": self.shift,
            "labels": self.labels,
            "input": {**asdict(self.input_spec), "range": [0, 1], "layout": "NCHW"},
            "latency_steps": self.timesteps,
            "depth": self.graph.depth,
            "ann_macs": self.ann_macs,
            "layers": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "shape": list(p.shape),
                    "stage": p.stage,
                    "window": p.stage,  # the stage under its former name, for clients that read it
                    "steps": self.window(p.name) if p.kind != "output" else None,
                    "start": self.schedule.start[p.name],
                    "origin": p.origin,
                    "lam": self.lams[p.name].tolist() if p.name in self.lams else None,
                }
                for p in self.graph.populations
            ],
            "calibration": self.calibration,
            "provenance": self.provenance,
            "accuracy": self.accuracy,
        }
