"""Tests of the deployment: the image's way of running the server, the Kubernetes and KServe manifests."""
