"""Deployment configurations of the service; deploy.ray holds its Ray Serve application."""
