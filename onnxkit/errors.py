"""The one error type for mistakes a user can make (bad file, bad shape, unknown name)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class OnnxkitError(Exception):
    """A user-facing error: the message says what was wrong and what to do.

    `params` lists the Python parameter names the message mentions (`max_drop`); the CLI
    shows them as its flags (`--max-drop`). It prints the error on one line and exits with status 1.
    """

    def __init__(self, message: str = "", *, params: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for close matches of `name`, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def first_few(names: Sequence[str], most: int = 3) -> str:
    """'a, b, c, ...': `names` for a message, the first `most` of them."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")
