"""Brute-force synapse counts for small networks: the reference the counting code is tested against."""

from __future__ import annotations

import torch

from converter import SpikingNetwork


def brute_force_fanouts(net: SpikingNetwork) -> dict[str, torch.Tensor]:
    """Distinct targets per source neuron: non-zeros of each composite map ``sum_t J_t`` (dense, float64)."""
    graph = net.graph.to(torch.float64)
    fanouts = {
        p.name: torch.zeros(p.size, dtype=torch.float64) for p in graph.populations if p.kind != "output"
    }
    for p in graph.populations:
        for source in {t.source for t in p.terms}:
            shape = graph.by_name[source].shape
            n = torch.Size(shape).numel()
            basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
            composite = 0
            for t in (t for t in p.terms if t.source == source):
                y = basis
                for op in t.ops:
                    y = op.forward(y, bias=False)
                composite = composite + y.reshape(n, -1)
            fanouts[source] += (composite != 0).sum(1).double()
    return fanouts


def assert_exact_counts(net: SpikingNetwork) -> None:
    """Fan-outs equal the brute-force count of distinct synapses, layer by layer."""
    exact = brute_force_fanouts(net)
    for layer, fanout in net.fanouts.items():
        assert torch.equal(fanout, exact[layer]), layer
