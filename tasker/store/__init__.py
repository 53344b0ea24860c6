"""Every SQL statement tasker runs, one named function each.

Nothing outside this package builds SQL. Names read entity_verb[_qualifier]:
`_many` works on a batch, `_if_<guard>` is a guarded transition that returns
what it changed (zero rows is a normal answer: a lost race or a stale token).
Status changes are built from `states.TRANSITIONS`, so the state machine has
one source. Durations arrive here in seconds (`*_s`, publish rows' `timeout_s`
and `delay_s` too) and become the milliseconds of the columns inside
(`dialect.to_ms`). "now" is the database clock, or a pinned `now` in tests.

One module per side of the protocol: `dialect` (the only PostgreSQL/SQLite
differences), `publish`, `unique` (keyed inserts), `claims` (dispatch and
start), `finish`, `rescue` (the master's end of stuck executions), `links`
(chains, groups and the result-topic outbox rows: what a task's end sets
off), `outbox` (taking those rows to publish them), `cancel` (abort),
`requeue` (what an admin retry sets besides the transition), `leases` (core
and instance rows), `topics` (pause and the rate-limit window), `history`
(admin reads), `dashboard` (what the web dashboard reads besides), `glance`
(what `tasker status` reads without a pass over the table), `outlook` (when
the master's idle loops next have work) and `inprocess` (the claim of
`tasker.testing`, which runs tasks without a master). Callers use `from
tasker import store` and `store.<name>`.
"""

from __future__ import annotations

from tasker.store.cancel import CANCEL_CHANNEL, task_cancel_or_stop, task_cancel_wanted
from tasker.store.claims import (
    task_any_due,
    task_claim_due,
    task_count_inflight,
    task_due_probe,
    task_expire_due,
    task_take_back_below,
    task_unclaim_many,
)
from tasker.store.dashboard import (
    task_count_capped,
    task_finished_per_minute,
    task_max_id,
    task_page,
    task_recent_runs,
    task_topic_exists,
    task_topics,
)
from tasker.store.dialect import (
    CAPACITY_PREFIX,
    CORE_CHANNEL,
    FENCE_IDLE_TIMEOUT_MS,
    PUBLISH_CHANNEL,
    db_clock,
    db_now,
    now,
    plus_ms,
    random_token,
)
from tasker.store.finish import (
    FINISH_NAMES,
    STARTED_COLUMNS,
    Finish,
    task_finish_if_running_many,
    task_finish_many,
    task_requeue_if_finished,
    task_start_if_token,
)
from tasker.store.glance import no_jit, task_count_estimates, task_oldest_due_by_topic
from tasker.store.history import (
    LIST_COLUMNS,
    TimeBound,
    task_count_by_topic_status,
    task_count_purgeable,
    task_count_requeue_matching,
    task_ids_matching,
    task_list,
    task_oldest_due,
    task_purge_batch,
    task_requeue_matching,
)
from tasker.store.inprocess import task_claim_inprocess
from tasker.store.leases import (
    INSTANCE_PREFIX,
    core_attempt_elect,
    core_fence,
    core_get,
    core_resign,
    instance_beat,
    instance_delete,
    instance_forget_dead,
    instance_list,
    instance_live,
    instance_register,
    topics_of,
)
from tasker.store.links import (
    LINKED,
    outcome_message,
    task_get_settling,
    task_insert_chain,
    task_insert_group,
    task_links_on_terminal,
)
from tasker.store.outbox import outbox_delete, outbox_release, outbox_take
from tasker.store.outlook import RescueOutlook, task_next_due, task_rescue_outlook
from tasker.store.publish import (
    COPY_MIN_ROWS,
    task_get,
    task_insert_many,
    task_insert_periodic,
    task_last_periodic,
    task_status_many,
)
from tasker.store.requeue import task_renew_expiry_if_passed
from tasker.store.rescue import task_find_stuck, task_rescue_many
from tasker.store.topics import (
    TOPIC_PREFIX,
    topic_declare_many,
    topic_declared,
    topic_paused,
    topic_periodic_last,
    topic_rate_read,
    topic_rate_write,
    topic_set_paused,
    topic_set_periodic_last,
)
from tasker.store.unique import (
    task_insert_unique_many,
    task_keys_of,
    task_live_by_key,
    task_requeue_conflicts,
)

__all__ = [
    "CANCEL_CHANNEL",
    "CAPACITY_PREFIX",
    "COPY_MIN_ROWS",
    "CORE_CHANNEL",
    "FENCE_IDLE_TIMEOUT_MS",
    "FINISH_NAMES",
    "INSTANCE_PREFIX",
    "LINKED",
    "LIST_COLUMNS",
    "PUBLISH_CHANNEL",
    "STARTED_COLUMNS",
    "TOPIC_PREFIX",
    "Finish",
    "RescueOutlook",
    "TimeBound",
    "core_attempt_elect",
    "core_fence",
    "core_get",
    "core_resign",
    "db_clock",
    "db_now",
    "instance_beat",
    "instance_delete",
    "instance_forget_dead",
    "instance_list",
    "instance_live",
    "instance_register",
    "no_jit",
    "now",
    "outbox_delete",
    "outbox_release",
    "outbox_take",
    "outcome_message",
    "plus_ms",
    "random_token",
    "task_any_due",
    "task_cancel_or_stop",
    "task_cancel_wanted",
    "task_claim_due",
    "task_claim_inprocess",
    "task_count_by_topic_status",
    "task_count_capped",
    "task_count_estimates",
    "task_count_inflight",
    "task_count_purgeable",
    "task_count_requeue_matching",
    "task_due_probe",
    "task_expire_due",
    "task_find_stuck",
    "task_finish_if_running_many",
    "task_finish_many",
    "task_finished_per_minute",
    "task_get",
    "task_get_settling",
    "task_ids_matching",
    "task_insert_chain",
    "task_insert_group",
    "task_insert_many",
    "task_insert_periodic",
    "task_insert_unique_many",
    "task_keys_of",
    "task_last_periodic",
    "task_links_on_terminal",
    "task_list",
    "task_live_by_key",
    "task_max_id",
    "task_next_due",
    "task_oldest_due",
    "task_oldest_due_by_topic",
    "task_page",
    "task_purge_batch",
    "task_recent_runs",
    "task_renew_expiry_if_passed",
    "task_requeue_conflicts",
    "task_requeue_if_finished",
    "task_requeue_matching",
    "task_rescue_many",
    "task_rescue_outlook",
    "task_start_if_token",
    "task_status_many",
    "task_take_back_below",
    "task_topic_exists",
    "task_topics",
    "task_unclaim_many",
    "topic_declare_many",
    "topic_declared",
    "topic_paused",
    "topic_periodic_last",
    "topic_rate_read",
    "topic_rate_write",
    "topic_set_paused",
    "topic_set_periodic_last",
    "topics_of",
]
