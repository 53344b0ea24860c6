"""Log set-up of `tasker run`: text for a terminal, or one JSON object a line.

`json` (`--log-format json`, TASKER_LOG_FORMAT=json) writes each record as
one JSON object on one line of stderr, through python-json-logger: `time`
(ISO 8601, UTC), `level`, `logger`, `message`, then the record's extra
fields (`action`, and `task_id`, `topic`, `attempt` on every line about a
task or logged while one executes: see `tasker.runtime.logfields`), and
`exc_info` with the traceback when there is one. Secrets are redacted
before a message is made, so both formats show `***` for them.
"""

from __future__ import annotations

import logging
import sys

from tasker.runtime.logfields import TaskFields

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(fmt: str = "text", *, verbose: bool = False) -> logging.Handler:
    """Log to stderr at INFO (DEBUG when `verbose`) in `fmt` ("text" or "json");
    returns the root handler installed. Raises ValueError for another `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = _Ours(sys.stderr)
    handler.addFilter(TaskFields())
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        ))  # fmt: skip
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Ours)]:
        root.removeHandler(old)  # configured again (in-process CLI runs): one handler of ours
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return handler


class _Ours(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """The handler `configure` installs (a host's own handlers stay)."""
