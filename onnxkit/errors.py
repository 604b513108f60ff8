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


class MissingPackage(OnnxkitError):
    """A package the task needs is not installed (or is damaged); the message gives the `pip install` line.

    Not a mistake in the options or files given: `onnxkit build --set pretrained=...` reports it as it is,
    exit status 1, where a value a recipe refuses is a malformed command line (exit status 2).
    """


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for close matches of `name` (ignoring case: only ReLU for Relu), or ''. difflib's
    default cutoff: at 0.5, 'price' suggested 'stories'."""
    by_folded: dict[str, list[str]] = {}
    for choice in choices:
        by_folded.setdefault(choice.lower(), []).append(choice)
    folded = name.lower()
    close = [folded] if folded in by_folded else difflib.get_close_matches(folded, list(by_folded), n=3, cutoff=0.6)
    named = [c for key in close for c in by_folded[key]][:3]
    return f" Did you mean: {', '.join(named)}?" if named else ""


def first_few(names: Sequence[str], most: int = 3) -> str:
    """'a, b, c, ...': `names` for a message, the first `most` of them."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def first_repeated(names: Sequence[str]) -> str | None:
    """The first of `names` that an earlier one repeats, or None (a table's columns, read by name)."""
    return next((name for j, name in enumerate(names) if name in names[:j]), None)
