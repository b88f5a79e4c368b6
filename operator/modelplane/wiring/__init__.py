"""modelplane.wiring."""
