"""An instance: instance row, heartbeat and election, master services, consumer.

APScheduler runs the beat (re-timed from the core row after each beat), one
job per topic on its `spec` that wakes the dispatcher, the rescue pass and
periodic inserts. The master-only services run in every eligible instance
and do nothing unless the elector vouches for a live term, so gaining or
losing the lease starts and stops nothing but a wake-up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from tasker import db, defaults, store, triggers
from tasker.consumer import Consumer
from tasker.dispatch import Dispatcher
from tasker.election import Elector
from tasker.exceptions import ConfigurationError, DatabaseError, LeadershipLost, TaskerError
from tasker.msgq import MsgQ, classes_in
from tasker.notify import Listener
from tasker.rescue import Rescuer

log = logging.getLogger(__name__)

PERIODIC_CATCH_UP_S = 60.0
"""A new master inserts the fire times missed since the latest periodic task,
at most this far back (a change of master takes seconds)."""


def load_app(module: str, **settings: Any) -> Any:
    """Import a user's module and return its app with the module's MsgQ classes.

    The module may define a `Tasker` (used as is, with its classes added);
    otherwise a new app is made from `settings` and the environment.
    """
    from tasker.app import Tasker

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module!r}: {exc}") from None
    apps = [v for v in vars(mod).values() if isinstance(v, Tasker)]
    classes = classes_in(mod)
    given = {k: v for k, v in settings.items() if v is not None}
    if len(apps) > 1:
        raise ConfigurationError(f"{module} defines {len(apps)} Tasker apps; keep one")
    if apps and not given:
        app = apps[0]
    else:
        url, broker = given.pop("database_url", None), given.pop("broker_url", None)
        app = Tasker(url, broker=broker, **given)
    if apps and given:
        app.registry.register_all(apps[0].registry)
    for cls in classes:
        if app.registry.find(cls.topic) is not cls:
            app.registry.register(cls)
    if not len(app.registry):
        raise ConfigurationError(f"{module} defines no MsgQ classes")
    return app


class Runner:
    """One running instance of an app."""

    def __init__(self, app: Any, *, master: bool) -> None:
        self.app = app
        self.settings = app.settings
        self.eligible = master
        self.classes: dict[str, type[MsgQ]] = {c.topic: c for c in app.registry}
        self.instance_id_value: int | None = None
        self.exit_code = 0
        self.fatal_error: str | None = None
        self._done = threading.Event()
        self._force = threading.Event()
        self._stopping = threading.Lock()
        self._signals = 0
        self._stop_requested = threading.Event()
        self._closing = False
        self.scheduler = BackgroundScheduler(
            timezone=dt.timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.consumer = Consumer(
            app,
            classes=self.classes,
            instance_id=self.instance_id,
            fatal=self.fatal,
            prefetch=self.settings.prefetch,
            on_prefetch_change=self.wake_beat,
        )
        self.elector = Elector(
            app,
            instance_id=self.instance_id,
            eligible=master,
            fqdn=self.settings.fqdn,
            on_elected=self._on_elected,
            on_forgotten=self._register_again,
            fatal=self.fatal,
            max_failures=self.settings.reconnect_retries,
            retry_s=self.settings.reconnect_interval_s,
            topics=self.consumer.topics_row,
        )
        self.dispatcher = Dispatcher(
            app,
            topics=list(self.classes),
            instance_id=self.instance_id,
            current_term=self.elector.current_term,
            lease_ms=self._lease_ms,
            on_lost=self.elector.demote,
            window_s=self.settings.redelivery_window_s,
        )
        self.rescuer = Rescuer(
            app,
            instance_id=self.instance_id,
            current_term=self.elector.current_term,
            lease_ms=self._lease_ms,
            on_lost=self.elector.demote,
            grace_s=self.settings.rescue_grace_s,
            retention=self._retention if self.settings.keep_success_days else None,
        )
        self.listener: Listener | None = None
        if db.is_postgres(app.engine):
            self.listener = Listener(
                app.engine.url, on_publish=self.dispatcher.notified, on_core=self.wake_beat
            )

    # --- what others read ---------------------------------------------------

    def instance_id(self) -> int:
        assert self.instance_id_value is not None, "the runner has not started"
        return self.instance_id_value

    @property
    def is_master(self) -> bool:
        return self.elector.current_term() is not None

    @property
    def term(self) -> int | None:
        return self.elector.current_term()

    def _lease_ms(self) -> int:
        return self.elector.timings.master_out_of_date_ms

    # --- start --------------------------------------------------------------

    def _register(self) -> None:
        with self.app.transaction() as conn:
            store.core_get(conn)  # a clear error when the schema is missing
            self.instance_id_value = store.instance_register(
                conn,
                fqdn=self.settings.fqdn,
                pid=os.getpid(),
                topics=self.consumer.topics_row(),
                master_eligible=self.eligible,
            )

    def _register_again(self) -> None:
        if self._closing:
            return
        log.warning("our instance row was deleted; registering again", extra={"action": "rereg"})
        self._register()

    def start(self) -> None:
        """Start every service in background threads."""
        for cls in self.classes.values():
            if cls.periodic is not None:
                _periodic_row(cls, dt.datetime.now(dt.timezone.utc))  # fail early on bad defaults
        self._register()
        log.info(
            "instance %s started (%s, pid %d) on %s, broker %s; topics: %s",
            self.instance_id_value,
            self.settings.fqdn,
            os.getpid(),
            db.redact(self.app.database_url),
            self.app.broker.redacted(),
            ", ".join(self.classes) or "none",
            extra={"action": "started"},
        )
        try:
            self.consumer.start()
        except TaskerError:
            self._unregister()
            raise
        if self.eligible:
            self.dispatcher.start()
        if self.listener is not None:
            self.listener.start()
        self._schedule()
        self.scheduler.start()

    def _schedule(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.scheduler.add_job(self._beat, "interval", seconds=3600, id="beat", next_run_time=now)
        if not self.eligible:
            return
        for topic, cls in self.classes.items():
            self.scheduler.add_job(
                self.dispatcher.wake,
                triggers.make_trigger(cls.spec, where=f"{topic}.spec"),
                args=[topic],
                id=f"sweep:{topic}",
            )
            if cls.periodic is not None:
                self.scheduler.add_job(
                    self._periodic,
                    triggers.make_trigger(cls.periodic, where=f"{topic}.periodic"),
                    args=[cls],
                    id=f"periodic:{topic}",
                )
        self.scheduler.add_job(
            self.rescuer.run_once, "interval", seconds=defaults.RESCUE_INTERVAL_S, id="rescue"
        )

    # --- jobs ---------------------------------------------------------------

    def _beat(self) -> None:
        if self._closing:
            return
        delay = self.elector.run_once()
        if self._closing:
            return
        job = self.scheduler.get_job("beat")
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay))

    def wake_beat(self) -> None:
        """Beat now (a resign NOTIFY: the lease is free)."""
        job = self.scheduler.get_job("beat")
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.timezone.utc))

    def _on_elected(self, term: int) -> None:
        self.dispatcher.wake()
        for cls in self.classes.values():
            if cls.periodic is not None:
                self.scheduler.add_job(self._periodic, args=[cls])

    def _retention(self) -> int:
        """Delete success rows older than TASKER_KEEP_SUCCESS_DAYS, a few short batches a pass."""
        from tasker import admin

        keep_s = (self.settings.keep_success_days or 0) * 86400
        deleted = 0
        for _ in range(defaults.RETENTION_BATCHES_PER_PASS):
            n = admin.retention_sweep(self.app, keep_s, defaults.RETENTION_BATCH)
            deleted += n
            if n < defaults.RETENTION_BATCH:
                break
        if deleted:
            log.info("retention deleted %d success row(s)", deleted, extra={"action": "retention"})
        return deleted

    def _periodic(self, cls: type[MsgQ]) -> None:
        term = self.elector.current_term()
        if term is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        trig = triggers.make_trigger(cls.periodic)
        floor = now - dt.timedelta(seconds=PERIODIC_CATCH_UP_S)
        try:
            with self.app.transaction() as conn:
                last = store.task_last_periodic(conn, topic=cls.topic)
            if last is None:  # a new periodic topic starts at its latest fire time
                times = triggers.fire_times(trig, floor, now)[-1:]
            else:  # fire times missed during a change of master, not older than the floor
                times = triggers.fire_times(trig, max(last, floor), now)
            for at in times:
                with self.app.transaction() as conn:
                    store.task_insert_periodic(
                        conn, row=_periodic_row(cls, at), term=term, instance_id=self.instance_id()
                    )
        except LeadershipLost as exc:
            self.elector.demote(term, str(exc))
        except DatabaseError as exc:
            log.warning("periodic insert of %s failed: %s", cls.topic, exc)
        self.dispatcher.wake(cls.topic)

    # --- stop ---------------------------------------------------------------

    def fatal(self, message: str) -> None:
        """A service gave up: stop the instance and exit non-zero."""
        if self.fatal_error is None:
            self.fatal_error = message
            log.error("%s; stopping", message, extra={"action": "fatal"})
        self.exit_code = 1
        threading.Thread(target=self.stop, args=(0.0,), daemon=True).start()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: stop taking work, let executions finish within the
        grace, hand back the rest, resign, close. Safe to call twice."""
        if not self._stopping.acquire(blocking=False):
            self._done.wait()
            return
        grace = self.settings.shutdown_grace_s if timeout is None else timeout
        started = time.monotonic()
        try:
            self.consumer.stop_taking()
            # Hand the lease over first: the next master need not wait for our executions.
            self.elector.step_down()
            if not self.consumer.wait_idle(grace, force=self._force.is_set):
                self.consumer.hand_back()
            self.consumer.close()
            self._closing = True
            with contextlib.suppress(Exception):
                # wait=True would deadlock: APScheduler holds its job store lock
                # while it waits, and a running beat reschedules itself.
                self.scheduler.shutdown(wait=False)
            self.elector.wait_beat()
            self.dispatcher.stop()
            if self.listener is not None:
                self.listener.stop()
            self._unregister()
        finally:
            log.info(
                "instance %s stopped in %.2fs",
                self.instance_id_value,
                time.monotonic() - started,
                extra={"action": "stopped"},
            )
            self._done.set()

    def _unregister(self) -> None:
        if self.instance_id_value is None:
            return
        try:
            with self.app.transaction() as conn:
                store.instance_delete(conn, instance_id=self.instance_id_value)
        except DatabaseError as exc:
            log.warning("could not remove the instance row: %s", exc)

    # --- foreground ---------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (a second one stops at once); the exit code."""
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
        except TaskerError as exc:
            log.error("cannot start: %s", exc, extra={"action": "start_failed"})
            return 2
        stopping = False
        while not self._done.wait(0.1):
            if self._stop_requested.is_set() and not stopping:
                stopping = True
                threading.Thread(target=self.stop, daemon=True).start()
        return self.exit_code

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stop_requested.set()
            log.info(
                "%s: stopping (again to stop at once)",
                signal.Signals(signum).name,
                extra={"action": "signal"},
            )
        else:
            log.warning("stopping at once", extra={"action": "signal"})
            self._force.set()


def _periodic_row(cls: type[MsgQ], at: dt.datetime) -> dict[str, Any]:
    try:
        text = cls().encode()
    except TypeError as exc:
        raise ConfigurationError(
            f"{cls.topic}: periodic tasks need defaults for every field ({exc})"
        ) from None
    return {
        "topic": cls.topic,
        "input": text,
        "timeout": round(cls.timeout * 1000),
        "retry": cls.retry,
        "exec_after": at,
        "delay_ms": 0,
        "periodic_at": at,
    }
