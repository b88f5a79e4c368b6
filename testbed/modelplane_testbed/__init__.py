"""modelplane_testbed: the world beneath modelplane on one machine.

Everything here emulates what a real cluster provides (GPU nodes, pod addresses, model-server
engines, start-up times, a node autoscaler) from what the product created; the product package
``modelplane`` never imports it (an import-linter contract enforces that). It ships separately
from the operator image.
"""
