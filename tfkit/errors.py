"""What tfkit's error messages quote of a user's input or of TensorFlow's own errors: a short
printable excerpt of a value, and a TensorFlow error without its graph internals. Plain Python,
imported by every module that words an error."""

from __future__ import annotations

import re


def excerpt(value, limit: int = 60) -> str:
    """A short, printable quote of a user's value for an error message: ``repr`` (control
    characters and undecodable bytes escaped), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(value))} characters)"


def without_graph_names(message: str) -> str:
    """A TensorFlow error message without what only TensorFlow's developers read: the
    ``{{function_node ...}}`` and ``[[{{node ...}}]]`` names, ``[Op:...]``, an empty
    ``name:``; bytes that are not UTF-8 escaped."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return re.sub(r"\{\{function_node [^}]*\}\}\s*|\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]"
                  r"|\s*name: *$", "", text, flags=re.MULTILINE)


def rejection_reason(message: str) -> str:
    """The part of a TensorFlow ``InvalidArgumentError`` a user can act on: a failed check's
    text (``assertion failed: [...]``) or the op's own reason (``Invalid PNG data, size 60``),
    without the graph's node names, the ``Detected at node`` trace, or unprintable bytes."""
    text = without_graph_names(message)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assertion = next((line for line in lines if "assertion failed" in line), None)
    if assertion:
        return assertion[:500]
    noise = ("execution error", "Detected at node", "File ", "in user code", "Traceback")
    useful = [line for line in lines if not line.startswith(noise) and not line.endswith(":")]
    return (useful[-1] if useful else text.strip() or "InvalidArgumentError")[:500]


def short_reason(exc: BaseException) -> str:
    """The short cause of an OS or TensorFlow error (no traceback, no op names)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    text = without_graph_names(getattr(exc, "message", None) or str(exc)).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
