"""modelplane: a self-hosted inference platform for Kubernetes."""

__version__ = "0.1.0"
