"""modelplane.reconcile."""
