"""Where command results go: JSON, a rich table on a terminal, or plain aligned text."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import click

from tasker.text import printable


class Out:
    """Where results go: JSON, a rich table (terminal) or plain aligned text."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stdout.isatty()

    def data(self, value: Any) -> None:
        from tasker.admin import dumps  # not at start-up: it imports the store

        click.echo(dumps(value))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        cells = [[cell(v) for v in r] for r in rows]
        if self.tty:
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text

            t = Table(title=title or None)
            for c in columns:
                t.add_column(c, no_wrap=c in ("id", "status", "pid"))
            for r in cells:  # Text: a value is shown as it is, never read as rich markup
                t.add_row(*(Text(v) for v in r))
            Console().print(t)
            return
        if title:
            click.echo(title)
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        for r in [list(columns), *cells]:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())

    def line(self, text: str) -> None:
        """One line of text output; control and bidi characters of the values
        in it are escaped (`text.printable`; newlines and tabs kept)."""
        click.echo(printable(text, keep="\n\t"))


def cell(v: Any) -> str:
    """One value as table text: `-` for None, datetimes to the second, floats
    to 0.1, control characters and bidi controls escaped (`text.printable`)."""
    if v is None:
        return "-"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return f"{v:.1f}"
    return printable(str(v))


def ago(seconds: float | None) -> str:
    """An age in seconds as `12.3s ago`, `-` when unknown."""
    return "-" if seconds is None else f"{seconds:.1f}s ago"


def id_list(ids: Sequence[int]) -> str:
    """Task ids as `1, 2, 3` for error messages."""
    return ", ".join(map(str, ids))
