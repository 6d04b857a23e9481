"""Engines that run a converted network: ``fast`` (closed form), ``stepped`` (events per step), ``rate``
(rate-coded IF baseline) and ``ann`` (the float network the SNN approximates)."""
