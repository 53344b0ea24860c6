"""An instance: registers itself, builds its services, orders their start and stop.

Services (each a `Service`: start/stop, `run_once`, supervised):
the heartbeat and election (`Elector`, which also hands the consumer the
cancel requests for its running tasks), the consumer's intake and status
writer, the result publisher when a class has a `result_topic`, and, when
master-eligible, dispatch, rescue, periodic inserts and
maintenance, which act only while the shared `Lease` vouches for a live
term; on PostgreSQL a listener turns NOTIFYs into wake-ups.

Start: register the instance row, declare the result queues and start the
consumer (failing fast when the broker is unreachable), then the beat and
the master services.
Graceful stop (DESIGN 6): stop taking work, resign the lease at once (the
next master need not wait for our executions), let executions finish
within the grace while the beat goes on, hand back the rest, close, stop
the services, remove the instance row. A service that cannot go on calls
`fatal`: the instance stops the same way and exits 1, and its beat stops
first, so it never looks alive while not working.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from tasker import brokers, db, limits, pipelines, store
from tasker.config import Settings
from tasker.exceptions import DatabaseError, TaskerError
from tasker.msgq import MsgQ
from tasker.runtime import triggers
from tasker.runtime.consumer import Consumer
from tasker.runtime.dispatch import Dispatcher, DispatcherConfig
from tasker.runtime.election import Elector
from tasker.runtime.lease import Lease
from tasker.runtime.maintenance import Maintenance, MaintenanceConfig
from tasker.runtime.notify import Listener
from tasker.runtime.outbox import ResultPublisher
from tasker.runtime.periodic import PeriodicInserter
from tasker.runtime.quiet import QuietTopics
from tasker.runtime.rescue import Rescuer, RescuerConfig
from tasker.runtime.service import Service, Supervision
from tasker.runtime.signals import StopSignals
from tasker.runtime.stats import Stats

log = logging.getLogger(__name__)

START_ABANDON_S = 1.0
"""After a stop signal during start, how long the start may take to notice
it before the instance exits without it."""


class Instance:
    """One running instance of an app's topics."""

    def __init__(
        self,
        *,
        database: db.Database,
        broker: brokers.Broker,
        classes: Sequence[type[MsgQ]],
        settings: Settings,
        stats: Stats,
        master: bool,
    ) -> None:
        self.database = database
        self.broker = broker
        self.settings = settings
        self.eligible = master
        self.classes = {c.topic: c for c in classes}
        self.lease = Lease()
        self.instance_id_value: int | None = None
        self.exit_code = 0
        self.fatal_error: str | None = None
        self.signals = StopSignals()
        self.starting = "not started"  # what `start` is doing (for a stop while starting)
        self._done = threading.Event()
        self._stopping = threading.Lock()
        supervision = Supervision(self.fatal, settings.reconnect_retries,
                                  settings.reconnect_interval_s)  # fmt: skip
        self.results: ResultPublisher | None = None
        queues = [c.result_topic for c in classes if c.result_topic]
        if queues:
            self.results = ResultPublisher(database, broker, supervision, queues=queues)
        self.consumer = Consumer(
            database,
            broker,
            supervision,
            classes=self.classes,
            instance_id=self.instance_id,
            fqdn=settings.fqdn,
            stats=stats,
            prefetch=settings.prefetch,
            max_wait_s=settings.rescue_grace_s / 2,
            on_prefetch_change=self._beat_now,
            on_results=self.results.wake if self.results is not None else None,
        )
        self.elector = Elector(
            database,
            self.lease,
            supervision,
            instance_id=self.instance_id,
            eligible=master,
            fqdn=settings.fqdn,
            on_elected=self._on_elected,
            on_forgotten=self._register_again,
            topics=self.consumer.topics_row,
            health=self._health,
            on_cancel=self.consumer.cancel_requested if self.classes else None,
        )
        self.consumer.intake.interrupted = self.signals.requested.is_set
        self.master_services: list[Service] = []
        self.dispatcher: Dispatcher | None = None
        self.periodic: PeriodicInserter | None = None
        self.rescuer: Rescuer | None = None
        self.quiet: QuietTopics | None = None
        if master:
            self._build_master_services(supervision)
        self.listener: Listener | None = None
        if database.is_postgres:
            # Only a latency aid: its own retries, not the settings' (notify.py).
            self.listener = Listener(
                database.url, Supervision(self.fatal), on_publish=self._notified,
                on_core=self._beat_now, on_cancel=self._cancel_notified,
                on_listen=self._listening,
            )  # fmt: skip

    def _build_master_services(self, supervision: Supervision) -> None:
        specs = {
            t: triggers.make_trigger(c.spec, where=f"{t}.spec", timezone=c.timezone)
            for t, c in self.classes.items()
        }
        settings = self.settings
        self.dispatcher = Dispatcher(
            self.database, self.broker, self.lease, supervision,
            DispatcherConfig(window_s=settings.redelivery_window_s),
            specs=specs, instance_id=self.instance_id,
            limits={t: limits.limits_of(c) for t, c in self.classes.items()},
        )  # fmt: skip
        self.periodic = PeriodicInserter(
            self.database, self.lease, supervision, classes=list(self.classes.values()),
            instance_id=self.instance_id, on_inserted=self.dispatcher.wake_topic,
        )  # fmt: skip
        self.rescuer = rescuer = Rescuer(
            self.database, self.lease, supervision,
            RescuerConfig(grace_s=settings.rescue_grace_s, host=settings.fqdn),
            instance_id=self.instance_id, listening=self._listener_live,
        )  # fmt: skip
        if self.database.is_postgres:  # NOTIFY lets an idle master rest (runtime.quiet)
            dispatcher = self.dispatcher
            self.quiet = dispatcher.quiet = QuietTopics(
                self.database, listening=self._listener_live,
                unsettled=lambda: bool(dispatcher.publisher.unconfirmed),
                window_s=settings.redelivery_window_s, on_dispatched=rescuer.touch,
                rated=[t for t, c in self.classes.items() if limits.limits_of(c).rate],
            )  # fmt: skip
        maintenance = Maintenance(
            self.database, self.lease, supervision,
            MaintenanceConfig(keep_success_days=settings.keep_success_days),
        )  # fmt: skip
        self.master_services = [self.dispatcher, self.periodic, rescuer, maintenance]

    # --- what others read ---------------------------------------------------------

    def instance_id(self) -> int:
        if self.instance_id_value is None:
            raise TaskerError("the instance has not registered yet")
        return self.instance_id_value

    @property
    def is_master(self) -> bool:
        return self.lease.term() is not None

    @property
    def term(self) -> int | None:
        return self.lease.term()

    # --- wiring ---------------------------------------------------------------------

    def _on_elected(self, _term: int) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake_topic(None)
        if self.periodic is not None:
            self.periodic.wake()

    def _notified(self, payload: str) -> None:
        if self.quiet is not None:
            self.quiet.notified(payload)
        if self.rescuer is not None:
            self.rescuer.touch()  # a new task may expire
        if self.dispatcher is not None:
            self.dispatcher.notified(payload)

    def _listener_live(self) -> bool:
        return self.listener is not None and self.listener.listening

    def _listening(self) -> None:
        """LISTEN (re)established: what was notified while it was down is
        looked at again now."""
        if self.quiet is not None:
            self.quiet.forget()
        if self.rescuer is not None:
            self.rescuer.touch()
        if self.dispatcher is not None:
            self.dispatcher.wake_topic(None)

    def _beat_now(self) -> None:
        self.elector.wake()

    def _cancel_notified(self, payload: str) -> None:
        """An admin cancelled a task running here: the beat reads which, now."""
        if self.classes and payload == str(self.instance_id_value):
            self.elector.wake()

    def _health(self) -> str | None:
        """Why this instance must not beat, or None: a service thread ended
        without being stopped (a bug the supervision did not catch)."""
        services = [self.consumer.intake, self.consumer.writer, *self.master_services]
        if self.results is not None:
            services.append(self.results)
        dead = [s.name for s in services if not s.alive()]
        return f"service(s) stopped working: {', '.join(dead)}" if dead else None

    # --- start ------------------------------------------------------------------------

    def _register(self) -> None:
        with self.database.transaction() as conn:
            store.core_get(conn)  # a clear error when the schema is missing
            self.instance_id_value = store.instance_register(
                conn, fqdn=self.settings.fqdn, pid=os.getpid(),
                topics=self.consumer.topics_row(), master_eligible=self.eligible,
            )  # fmt: skip
            # What a publisher without the classes reads (DESIGN 7): last starter wins.
            rows = [pipelines.declaration(c) for c in self.classes.values()]
            store.topic_declare_many(conn, rows=rows)

    def _register_again(self) -> None:
        if self._stopping.locked():
            return
        log.warning("our instance row was deleted; registering again", extra={"action": "rereg"})
        self._register()

    def start(self) -> None:
        """Register and start every service in background threads; TaskerError
        when the database or broker cannot be used."""
        self.starting = "connecting to the database"
        self._register()
        log.info(
            "instance %s started (%s, pid %d) on %s, broker %s; topics: %s",
            self.instance_id_value, self.settings.fqdn, os.getpid(),
            db.redact(self.database.url), self.broker.redacted(),
            ", ".join(self.classes) or "none", extra={"action": "started"},
        )  # fmt: skip
        try:
            self.starting = "connecting to the broker"
            if self.results is not None:
                self.results.declare()
            self.consumer.start()
        except TaskerError:
            self._unregister()
            raise
        if self.results is not None:
            self.results.start()
        self.elector.start()
        for service in self.master_services:
            service.start()
        if self.listener is not None:
            self.listener.start()
        self.starting = "started"

    # --- stop ---------------------------------------------------------------------------

    def fatal(self, message: str) -> None:
        """A service gave up: stop the instance and exit non-zero."""
        if self.fatal_error is None:
            self.fatal_error = message
            log.error("%s; stopping", message, extra={"action": "fatal"})
        self.exit_code = 1
        threading.Thread(target=self.stop, args=(0.0,), name="tasker-fatal", daemon=True).start()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop, as the module says; `timeout` overrides the grace
        (seconds). Safe to call twice and from any thread."""
        if not self._stopping.acquire(blocking=False):
            self._done.wait()
            return
        grace = self.settings.shutdown_grace_s if timeout is None else timeout
        started = time.monotonic()
        try:
            self.consumer.stop_taking()
            self.elector.step_down()
            if not self.consumer.wait_idle(grace, force=self.signals.forced.is_set):
                self.consumer.hand_back()
            self.consumer.close()
            if self.results is not None:
                self.results.stop()  # after the writer: its last outcomes go out
            self.elector.stop()
            for service in self.master_services:
                service.stop()
            if self.listener is not None:
                self.listener.stop()
            self._unregister()
        finally:
            log.info("instance %s stopped in %.2fs", self.instance_id_value,
                     time.monotonic() - started, extra={"action": "stopped"})  # fmt: skip
            self._done.set()

    def _unregister(self) -> None:
        if self.instance_id_value is None:
            return
        try:
            with self.database.transaction() as conn:
                store.instance_delete(conn, instance_id=self.instance_id_value)
        except DatabaseError as exc:
            log.warning("could not remove the instance row: %s", exc)

    # --- foreground -------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (a second one stops at once) or a fatal
        error; returns the exit code: 0 (also when stopped while starting), 1 (a
        service gave up), 2 (cannot start)."""
        if install_signals:
            self.signals.install()
        try:
            code = self._start_heeding_signals()
            if code is not None:
                return code
            stopping = False
            while not self._done.wait(0.1):
                if self.signals.requested.is_set() and not stopping:
                    stopping = True
                    threading.Thread(target=self.stop, name="tasker-stop", daemon=True).start()
            return self.exit_code
        finally:
            self.signals.restore()

    def _start_heeding_signals(self) -> int | None:
        """`start` in a thread of its own while this one watches the stop
        signals (DESIGN 6: a signal while connecting is obeyed within 2 s).
        Every retry wait of the start looks at the same flag; a connection
        attempt that hangs on a silent peer is left behind (a daemon thread)
        after START_ABANDON_S. Returns an exit code, or None once started."""
        failed: list[Exception] = []

        def starting() -> None:
            try:
                self.start()
            except TaskerError as exc:
                failed.append(exc)
            except Exception as exc:  # e.g. kombu's KeyError for an unknown transport
                log.debug("start failed", exc_info=True)
                failed.append(exc)

        thread = threading.Thread(target=starting, name="tasker-start", daemon=True)
        thread.start()
        while thread.is_alive() and not self.signals.requested.is_set():
            thread.join(0.05)
        if self.signals.requested.is_set():
            thread.join(START_ABANDON_S)
            if thread.is_alive() or failed:
                log.warning("stop requested while %s: exiting without starting", self.starting,
                            extra={"action": "start_stopped"})  # fmt: skip
                return 0
            return None  # started after all: the usual graceful stop follows
        if failed:
            exc = failed[0]
            why = str(exc) if isinstance(exc, TaskerError) else f"{type(exc).__name__}: {exc}"
            log.error("cannot start: %s", db.with_schema_hint(why),
                      extra={"action": "start_failed"})  # fmt: skip
            return 2
        return None
