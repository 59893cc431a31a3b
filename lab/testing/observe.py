"""An independent, fast observer of one HA VM during a drill: the first moment the API shows it
started on another node and running there. The drill's lag is its own `running_at` minus this.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lab.testing.seed import LabAccess


class Observer(threading.Thread):
    def __init__(self, lab: LabAccess, vmid: int, from_node: str, watch_node: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name=f"observe-vm{vmid}")
        self.api = lab.api(watch_node)
        self.vmid, self.sid, self.from_node = vmid, f"vm:{vmid}", from_node
        self.interval = interval
        self.seen_at: float | None = None  # time.time() of the first answer showing it running elsewhere
        self.polls = 0
        self._done = threading.Event()

    def _started_elsewhere(self) -> bool:
        svc: dict[str, Any] = next((e for e in self.api.cluster.ha.status.current.get() if e.get("sid") == self.sid), {})
        if svc.get("state") != "started" or svc.get("node") in (None, self.from_node):
            return False
        vm: dict[str, Any] = next((r for r in self.api.cluster.resources.get(type="vm") if r.get("vmid") == self.vmid), {})
        return vm.get("node") == svc["node"] and vm.get("status") == "running"

    def run(self) -> None:
        while not self._done.is_set() and self.seen_at is None:
            try:
                if self._started_elsewhere():
                    self.seen_at = time.time()
            except Exception:  # the API may hiccup while a node fails; keep polling
                pass
            self.polls += 1
            time.sleep(self.interval)

    def stop(self, grace: float = 10.0) -> None:
        """Stop polling once the VM was seen started elsewhere, or after GRACE seconds: the drill can
        see it and exit between two polls (on 2 cores busy with a build, a poll takes a while), and the
        observer would stop without its own reading. A later reading only makes the drill's lag smaller."""
        self.join(timeout=grace)
        self._done.set()
        self.join(timeout=5)
