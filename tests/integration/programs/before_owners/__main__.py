"""The real program as it was before the owner tags (issue #21): VMs without the stack's tag, HA
objects with the plain comment, the scrub window without an owner and no owners check, so a stack
deployed with it records what an upgrade starts from."""

import runpy
from pathlib import Path

import pulumi

import components.stack as stack


class NoOwnersCheck(pulumi.ComponentResource):
    def __init__(self, name: str, *args: object, opts: pulumi.ResourceOptions | None = None, **kwargs: object) -> None:
        super().__init__("pveceph:proxmox:Owners", name, None, opts)
        self.register_outputs({})


stack.owner_tag = lambda project, name: ""  # type: ignore[assignment]
stack.Owners = NoOwnersCheck  # type: ignore[assignment,misc]
runpy.run_path(str(Path(stack.__file__).resolve().parents[1] / "__main__.py"), run_name="__main__")
