"""A StringNormalizer whose locale this system lacks, run under C.UTF-8 instead.

onnxruntime builds a StringNormalizer's C++ locale when the session starts: 'en_US.UTF-8' unless the node names
another, which is what skl2onnx writes for a TfidfVectorizer or CountVectorizer that lowercases. A system with no
such locale generated (most container images: only C, C.UTF-8 and POSIX) then fails to load the model at all
("Failed to construct locale with name:en_US.UTF-8"). glibc's C.UTF-8 (2.35+) folds case over all of Unicode as
en_US.UTF-8 does ('École' -> 'école'), so the model runs under it with the same answers.
"""

from __future__ import annotations

import os
import re

FALLBACK_LOCALE = "C.UTF-8"
_MISSING_LOCALE = re.compile(r"Failed to construct locale with name:\s*([^:\s]+)")


def missing_locale(reason: str) -> str | None:
    """The locale onnxruntime's error `reason` says it could not construct, or None."""
    found = _MISSING_LOCALE.search(reason)
    return found[1] if found else None


def with_fallback_locale(model: str | os.PathLike | bytes) -> bytes | None:
    """`model` (a path or its bytes) serialized with every StringNormalizer set to FALLBACK_LOCALE; None when it
    has none, or they already use it."""
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model))
    changed = False
    for node in _string_normalizers(proto.graph):
        locale = next((a.s.decode(errors="replace") for a in node.attribute if a.name == "locale"), None)
        if locale != FALLBACK_LOCALE:
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", FALLBACK_LOCALE)])
            changed = True
    return proto.SerializeToString() if changed else None


def _string_normalizers(graph):  # type: ignore[no-untyped-def]
    """The StringNormalizer nodes of `graph` and of its subgraphs (an If's branches, a Loop's body)."""
    for node in graph.node:
        if node.op_type == "StringNormalizer" and node.domain in ("", "ai.onnx"):
            yield node
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _string_normalizers(sub)
