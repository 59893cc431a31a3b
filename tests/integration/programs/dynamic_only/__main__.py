"""The program's dynamic resources alone: the pool (1-2/1-3), the cephx client (2-1) and the RBD
storage (2-3), wired as components/stack.py wires them, from the same stack config.

These three need only the Python language host, no ``proxmoxve`` plugin, so the tests of
their faults run fast and alone. They are the three resources whose drift, adoption and
destroy safety the program implements itself (the full program is __main__.py).
"""

import pulumi

from clients.pve.api import api_props
from components import config, credentials
from components.ceph_client import CephClient
from components.ceph_pool import CephRbdPool
from components.pve_storage import RbdStorage

try:
    settings = config.load_from_pulumi()
    secrets = credentials.load(settings)
except config.ConfigError as error:
    raise pulumi.RunError(str(error)) from None

name = pulumi.get_stack()
admin = settings.ceph.admin
connection = secrets.connection(admin.host, admin.port, admin.user)
token = pulumi.Output.secret(settings.proxmox_api_token.get_secret_value())
api = api_props(settings.proxmox.endpoint, token, settings.proxmox.verify_tls, secrets.ca_file, timeout=settings.proxmox.api_timeout)

pool = CephRbdPool(f"{name}-rbd", settings.ceph.pool, connection, adopt=settings.adopt.pool, allow_deletion=settings.allow_pool_deletion)
client = CephClient(f"{name}-cephx", settings.ceph.client, pool.pool_name, connection, adopt=settings.adopt.client)
storage = RbdStorage(
    f"{name}-storage",
    settings.storage,
    api=api,
    pool_name=pool.pool_name,
    monitors=settings.ceph.monitors,
    username=client.client_name,
    key=client.key,
    nodes=[n.name for n in settings.proxmox.nodes],
    adopt=settings.adopt.storage,
)
pulumi.export("pool", pool.pool_name)
pulumi.export("clientName", client.client_name)
pulumi.export("clientKey", client.key)
pulumi.export("storageId", storage.storage_id)
