"""Text that reaches an operator's terminal: stored text is shown escaped, never raw.

Certificates, reasons, remarks and dead-letter headers are written by members and by anyone
who reaches the broker; a terminal would execute the escape sequences in them (clear the
screen, rewrite earlier lines, set the window title) and show right-to-left overrides that
reverse what an operator reads. :func:`escape` is the one escaping function: every character
of Unicode categories Cc (controls, C0 and C1: ESC, CSI, CR, BEL …), Cf (format: U+202E and
the other bidirectional overrides, zero-width characters), Zl, Zp, Cs and Co becomes a
``\\uXXXX`` escape; newline and tab pass, and so does everything printable.

The composition root puts :class:`EscapingWriter` in front of stdout and stderr for every
command but the demo (whose own live display writes terminal codes on purpose), so no
command can forget it: tables, ``--json`` (a ``\\uXXXX`` inside a JSON string is the same
string, so the output stays valid JSON) and log lines alike.
"""

from __future__ import annotations

import io
import sys
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import TextIO

__all__ = ["EscapingWriter", "escape", "install"]

_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
_PASS = frozenset({"\n", "\t"})


@lru_cache(maxsize=4096)
def _escaped(char: str) -> str:
    if char in _PASS or unicodedata.category(char) not in _UNSAFE:
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every control, format and private-use character as a ``\\u`` escape."""
    if text.isprintable():  # the common case: nothing to do (newline and tab are not)
        return text
    return "".join(map(_escaped, text))


class EscapingWriter(io.TextIOBase):
    """A text stream that escapes (see :func:`escape`) what it passes to ``target``."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._target.encoding or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._target.errors

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._target.write(escape(text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()


def install() -> Callable[[], None]:
    """Put an EscapingWriter in front of sys.stdout and sys.stderr; returns the undo."""
    out, err = sys.stdout, sys.stderr
    if not isinstance(out, EscapingWriter):
        sys.stdout = EscapingWriter(out)
    if not isinstance(err, EscapingWriter):
        sys.stderr = EscapingWriter(err)

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err

    return restore
