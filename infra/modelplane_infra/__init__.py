"""Pulumi components that provision GPU-ready Kubernetes clusters and install modelplane."""
