"""HTTP model server for TSC spiking networks: classify images and report the spiking cost of each answer."""

__version__ = "0.1.0"
