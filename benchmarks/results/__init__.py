"""The results report: sweeps measured into ``docs/results/*.json``, rendered into ``docs/results.md``."""
