"""Fixtures for the infra tests; the mocks and helpers live in pulumi_harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import settings as pulumi_settings
from pulumi_harness import Graph, run_stack

# The provider SDKs emit DeprecationWarnings for their own deprecated modules when a submodule
# is imported; the repository turns warnings into errors, so ignore exactly those sources.
_SDK_WARNINGS = tuple(
    pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{sdk}.*")
    for sdk in ("pulumi_aws", "pulumi_gcp", "pulumi_kubernetes")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            for mark in _SDK_WARNINGS:
                item.add_marker(mark)


@pytest.fixture(autouse=True)
def _reset_pulumi() -> Iterator[None]:
    yield
    pulumi.runtime.set_all_config({}, [])
    pulumi_settings.ROOT.set(None)


_CACHE: dict[str, Graph] = {}


@pytest.fixture
def stack_graph() -> Callable[[str], Graph]:
    """The graph of an unmodified stack file (built once per session; read-only)."""

    def get(stack: str) -> Graph:
        if stack not in _CACHE:
            _CACHE[stack] = run_stack(stack)
        return _CACHE[stack]

    return get
