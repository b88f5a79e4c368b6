"""References between objects that travel as strings in status fields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class BackendRef:
    """A Serverless tenant's shared backend, written as ``namespace/name`` in
    ``status.backend`` (the reconciler writes it; the autoscaler, the gateway and the engine
    emulator follow it to the backend's pods)."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, value: object) -> BackendRef | None:
        """The reference in ``value``; None when it is empty or not ``namespace/name``."""
        if not isinstance(value, str):
            return None
        namespace, sep, name = value.partition("/")
        if not sep or not namespace or not name or "/" in name:
            return None
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
