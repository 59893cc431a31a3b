"""The lab's HA manager: PVE's CRM and LRM, after pve-ha-manager (PVE/HA/Manager.pm,
NodeStatus.pm, LRM.pm, API2/HA/Status.pm), on the lab's emulated nodes.

Times are PVE seconds, turned into real ones by the API's time scale (0.1: the 60 s fence
delay takes 6 s). One loop plays every node's daemons:

- membership: a node is in the cluster partition while it is powered and connected; the
  partition is quorate with a majority of the nodes (2 of 3).
- LRM and watchdog (LRM.pm work, get_protected_ha_agent_lock, give_up_watchdog_protection):
  an LRM starts in `wait_for_agent_lock` (no agent lock, no watchdog) and goes `active` -- takes
  its node's agent lock and opens the watchdog -- once a service on the node is active
  (Tools.pm count_active_services), only while quorate and no fence is requested for the node
  (a service of it in `fence`, or the node itself in `fence`: is_fence_requested). An active
  LRM renews lock and watchdog every round and stays active while any HA service is configured
  on the node, whatever its state (has_configured_service_on_local_node; `ignored` ones are
  dropped from the manager status, so they do not count), and for more than
  $max_active_idle_rounds (60) rounds of ~10 s after the last one left; then it releases the
  lock and closes the watchdog ("going idle"). Without quorum, or asked to fence, it goes
  `lost_agent_lock`: the watchdog is no longer updated and resets the node FENCE_DELAY seconds
  after its last update: every VM on the node dies, HA-managed or not, and the LRM comes back
  as a new one (`wait_for_agent_lock`). A node whose LRM is idle is never reset.
- CRM (on the master, only while quorate): node states online -> unknown; a service on a node
  unknown for FENCE_DELAY goes to `fence`, the node to `fence`; the fence is acknowledged when
  the node's agent lock has expired (LOCK_TIMEOUT after its last renewal); the service goes
  through `recovery` to `started` on the node chosen by group/rule priority and load
  (select_service_node), its VM config moving there (steal_service).
  Start failures: the LRM retries max_restart times on the node, then the CRM relocates up
  to max_relocate times (try-next), then `error`. Failback (failback / group nofailback)
  migrates a service to a higher-priority node that comes back.
- LRM (per node in the quorate partition): starts, stops and migrates its services' VMs
  through the API's own tasks (qmstart, qmstop, qmigrate), which run the real lock holders.
- the daemons as systemd units (units.py; `systemctl stop|start pve-ha-lrm|pve-ha-crm` on a
  node), after LRM.pm, CRM.pm, Manager.pm and Service/pve_ha_{lrm,crm}.pm of pve-ha-manager
  5.0 (PVE 9.0; 4.0 of PVE 8 is the same here):
  * stopping pve-ha-lrm is not a node shutdown (Env/PVE2.pm is_node_shutdown finds no
    shutdown.target job), so LRM.pm shutdown_request puts the LRM in mode `restart` ("restart
    LRM, freeze all services") and writes its status; the CRM freezes the node's services
    (Manager.pm manage: lrm mode `restart` turns started/stopped/request_stop into `freeze`;
    their VMs keep running, unmanaged); once the node has no active service and no worker left
    the LRM closes its watchdog and releases its agent lock (give_up_watchdog_protection: no
    fence) and exits, until then the unit is `deactivating` (TimeoutStopSec=infinity). A
    stopped LRM writes no status: `ha-manager status` shows `lrm NODE (restart mode, <time of
    its last write>)` for 30 s (Status.pm: a mode other than active), then `lrm NODE (old
    timestamp - dead?, <time>)`. Starting it again (LRM.pm new: mode active) writes its status
    at once and the CRM unfreezes the services (`freeze` -> started / request_stop).
  * stopping pve-ha-crm: CRM.pm shutdown_request; a master gives up its watchdog and releases
    the manager lock ("voluntary release CRM lock"), so a running CRM elsewhere takes it on its
    next round; a node whose CRM is stopped never becomes master. With no CRM running on any
    quorate node nothing manages the cluster and the master line keeps the last timestamp
    (`old timestamp - dead?` after 30 s).

Status answers follow PVE 8 / 9.0's API2/HA/Status.pm (`quorum OK`, `master pve-node1 (active,
<date>)`, `lrm pve-node1 (active, <date>)`, `service vm:101 (pve-node1, started)`).
"""

from lab.pve.ha.common import encode_node_list, parse_node_list, sid_parts, split_list
from lab.pve.ha.manager import HaManager

__all__ = ["HaManager", "encode_node_list", "parse_node_list", "sid_parts", "split_list"]
