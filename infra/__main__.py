"""Pulumi entry point (run from this directory: `pulumi up -s <stack>`)."""

from modelplane_infra.program import main

main()
