"""The service on Ray Serve: ``deploy.ray.app:app``, configured by ``deploy/ray/serve_config.yaml``."""
