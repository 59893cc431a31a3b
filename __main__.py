"""pve-ceph-ha: the runbook (steps 1-6 and 8) as one Pulumi program. See README.md."""

import pulumi

from components import config, credentials, sdk_runtime
from components.stack import PveCephHa

sdk_runtime.tune()  # the SDK's debug lines and its end-of-run wait (components/sdk_runtime.py)

try:
    settings = config.load_from_pulumi()
    secrets = credentials.load(settings)
except config.ConfigError as error:
    raise pulumi.RunError(str(error)) from None

for warning in config.warnings(settings):
    pulumi.log.warn(warning)
deployment = PveCephHa(pulumi.get_stack(), settings, secrets)
for key, value in deployment.outputs.items():
    pulumi.export(key, value)
