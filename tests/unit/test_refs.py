"""BackendRef: the one reading and writing of `status.backend`."""

from __future__ import annotations

import pytest

from modelplane.api.refs import BackendRef


def test_round_trip() -> None:
    ref = BackendRef("mp-system", "sls-abc")
    assert str(ref) == "mp-system/sls-abc"
    assert BackendRef.parse(str(ref)) == ref


@pytest.mark.parametrize("value", [None, "", "sls-abc", "/sls-abc", "mp-system/", "a/b/c", 3])
def test_parse_rejects_what_is_not_namespace_slash_name(value: object) -> None:
    assert BackendRef.parse(value) is None
