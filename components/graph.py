"""How a component's children join the resource graph."""

from __future__ import annotations

import pulumi


def child_options(component: pulumi.Resource, opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """Options for a component's children: parented to it, and after whatever the component waits for.

    Pulumi does not pass a component's ``depends_on`` to its children, so without this a pool
    declared "after the health gate" would be created while the gate still runs.
    """
    return pulumi.ResourceOptions(parent=component, depends_on=opts.depends_on if opts is not None else None)
