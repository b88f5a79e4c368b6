"""modelplane.adapters."""
