"""Hosts made of Linux network namespaces, for the multi-host tests.

    with lan(["redis", "pg", "s3", "api", "w1", "w2", "client"]) as net:
        net["redis"].ip                      # 10.77.0.x, an address that exists only inside this run's namespaces
        net["w1"].cmd(["redis-server", ...]) # the command line that runs a program on that host
        net.cut("w1") / net.mend("w1")       # the host's cable out / back in (its switch port down / up)
        net.call("client", fn)               # run fn in a thread whose network is the client host's

One namespace per host plus a "switch" namespace holding a bridge; each host has one veth pair, `eth0`
inside the host and its port on the bridge. Every name carries a random run id, so parallel runs never
collide, and nothing is added to the machine's own network namespace: no address, no route, no link.
Everything is removed on exit, failures included (deleting a namespace removes its links).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make network namespaces (None when it can): tried, not guessed."""
    probe = f"feqa-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace here ({exc})"
    _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    port: str           # its port on the switch (in the switch namespace)

    def cmd(self, argv: list[str], hostname: str | None = None) -> list[str]:
        """`argv` run on this host; with `hostname`, in its own UTS namespace under that host name."""
        if hostname:
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
        return ["ip", "netns", "exec", self.ns, *argv]


def _enter(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Lan:
    run: str
    switch: str
    hosts: dict[str, Host] = field(default_factory=dict)
    _threads: dict[str, ThreadPoolExecutor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def cut(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def mend(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """fn(*args) in a thread living in host `name`'s network namespace (sockets it opens are that
        host's; so are processes it starts). One thread per host, reused."""
        if name not in self._threads:
            self._threads[name] = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{name}", initializer=_enter,
                                                     initargs=(self.hosts[name].ns,))
        return self._threads[name].submit(fn, *args, **kw).result()


@contextlib.contextmanager
def lan(names: list[str]) -> Iterator[Lan]:
    run = uuid.uuid4().hex[:8]
    net = Lan(run, f"feqa-{run}-switch")
    made: list[str] = []
    try:
        _ip("netns", "add", net.switch)
        made.append(net.switch)
        _ip("-n", net.switch, "link", "set", "lo", "up")
        _ip("-n", net.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", net.switch, "link", "set", "br0", "up")
        for i, name in enumerate(names):
            host = Host(name, f"feqa-{run}-{name}", f"{SUBNET}.{10 + i}", f"port{i}")
            _ip("netns", "add", host.ns)
            made.append(host.ns)
            _ip("-n", host.ns, "link", "set", "lo", "up")
            # Both ends are created in namespaces of this run: the switch port, and eth0 in the host.
            _ip("-n", net.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                "netns", host.ns)
            _ip("-n", net.switch, "link", "set", host.port, "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            net.hosts[name] = host
        yield net
    finally:
        for ex in net._threads.values():
            ex.shutdown(wait=False, cancel_futures=True)
        for ns in reversed(made):
            with contextlib.suppress(Exception):
                _ip("netns", "del", ns)
