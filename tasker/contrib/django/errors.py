"""tasker's errlog entries as the parts of Django's `TaskError`s (exception
class path, traceback); pure text work, no Django needed."""

from __future__ import annotations

import builtins
import re

_ENTRY = re.compile(r"^\[attempt \d+ on [^\]]*\] ?", re.MULTILINE)
_NAME = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
FALLBACK = "tasker.exceptions.TaskerError"
"""The class path of an entry that names no exception (a timeout, a cancel, bad input)."""


def task_errors(errlog: str) -> list[tuple[str, str]]:
    """(exception class path, traceback) per errlog entry, oldest first."""
    heads = list(_ENTRY.finditer(errlog))
    out = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(errlog)
        body = errlog[head.end() : end]
        reason, _, rest = body.partition("\n")
        lines = [line[2:] if line.startswith("  ") else line for line in rest.splitlines()]
        text = "\n".join(lines) if lines else reason
        out.append((class_path(reason, lines), text))
    return out


def class_path(reason: str, traceback_lines: list[str]) -> str:
    """The exception's `module.QualName`: the traceback's last line names it
    with its module (Python prints `builtins` ones bare); `reason` starts
    with its qualified name."""
    m = _NAME.match(reason)
    if m is None:
        return FALLBACK
    name = m.group(1)
    wanted = re.compile(r"^((?:[A-Za-z_]\w*\.)*)" + re.escape(name) + r"(?::|$)")
    for line in reversed(traceback_lines):
        found = wanted.match(line)
        if found and found.group(1):
            return found.group(1) + name
    if "." not in name and isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    return name if "." in name else FALLBACK
