"""Building a TSC-SNN from a trained ANN: trace, self-check, calibrate, allocate windows (``convert``).

Everything here runs once, offline; what it builds is a ``converter.snn.SpikingNetwork``, which runs and
is served without this package.
"""
