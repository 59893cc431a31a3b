"""The lab as the tests, the benchmarks and `make drill` use it (nothing here is the product's).

- :mod:`lab.testing.plugin`: the pytest fixtures (the lab up once a session, its control channel,
  its access), imported by the suites' conftest.py files;
- :mod:`lab.testing.seed`: :class:`~lab.testing.seed.LabAccess` (each node's API, SSH to the Ceph
  admin, the control channel) and HA VMs made without the program (`python -m lab.testing.seed`);
- :mod:`lab.testing.engine`: the real Pulumi engine from the project's toolchain, a local backend;
- :mod:`lab.testing.stack`: :class:`~lab.testing.stack.LabStack`, a stack of the program (or a test
  program) on the lab, and what tests do around one (faults, leftovers, forgetting);
- :mod:`lab.testing.shared`: sharing the lab with other runs (a settled lab, a preview's plan);
- :mod:`lab.testing.observe`: an independent observer of a VM during a failover.
"""
