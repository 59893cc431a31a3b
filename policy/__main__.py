"""The pve-ceph-ha policy pack (CrossGuard): ``pulumi preview --policy-pack policy``.

The policies and what they check are in ``pveceph_policy/``; this file only serves them.
"""

from pulumi_policy import EnforcementLevel, PolicyPack
from pveceph_policy.pack import POLICIES

PolicyPack(name="pve-ceph-ha", policies=POLICIES, enforcement_level=EnforcementLevel.ADVISORY)
