"""`python manage.py tasker ...`: tasker's CLI on the project's task backend.

`tasker run` runs an instance executing the project's `@task` functions;
every other command (`status`, `tasks`, `show`, `retry`, `cancel`, `purge`,
`instances`, `pause`, `resume`, `db`, `web`, ...) is tasker's own CLI with
the backend's database and broker URLs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker.contrib.django import compat
from tasker.contrib.django.backend import TaskerBackend
from tasker.contrib.django.worker import worker_app
from tasker.exceptions import TaskerError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class Command(BaseCommand):
    """manage.py tasker [--backend ALIAS] COMMAND [ARGS...]"""

    help = (
        "tasker's CLI with the database of the project's task backend: `tasker run` "
        "executes the project's @task functions; `tasker --help` lists the rest."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="The TASKS alias to use (default: default)."
        )
        parser.add_argument("command", nargs=argparse.REMAINDER, help="A tasker command.")

    def handle(self, *args: Any, **options: Any) -> None:
        argv: list[str] = list(options["command"])
        backend = compat.task_backends[options["backend"]]
        if not isinstance(backend, TaskerBackend):
            raise CommandError(f"the task backend {options['backend']!r} is not tasker's")
        if argv[:1] == ["run"]:
            self._run(backend, argv[1:])
            return
        from tasker.cli import main

        urls = ["--database-url", backend.database_url]
        if backend.options.get("broker_url"):
            urls += ["--broker-url", backend.options["broker_url"]]
        main([*urls, *argv])

    def _run(self, backend: TaskerBackend, argv: list[str]) -> None:
        parser = argparse.ArgumentParser(
            prog="manage.py tasker run",
            description="Run an instance executing the project's @task functions.",
        )
        parser.add_argument(
            "--just-worker", action="store_true", help="Consume only; never race for master."
        )
        parser.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG level.")
        given = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if given.verbose else logging.INFO,
            format=LOG_FORMAT,
            stream=sys.stderr,
        )
        if not given.verbose:
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        try:
            app = worker_app(backend)
        except TaskerError as exc:
            raise CommandError(str(exc)) from exc
        sys.exit(app.run(master=False if given.just_worker else None))
