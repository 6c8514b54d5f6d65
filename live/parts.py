"""The parts of a show and the one lifecycle they share, plus the tables of kinds the show file chooses from.

Every source, stage, sink, transport and engine is a `Part`: constructing one reads its settings and opens nothing;
`open()` acquires its device, file, port or model and says in one line what it got; `close()` releases it in
bounded time (it never hangs, and is safe to call twice); `stats()` and `status()` report on it for the HUD,
`/live/status` and the summary. A new kind of part is one module plus one `register` line in its table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from live.errors import LiveError

F = TypeVar("F", bound=Callable[..., Any])


class Part(Protocol):
    """What the player needs of anything it opens."""

    def open(self) -> str: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def status(self) -> str: ...


def open_in_order(parts: list[Part], opened: list[Part], say: Callable[[str], None] = print,
                  announce: Callable[[str], None] | None = None) -> list[str]:
    """Open each part in order, each added to `opened` before it opens (a part that fails half-way is closed too);
    if one raises, close all of `opened` in reverse and re-raise. Returns the lines they said; `announce`, when
    given, gets each line as soon as its part is open."""
    lines = []
    try:
        for part in parts:
            opened.append(part)
            line = part.open()
            if line:
                lines.append(line)
                if announce:
                    announce(line)
    except BaseException:
        close_in_reverse(opened, say)
        raise
    return lines


def close_in_reverse(opened: list[Part], say: Callable[[str], None] = print) -> None:
    """Close and remove every part of `opened`, last first; one that fails to close is said and the rest close."""
    while opened:
        part = opened.pop()
        try:
            part.close()
        except Exception as err:  # a device that fails to close must not keep the others open
            say(f"Close: {type(part).__name__} did not close cleanly ({err})")


class BasePart:
    """Defaults for a part with nothing to open, release or report: subclasses override what they have."""

    def open(self) -> str:
        return ""

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def status(self) -> str:
        return ""


class KindSection(BaseModel):
    """A show-file table that names its kind (`[[outputs]]`, `[[stages]]`); each kind may extend it with its own
    keys. Which model validates a table is chosen by its `kind` (a discriminated union open to new kinds)."""

    model_config = ConfigDict(extra="forbid")
    kind: str


class Kinds(Generic[F]):
    """A table of kinds by name (a source's URL scheme, a sink's `kind`, a stage's `kind`, ...).

    `register` adds one, also from outside the package (a test, a plug-in), so the show file can name it."""

    def __init__(self, what: str, where: str) -> None:
        self.what, self.where = what, where  # e.g. "sink", "[[outputs]] kind"
        self._kinds: dict[str, F] = {}
        self._sections: dict[str, type[KindSection]] = {}

    def register(self, name: str, factory: F | None = None, section: type[KindSection] = KindSection):
        """`KINDS.register("name", factory)`, or `@KINDS.register("name")` over a class or function. `section`
        is the show-file table this kind reads, where it has one."""
        if factory is None:
            return lambda f: self.register(name, f, section)
        self._kinds[name] = factory
        self._sections[name] = section
        return factory

    def validate(self, value: Any, handler: Callable[[Any], Any]) -> Any:
        """Pydantic wrap-validator: a table is validated by its own kind's section model."""
        if isinstance(value, dict) and isinstance(value.get("kind"), str):
            if value["kind"] not in self._kinds:  # the error names the key and lists the kinds there are
                known = create_model(f"{self.what} kind", kind=(Literal[tuple(self.names())], ...))
                known.model_validate({"kind": value["kind"]})
            return self._sections[value["kind"]].model_validate(value)
        return handler(value)

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
