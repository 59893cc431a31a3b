"""The cloud-init drive's contents, as PVE writes them (qemu-server src/PVE/QemuServer/Cloudinit.pm,
the `nocloud` format, the default for a Linux guest): `user-data` (cloudinit_userdata),
`network-config` (nocloud_network, version 1), `meta-data` (nocloud_gen_metadata: the instance id
is the SHA-1 of the user data and the network config) and an empty `vendor-data`, in an ISO 9660
image labelled `cidata` (commit_cloudinit_disk: `genisoimage -quiet -iso-level 3 -J -R -V cidata`).

PVE writes the drive when the VM starts (vm_start -> apply_cloudinit_config) and on
`PUT .../cloudinit`; the lab does the same (nodes_qemu_clone.py) and writes the image onto the
drive's RBD volume. A node's own /etc/resolv.conf, which PVE falls back to without `nameserver`
or `searchdomain`, is empty in the lab. `cicustom` snippets are not modelled (refused).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

LABEL = "cidata"


def _fields(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in str(text).split(",") if "=" in part)


def hostname_fqdn(conf: dict[str, Any], vmid: int) -> tuple[str, str]:
    """get_hostname_fqdn."""
    hostname = str(conf.get("name") or f"VM{vmid}")
    if "." in hostname:
        return hostname.split(".", 1)[0], hostname
    if conf.get("searchdomain"):
        return hostname, f"{hostname}.{conf['searchdomain']}"
    return hostname, hostname


def user_data(conf: dict[str, Any], vmid: int) -> str:
    """cloudinit_userdata."""
    hostname, fqdn = hostname_fqdn(conf, vmid)
    out = f"#cloud-config\nhostname: {hostname}\nmanage_etc_hosts: true\nfqdn: {fqdn}\n"
    user, password = conf.get("ciuser"), conf.get("cipassword")
    if user is not None:
        out += f"user: {user}\n"
        if user == "root":
            out += "disable_root: False\n"
    if password is not None:
        out += f"password: {password}\n"
    if conf.get("sshkeys") is not None:
        keys = [k.rstrip("\n") for k in urllib.parse.unquote(str(conf["sshkeys"])).split("\n")]
        out += "ssh_authorized_keys:\n" + "".join(f"  - {k}\n" for k in keys if k.strip())
    out += "chpasswd:\n  expire: False\n"
    if user is None or user != "root":
        out += "users:\n  - default\n"
    if conf.get("ciupgrade") in (None, 1, "1", True):
        out += "package_upgrade: true\n"
    return out


def network_config(conf: dict[str, Any]) -> str:
    """nocloud_network: version 1, one physical interface per NIC with an ipconfig<N>, then the DNS."""
    out = "version: 1\nconfig:\n"
    for iface in sorted(k for k in conf if re.fullmatch(r"net\d+", k)):
        n = iface[3:]
        if not conf.get(f"ipconfig{n}"):
            continue
        found = re.search(r"(?:^|,)(?:[a-z0-9-]+=)?([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})(?:,|$)", str(conf[iface]))
        if found is None:
            raise ValueError(f"network interface '{iface}' has no mac address")
        ipconfig = _fields(conf[f"ipconfig{n}"])
        i = "    "
        out += f"{i}- type: physical\n{i}  name: eth{n}\n{i}  mac_address: '{found.group(1).lower()}'\n{i}  subnets:\n"
        i += "  "
        ip = ipconfig.get("ip")
        if ip == "dhcp":
            out += f"{i}- type: dhcp4\n"
        elif ip is not None:
            if "/" not in ip:
                raise ValueError(f"not a CIDR: {ip}")
            network = ipaddress.ip_interface(ip)
            out += f"{i}- type: static\n{i}  address: '{network.ip}'\n{i}  netmask: '{network.netmask}'\n"
            if ipconfig.get("gw"):
                out += f"{i}  gateway: '{ipconfig['gw']}'\n"
        ip6 = ipconfig.get("ip6")
        if ip6 == "dhcp":
            out += f"{i}- type: dhcp6\n"
        elif ip6 == "auto":
            out += f"{i}- type: ipv6_slaac\n"
        elif ip6 is not None:
            out += f"{i}- type: static6\n{i}  address: '{ip6}'\n"
            if ipconfig.get("gw6"):
                out += f"{i}  gateway: '{ipconfig['gw6']}'\n"
    search = str(conf.get("searchdomain") or "").split()
    servers = str(conf.get("nameserver") or "").split()
    # `if ($searchdomains || $nameservers)`: two array references, always true
    out += "    - type: nameserver\n"
    if servers:
        out += "      address:\n" + "".join(f"      - '{s}'\n" for s in servers)
    if search:
        out += "      search:\n" + "".join(f"      - '{s}'\n" for s in search)
    return out


def files(conf: dict[str, Any], vmid: int) -> dict[str, str]:
    """generate_nocloud: the drive's files."""
    if conf.get("cicustom"):
        raise ValueError("cicustom snippets are not modelled by the lab")
    user, network = user_data(conf, vmid), network_config(conf)
    meta = f"instance-id: {hashlib.sha1((user + network).encode()).hexdigest()}\n"  # PVE's instance id: the SHA-1 of the two
    return {"user-data": user, "network-config": network, "meta-data": meta, "vendor-data": ""}


def iso(contents: dict[str, str]) -> bytes:
    """commit_cloudinit_disk's image: genisoimage over a folder of the files (Debian's genisoimage)."""
    with tempfile.TemporaryDirectory(prefix="lab-cloudinit-") as folder:
        for name, text in contents.items():
            Path(folder, name).write_text(text)
        done = subprocess.run(["genisoimage", "-quiet", "-iso-level", "3", "-J", "-R", "-V", LABEL, folder], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ValueError(f"genisoimage failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout
