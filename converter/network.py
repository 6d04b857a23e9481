"""A converted TSC-SNN: graph, thresholds, per-layer windows; run it with any engine, save it, load it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from converter import engines
from converter.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from converter.counting import ann_macs, fanouts, term_fanouts
from converter.engines import ann, fast, rate
from converter.graph import Graph
from converter.results import RunResult
from converter.windows import Schedule, check_windows, uniform

LAM_PREFIX = "lam."
CORRECTION_PREFIX = "correction."


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
        low, high = (images.min().item(), images.max().item()) if images.numel() else (0, 0)
        if not (low >= 0 and high <= 1):  # NaN fails too
            raise ValueError(
                f"expected pixels in [0, 1], got values in [{low:.4g}, {high:.4g}] (divide by 255)"
            )


class SpikingNetwork:
    """A TSC spiking network converted from an ANN."""

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
        self.corrections = (
            corrections or {}
        )  # bias corrections the spiking engines add (error-aware calibration)
        self.windows = check_windows(graph, uniform(graph, T) if isinstance(T, int) else T)
        self.schedule = Schedule.build(graph, self.windows)
        self.name, self.version, self.labels, self.input_spec = name, version, list(labels), input_spec
        self.calibration, self.provenance, self.accuracy = calibration, provenance, accuracy or {}
        self.term_fanouts = term_fanouts(graph)
        self.fanouts = fanouts(graph, self.term_fanouts)
        self.ann_macs = ann_macs(graph)
        self._plans: dict[torch.dtype, fast.Plan] = {}

    def fast_plan(self) -> fast.Plan:
        """The fast engine's precomputed paths and counters for these windows and dtype (cached)."""
        if self.dtype not in self._plans:
            self._plans[self.dtype] = fast.Plan(self)
        return self._plans[self.dtype]

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type the engines compute in."""
        return next(iter(self.lams.values())).dtype if self.lams else torch.float32

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

    @property
    def device(self) -> torch.device:
        """Where the engines compute (every tensor of the network lives there)."""
        return next(iter(self.lams.values())).device if self.lams else torch.device("cpu")

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> SpikingNetwork:
        """Copy computing in ``dtype`` (float64 for exact engine comparisons) and/or on ``device``."""
        return self._copy(
            graph=self.graph.to(dtype, device),
            lams={k: v.to(device=device, dtype=dtype) for k, v in self.lams.items()},
            corrections={k: v.to(device=device, dtype=dtype) for k, v in self.corrections.items()},
            term_fanouts={k: [f.to(device) for f in v] for k, v in self.term_fanouts.items()},
            fanouts={k: v.to(device) for k, v in self.fanouts.items()},
        )

    def with_timesteps(self, T: int) -> SpikingNetwork:
        """Copy with the window ``T`` in every layer (thresholds kept)."""
        if T < 1:
            raise ValueError(f"T must be a positive number of steps, got {T}")
        return self.with_windows(uniform(self.graph, T))

    def with_windows(self, windows: dict[str, int]) -> SpikingNetwork:
        """Copy with per-layer windows (thresholds kept), naming the input and every neuron layer."""
        windows = check_windows(self.graph, windows)
        calibration = {k: v for k, v in self.calibration.items() if k != "allocation"}  # not these windows'
        return self._copy(
            windows=windows, schedule=Schedule.build(self.graph, windows), calibration=calibration
        )

    def _copy(self, **changes: Any) -> SpikingNetwork:
        """Shallow copy sharing the precomputed counts, with ``changes`` applied and no cached plans."""
        copy = object.__new__(SpikingNetwork)
        copy.__dict__.update(self.__dict__, _plans={}, **changes)
        return copy

    def run(
        self,
        images: Tensor,
        engine: str = "fast",
        rate_steps: int = 256,
        keep_durations: bool = False,
        rate_v0: float = 0.0,
    ) -> RunResult:
        """Classify a batch of pixels in [0, 1] with an engine of ``ENGINES``: logits and spec 6's counts."""
        runner = engines.engine(engine)
        options = engines.RunOptions(rate_steps, rate_v0, keep_durations)
        self.input_spec.check(images)
        with (
            torch.no_grad(),
            torch.device(self.device),
        ):  # tensors the engines create land beside the network's
            return runner.run(self, images.to(self.device), options)

    def run_rate(self, images: Tensor, steps: list[int], v0: float = 0.0) -> list[RunResult]:
        """The rate-coded baseline read out after each of ``steps`` in one simulation, neurons from ``v0``."""
        self.input_spec.check(images)
        with torch.no_grad(), torch.device(self.device):
            return rate.run(self, images.to(self.device), sorted(set(steps)), v0)

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
                    "window": p.window,
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

    def save(self, path: str | Path) -> dict[str, Any]:
        """Write a checkpoint directory (or one ``.safetensors`` file); returns the manifest written."""
        spec, tensors = self.graph.to_spec()
        tensors.update({LAM_PREFIX + k: v for k, v in self.lams.items()})
        tensors.update({CORRECTION_PREFIX + k: v for k, v in self.corrections.items()})
        return save_checkpoint(path, {**self.manifest, "graph": spec}, tensors)


def _dry_run(graph: Graph, lams: dict[str, Tensor], spec: InputSpec, path: str | Path) -> None:
    """Run one blank image through the graph so that a malformed one fails at load, not at run time."""
    by_name = graph.by_name
    dtype = next(iter(lams.values())).dtype if lams else torch.float32

    def check_shape(name: str, activation: Tensor) -> None:
        if tuple(activation.shape[1:]) != by_name[name].shape:
            raise ValueError(
                f"layer {name!r} computes {tuple(activation.shape[1:])}, not {by_name[name].shape}"
            )

    try:
        with torch.no_grad():
            x = torch.zeros(1, spec.channels, spec.height, spec.width, dtype=dtype)
            check_shape("output", ann.forward(graph, x, on_neuron=check_shape, lams=lams))
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: the graph cannot run on its own input ({first})") from None


def load(path: str | Path) -> SpikingNetwork:
    """Load and verify a checkpoint written by ``SpikingNetwork.save``."""
    manifest, tensors = load_checkpoint(path)
    try:
        graph = Graph.from_spec(manifest["graph"], tensors)
        lams = {k[len(LAM_PREFIX) :]: v for k, v in tensors.items() if k.startswith(LAM_PREFIX)}
        corrections = {
            k[len(CORRECTION_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CORRECTION_PREFIX)
        }
        missing = [p.name for p in graph.neurons if p.name not in lams]
        if missing:
            raise CheckpointError(f"{path}: no threshold for neuron layers {missing}")
        for name, c in corrections.items():
            p = graph.by_name.get(name)
            if p is None or p.kind not in ("neuron", "output") or tuple(c.shape) != p.shape[:1]:
                raise CheckpointError(
                    f"{path}: bias correction {name!r} of shape {tuple(c.shape)} fits no layer"
                )
        spec = InputSpec(**{k: int(manifest["input"][k]) for k in ("channels", "height", "width")})
        _dry_run(graph, lams, spec, path)  # before the constructor counts synapses on the graph
        net = SpikingNetwork(
            graph,
            lams,
            manifest.get("windows") or int(manifest["T"]),
            float(manifest["shift"]),
            name=manifest["name"],
            version=str(manifest["version"]),
            labels=manifest["labels"],
            input_spec=spec,
            calibration=manifest.get("calibration", {}),
            provenance=manifest.get("provenance", {}),
            accuracy=manifest.get("accuracy", {}),
            corrections=corrections,
        )
        if manifest["T"] != net.T or net.timesteps != manifest.get("latency_steps", net.timesteps):
            raise CheckpointError(f"{path}: T and latency_steps disagree with the windows")
        return net
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: manifest is incomplete or inconsistent ({type(e).__name__}: {e})"
        ) from None
