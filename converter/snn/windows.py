"""Per-layer windows and the time schedule they imply (spec section 1).

Every speaking population owns a window of ``T_l`` steps: the input pixels, each neuron layer, and each
max-pool switch (which shares its source's window). A neuron layer speaks as soon as the latest of its
sources has finished speaking::

    start(input) = 0
    start(p)     = max over terms t of  end(source_t),      end(p) = start(p) + T_p

Its *integration span* is the ``max_t T_source_t`` steps before ``start(p)``: every term is delayed by
``delay_t = start(p) - end(source_t)`` steps so that all off-spikes arrive together at ``start(p)``.
The output layer integrates the same way and is read at ``timesteps = max_t end(source_t)``: the sum of
``T_l`` along the longest path (input window included). With one ``T`` everywhere this is ``L * T``.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.snn.graph import Graph, Population, Term


def speaking(graph: Graph) -> list[str]:
    """Populations that own a window of their own: the input and every neuron layer."""
    return [p.name for p in graph.populations if p.kind in ("input", "neuron")]


def uniform(graph: Graph, T: int) -> dict[str, int]:
    """The same window ``T`` for every population that owns one."""
    return dict.fromkeys(speaking(graph), T)


def windows_on_longest_path(graph: Graph) -> int:
    """How many windows the longest path crosses: the latency with one step per window."""
    return Schedule.build(graph, uniform(graph, 1)).total


def latency_target(T: object) -> int | None:
    """``N`` for ``T = "latency:N"`` (windows chosen for a latency of exactly ``N`` steps), else None."""
    if not isinstance(T, str) or not T.startswith("latency:"):
        return None
    value = T.removeprefix("latency:")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"T='latency:N' needs a positive whole number of steps, got {T!r}")
    return int(value)


MAX_WINDOW = 1 << 16


def check_windows(graph: Graph, windows: dict[str, int]) -> dict[str, int]:
    """``windows`` as plain ints, or ``ValueError`` naming the missing, unknown or out-of-range entry."""
    want = speaking(graph)
    missing = [n for n in want if n not in windows]
    unknown = sorted(set(windows) - set(want))
    if missing or unknown:
        raise ValueError(f"windows must name exactly {want}; missing {missing}, unknown {unknown}")
    out = {}
    for name in want:
        value = windows[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_WINDOW:
            raise ValueError(f"window of {name!r} must be 1..{MAX_WINDOW} steps, got {value!r}")
        if int(value) != value:
            raise ValueError(f"window of {name!r} must be a whole number of steps, got {value!r}")
        out[name] = int(value)
    return out


@dataclass(frozen=True)
class Schedule:
    """When each population speaks (``start``, ``length``) and integrates (``span`` steps before it)."""

    start: dict[str, int]  # first step of the speaking window; output: the step its potential is read
    length: dict[str, int]  # T of the speaking window (switch: its source's); output: 0
    span: dict[str, int]  # neuron / output: steps it integrates, ending at ``start``
    total: int  # latency: the step the output is read

    @classmethod
    def build(cls, graph: Graph, windows: dict[str, int]) -> Schedule:
        """The schedule of ``graph`` with the (checked) ``windows``."""
        start: dict[str, int] = {}
        length: dict[str, int] = {}
        span: dict[str, int] = {}
        for p in graph.populations:
            if p.kind == "input":
                start[p.name], length[p.name] = 0, windows[p.name]
            elif p.kind == "switch":
                start[p.name], length[p.name] = start[p.source], length[p.source]
            else:
                ends = [start[t.source] + length[t.source] for t in p.terms]
                start[p.name] = max(ends)
                span[p.name] = max(length[t.source] for t in p.terms)
                length[p.name] = windows[p.name] if p.kind == "neuron" else 0
        return cls(start, length, span, start[graph.output.name])

    def end(self, name: str) -> int:
        """The step of the shared off-spike that closes ``name``'s speaking window."""
        return self.start[name] + self.length[name]

    def delay(self, term: Term, target: Population) -> int:
        """Steps a term's spikes are delayed so its off-spikes arrive when ``target`` starts speaking."""
        return self.start[target.name] - self.end(term.source)

    def updates(self, p: Population) -> int:
        """Neuron-state additions per neuron: every step it integrates or speaks (spec section 6)."""
        if p.kind == "neuron":
            return self.span[p.name] + self.length[p.name]
        return self.span[p.name] if p.kind == "output" else 0
