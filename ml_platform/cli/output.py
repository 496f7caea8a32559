"""What the command shows: plain lines and rich styling, on the current stdout and stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text


def console(err: bool = False) -> Console:
    """A rich console on the current stdout (or stderr), built per use so captures see it.

    Args:
        err: write to stderr instead of stdout.

    Returns:
        A console that never wraps lines, highlights nothing and reads no markup.
    """
    return Console(
        file=sys.stderr if err else sys.stdout, highlight=False, soft_wrap=True, markup=False
    )


def echo(text: str = "", *, style: str = "", err: bool = False) -> None:
    """Show one line (styled on a terminal, plain otherwise).

    Args:
        text: the line, shown as is (no markup).
        style: a rich style, e.g. ``"bold red"``; ignored when the output is not a terminal.
        err: write to stderr instead of stdout.
    """
    console(err).print(Text(text, style=style))
