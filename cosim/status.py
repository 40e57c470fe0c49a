"""The one-line progress display that `cosim run` and `cosim sweep` share."""

from __future__ import annotations

import sys


def write_status(line: str, final: bool = False) -> None:
    """Show ``line`` on stderr: rewritten in place on a terminal (a newline after the ``final``
    one), one line each time in a log."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line.ljust(100) + ("\n" if final else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
