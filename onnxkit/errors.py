"""The one error type for mistakes a user can make (bad file, bad shape, unknown name)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OnnxkitError(Exception):
    """A user-facing error: the message says what was wrong and what to do.

    The CLI prints it on one or two lines and exits with status 1.
    """


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for close matches of `name`, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
