"""Provision and destroy, start to end, for any :class:`Provider`.

``provision``: build the spec (a fresh first-boot host key, the user data),
observe and plan; stop there with ``plan_only``; else apply, and — unless
``wait`` is off — make the first verified SSH connection (:mod:`.bootstrap`).
The result says which ``known_hosts`` line is valid now:

- ``first-boot``: the server was created by this run and not contacted
  (``--no-wait``); the line pins the key from user data;
- ``rotated``: the server now presents a key it made itself, proven by a
  second connection;
- ``pinned``: an existing server whose key FORGE_KNOWN_HOSTS already pinned
  and that rotated on an earlier run;
- ``unknown``: an existing server and no FORGE_KNOWN_HOSTS to check it with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paramiko

from forge_ci.errors import ProvisionError
from forge_ci.provision import cloudinit
from forge_ci.provision.base import Plan, Provider, ServerInfo, ServerSpec, forge_labels
from forge_ci.provision.bootstrap import bootstrap, https_advice, ssh_opener
from forge_ci.provision.hostkeys import HostKey, known_hosts_line, public_line
from forge_ci.provision.policy import ProvisionPolicy
from forge_ci.provision.site import Site


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    applied: bool
    server: ServerInfo | None = None
    known_hosts: str | None = None
    host_key: str = "unknown"  # first-boot | rotated | pinned | unknown
    cloud_init: str | None = None  # done | degraded | None (not waited for)
    https: str | None = None  # forge-https's status line on the server, when read
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.as_dict(), "applied": self.applied,
                "server": self.server.as_dict() if self.server else None,
                "ip": self.server.ipv4 if self.server else None,
                "known_hosts": self.known_hosts, "host_key": self.host_key,
                "cloud_init": self.cloud_init, "https": self.https, "notes": list(self.notes),
                "warnings": list(self.warnings)}


def build_spec(site: Site, *, user_labels: Mapping[str, str], ssh_sources: tuple[str, ...],
               deploy_key: paramiko.PKey, host_key: HostKey) -> ServerSpec:
    ownership = forge_labels(site.project, site.environment)
    public = public_line(deploy_key)
    return ServerSpec(
        name=site.server_name, labels={**user_labels, **ownership}, ownership=ownership,
        ssh_public_key=public, ssh_port=site.ssh_port, ssh_sources=ssh_sources,
        user_data=cloudinit.user_data(site, public, host_key),
    )


@dataclass
class Runtime:
    """Where the engine reports; the CLI passes its runner's methods."""

    log: Callable[[str], None]
    warn: Callable[[str], None]
    group: Callable[[str], Any]  # a context manager factory


def provision(provider: Provider[Any], spec: ServerSpec, site: Site, *, host_key: HostKey,
              deploy_key: paramiko.PKey, pinned: str | None, plan_only: bool, wait: bool,
              policy: ProvisionPolicy, rt: Runtime) -> Outcome:
    with rt.group(f"Plan: {spec.name} on {provider.name}"):
        plan = provider.reconcile_plan(spec)
        for line in plan.lines():
            rt.log(line)
    if plan_only:
        return Outcome(plan=plan, applied=False, server=plan.existing)
    with rt.group("Apply"):
        made = provider.apply(spec, plan)
        for note in made.notes:
            rt.log(f"note: {note}")
    warnings: list[str] = list(made.warnings)
    address = made.server.ipv4
    if not address:
        raise ProvisionError(f"server {spec.name} has no public IPv4 address",
                             hint="forge connects over IPv4: enable it on the server")
    first_boot = (known_hosts_line(address, site.ssh_port, host_key.public)
                  if made.booted_from_spec else None)

    def outcome(**kw: Any) -> Outcome:
        kw.setdefault("https", made.https)
        return Outcome(plan=plan, applied=True, server=made.server, notes=made.notes,
                       warnings=tuple(warnings), **kw)

    if not wait or not provider.boots_from_user_data:
        if first_boot:
            warnings.append("known-hosts pins the first-boot host key, which user data exposes "
                            "to the server's metadata service: run provision again without "
                            "--no-wait (with FORGE_KNOWN_HOSTS set to it) to replace it")
        for w in warnings:
            rt.warn(w)
        if not provider.boots_from_user_data and pinned:
            # Reached over SSH with FORGE_KNOWN_HOSTS (provider ssh): that pin stays valid.
            return outcome(known_hosts=pinned, host_key="pinned")
        return outcome(known_hosts=first_boot, host_key="first-boot" if first_boot else "unknown")
    trust = first_boot or pinned
    if not trust:
        warnings.append(f"server {spec.name} already existed and FORGE_KNOWN_HOSTS is not set: "
                        "it was not checked over SSH and no known-hosts is output")
        for w in warnings:
            rt.warn(w)
        return outcome()
    with rt.group(f"First boot: {site.deploy_user}@{address}:{site.ssh_port}"):
        opener = ssh_opener(address, site.ssh_port, site.deploy_user, deploy_key)
        done = bootstrap(opener, address, site.ssh_port, trust, policy, rt.log)
    if done.cloud_init == "degraded":
        warnings.append("cloud-init finished with recoverable errors (degraded): see "
                        "`cloud-init status --long` and /var/log/cloud-init.log on the server")
    advice = https_advice(done.https, address)
    if advice:
        warnings.append(advice)
    for w in warnings:
        rt.warn(w)
    return outcome(known_hosts=done.known_hosts, host_key="rotated" if done.rotated else "pinned",
                   cloud_init=done.cloud_init, https=done.https)


def destroy(provider: Provider[Any], name: str, ownership: Mapping[str, str], *,
            plan_only: bool, rt: Runtime) -> Plan:
    with rt.group(f"Plan: destroy {name} on {provider.name}"):
        plan = provider.plan_destroy(name, ownership)
        for line in plan.lines():
            rt.log(line)
    if not plan_only and not plan.empty:
        with rt.group("Destroy"):
            provider.destroy(plan)
    return plan
