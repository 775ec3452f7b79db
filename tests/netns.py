"""Hosts for multi-host tests: Linux network namespaces on one machine.

``Network`` makes a switch (a namespace holding a bridge) and hosts (a namespace
each, with a veth to the switch and an address on a private /24 that exists only
inside these namespaces). Names resolve through ``/etc/netns/<ns>/hosts``, which
``ip netns exec`` mounts over ``/etc/hosts`` for what runs there. Processes
started on a host are children of the test and are ended with the network;
firewall rules are nftables in the host's namespace.

    [client]--+                 +--[service: proxy :443, service on its 127.0.0.1]
    [hpc]-----+---[switch br0]--+--[db]
    [instrument]+               +--[wan: relay with delay and cuts]

Needs root (CI runs as root) and iproute2 and nftables.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funcx_flows.localstack import stop_process

_runs = itertools.count()


def available() -> str:
    """'' when network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    return ""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    network: Network
    name: str
    ns: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              log: Path | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process on this host (ended with the network)."""
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(self.argv(argv), env=dict(env) if env else None,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kwargs)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), env=dict(env) if env else None,
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def nft(self, *rules: str) -> None:
        for rule in rules:
            _run("ip", "netns", "exec", self.ns, "nft", *rule.split())

    def only_outbound(self, *ports: int) -> None:
        """A site's firewall: nothing comes in but answers; out only to ``ports``."""
        allowed = ", ".join(str(p) for p in ports)
        self.nft("add table inet site",
                 "add chain inet site in { type filter hook input priority 0 ; policy drop ; }",
                 "add rule inet site in iif lo accept",
                 "add rule inet site in ct state established,related accept",
                 "add chain inet site out { type filter hook output priority 0 ; "
                 "policy drop ; }",
                 "add rule inet site out oif lo accept",
                 f"add rule inet site out tcp dport {{ {allowed} }} accept")

    def cut(self) -> None:
        """Drop every packet in and out (the host falls off the network)."""
        self.nft("add table inet cut",
                 "add chain inet cut in { type filter hook input priority -10 ; }",
                 "add rule inet cut in iif != lo drop",
                 "add chain inet cut out { type filter hook output priority -10 ; }",
                 "add rule inet cut out oif != lo drop")

    def restore(self) -> None:
        self.nft("delete table inet cut")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        stop_process(proc, timeout)


class Network:
    """Hosts on one switch; ``close`` ends their processes and removes them."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.tag = f"fx{os.getpid() % 100000}n{next(_runs)}"
        self.subnet = "10.201.7"
        self.hosts: dict[str, Host] = {}
        self.names: dict[str, str] = dict(names or {})  # alias -> host name
        self._overrides: dict[tuple[str, str], str] = {}  # (viewer, alias) -> host name
        self._next = 2
        self._switch = f"{self.tag}-sw"
        _run("ip", "netns", "add", self._switch)
        _run("ip", "-n", self._switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self._switch, "link", "set", "br0", "up")

    def host(self, name: str) -> Host:
        ns = f"{self.tag}-{name}"
        ip = f"{self.subnet}.{self._next}"
        self._next += 1
        _run("ip", "netns", "add", ns)
        index = len(self.hosts)
        a, b = f"{self.tag}h{index}a", f"{self.tag}h{index}b"
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _run("ip", "link", "set", a, "netns", ns)
        _run("ip", "link", "set", b, "netns", self._switch)
        _run("ip", "-n", self._switch, "link", "set", b, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", a)
        _run("ip", "-n", ns, "link", "set", a, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        host = self.hosts[name] = Host(self, name, ns, ip)
        self._write_hosts_files()
        return host

    def resolve(self, alias: str, host: Host, seen_from: Sequence[Host] = ()) -> None:
        """``alias`` names ``host`` on every host (a DNS record, as it were), or only
        on ``seen_from`` (a site whose traffic goes another way)."""
        if seen_from:
            for viewer in seen_from:
                self._overrides[(viewer.name, alias)] = host.name
        else:
            self.names[alias] = host.name
        self._write_hosts_files()

    def _write_hosts_files(self) -> None:
        for viewer in self.hosts.values():
            lines = ["127.0.0.1 localhost"]
            lines += [f"{h.ip} {h.name}" for h in self.hosts.values()]
            for alias, target in self.names.items():
                target = self._overrides.get((viewer.name, alias), target)
                if target in self.hosts:
                    lines.append(f"{self.hosts[target].ip} {alias}")
            folder = Path("/etc/netns") / viewer.ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    def close(self) -> None:
        for h in self.hosts.values():
            for proc in h.procs:
                with contextlib.suppress(Exception):
                    h.stop(proc, timeout=10)
        for h in self.hosts.values():
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True, timeout=30)
            shutil.rmtree(Path("/etc/netns") / h.ns, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self._switch], capture_output=True, timeout=30)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
