"""The parts of a show and the one lifecycle they share, plus the tables of kinds the show file chooses from.

Every source, stage, sink, transport and engine is a `Part`: constructing one reads its settings and opens nothing;
`open()` acquires its device, file, port or model and says in one line what it got; `close()` releases it in
bounded time (it never hangs, and is safe to call twice); `stats()` and `status()` report on it for the HUD,
`/live/status` and the summary. A new kind of part is one module plus one `register` line in its table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from live.errors import LiveError

F = TypeVar("F", bound=Callable[..., Any])


@runtime_checkable
class Part(Protocol):
    """What the player needs of anything it opens."""

    def open(self) -> str: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def status(self) -> str: ...


class Kinds(Generic[F]):
    """A table of kinds by name (a source's URL scheme, a sink's `kind`, a stage's `kind`, ...).

    `register` adds one, also from outside the package (a test, a plug-in), so the show file can name it."""

    def __init__(self, what: str, where: str) -> None:
        self.what, self.where = what, where  # e.g. "sink", "[[outputs]] kind"
        self._kinds: dict[str, F] = {}

    def register(self, name: str, factory: F | None = None):
        """`KINDS.register("name", factory)`, or `@KINDS.register("name")` over a class or function."""
        if factory is None:
            return lambda f: self.register(name, f)
        self._kinds[name] = factory
        return factory

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def get(self, name: str) -> F:
        """The factory for `name`; LiveError listing the kinds there are."""
        try:
            return self._kinds[name]
        except KeyError:
            raise LiveError(f"{self.where} = '{name}' is not a known {self.what}",
                            f"use one of: {', '.join(self.names())}") from None
