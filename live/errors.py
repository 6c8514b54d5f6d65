"""The one exception type users see: what went wrong, where, and how to fix it."""


class LiveError(Exception):
    """A problem the user can fix. The CLI prints it as one clean message, never a traceback."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}\n  fix: {self.fix}" if self.fix else self.what
