"""The embedded default transport, `filesystem://<folder>`: kombu's filesystem
transport with writes and takes made atomic by rename, so any number of
processes on one machine can share a folder without a server.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

LOCAL_POLL_S = 0.005
"""How often a consumer on the folder transport looks for new messages."""


class _LocalChannel(filesystem.Channel):
    """Filesystem channel whose put and get are atomic renames within one folder."""

    # kombu's filesystem Channel names the second parameter `payload`, its virtual
    # base `message`: no override matches both (kombu passes it positionally).
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        folder = self.data_folder_out
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"
        tmp = os.path.join(folder, ".tmp-" + name)
        try:
            with open(tmp, "wb") as f:
                f.write(kombu_dumps(payload).encode())
            os.rename(tmp, os.path.join(folder, name))
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot write to {folder!r}: {exc}") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """The oldest message for `queue`; `timeout` is unused: the folder is polled."""
        folder = self.data_folder_in
        wanted = f"{queue}.msg"
        taken = os.path.join(folder, "taken")
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            mine = os.path.join(taken, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(folder, name), mine)
            except OSError:
                continue  # another process took it first
            try:
                with open(mine, "rb") as f:
                    payload = f.read()
            finally:
                with contextlib.suppress(OSError):
                    os.remove(mine)
            return kombu_loads(payload)
        raise Empty()

    def _size(self, queue: str) -> int:
        wanted = f"{queue}.msg"
        return sum(1 for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == wanted)

    def _purge(self, queue: str) -> int:
        count = 0
        wanted = f"{queue}.msg"
        for name in os.listdir(self.data_folder_in):
            if name.partition(".")[2] == wanted:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.data_folder_in, name))
                    count += 1
        return count


class LocalTransport(filesystem.Transport):
    Channel = _LocalChannel
    polling_interval = LOCAL_POLL_S
