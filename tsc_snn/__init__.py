"""The ``tsc-snn`` command: one entry to the converter's commands and the server."""
