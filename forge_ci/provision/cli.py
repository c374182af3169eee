"""``forge-ci provision ENV`` and ``forge-ci destroy ENV --confirm NAME``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from forge_ci.command import Common, Context
from forge_ci.config import LoadedConfig
from forge_ci.errors import SecretError, UsageError
from forge_ci.provision.base import Plan, forge_labels
from forge_ci.provision.policy import ProvisionPolicy
from forge_ci.provision.site import Site, provision_section, resolve

if TYPE_CHECKING:
    from forge_ci.provision import reconcile

# reconcile, the providers (hcloud, requests) and paramiko are imported by the
# commands that use them: every other forge-ci command starts without them.

_PROVISION_HELP = """\
Create the environment's server if it is missing, with its firewall and SSH key,
and install the Bedrock stack through cloud-init (provider hetzner), or bring an
existing Debian/Ubuntu server to the same stack over SSH (provider ssh). Both set up
HTTPS from the environment's https: key; a certificate waiting for DNS is a
warning saying what to fix, and the next run retries it. Idempotent: a second run
changes nothing. hetzner needs HCLOUD_TOKEN (HCLOUD_ENDPOINT overrides the API URL)
and FORGE_SSH_KEY (its public half becomes the deploy user's login); for a server
made earlier, FORGE_KNOWN_HOSTS lets forge check it over SSH. ssh needs
FORGE_KNOWN_HOSTS, FORGE_SSH_KEY and FORGE_ADMIN_SSH_KEY (the admin_user's key;
FORGE_SSH_KEY when unset). With provider cyberpanel or cpanel it makes the site
(domain, document root, database, deploy key) on a control panel instead:
CYBERPANEL_URL/_USER/_PASSWORD or CPANEL_URL/_USER/_TOKEN, FORGE_DB_PASSWORD,
FORGE_SSH_KEY and FORGE_KNOWN_HOSTS. Outputs: ip, known-hosts."""

_DESTROY_HELP = """\
Delete the environment's server and its forge firewall. Only a server carrying
forge's labels for this project and environment is ever deleted, and only with
--confirm set to the server's name. Needs HCLOUD_TOKEN."""


def register(sub: Any, common: Common) -> None:
    p = sub.add_parser("provision", parents=[common.config, common.json, common.dry_run],
                       help="create or update the environment's server (idempotent)",
                       description=_PROVISION_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("environment", metavar="ENV", help="environment name in forge.yml")
    p.add_argument("--plan", dest="dry_run", action="store_true",
                   help="show what would change and change nothing (same as --dry-run)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="stop after the API work; known-hosts then pins the first-boot key")
    p.set_defaults(func=cmd_provision)

    d = sub.add_parser("destroy", parents=[common.config, common.json, common.dry_run],
                       help="delete the environment's server (only one forge made)",
                       description=_DESTROY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("environment", metavar="ENV", help="environment name in forge.yml")
    d.add_argument("--confirm", metavar="NAME", help="the server's name, to confirm")
    d.set_defaults(func=cmd_destroy)


def _site(ctx: Context) -> tuple[LoadedConfig, Site]:
    loaded = ctx.config()
    name = str(ctx.args.environment)
    loaded.environment(name)  # ConfigError with a suggestion for an unknown name
    return loaded, resolve(loaded.config, name, str(loaded.path))


def _runtime(ctx: Context) -> reconcile.Runtime:
    from forge_ci.provision import reconcile

    return reconcile.Runtime(log=ctx.runner.log, warn=ctx.runner.warning, group=ctx.runner.group)


def cmd_provision(ctx: Context) -> int:
    from forge_ci.provision import reconcile
    from forge_ci.provision.hostkeys import generate_host_key
    from forge_ci.provision.providers import make_provider
    from forge_ci.remote.ssh import parse_private_key

    loaded, site = _site(ctx)
    prov = provision_section(loaded.config, str(loaded.path))
    policy = ProvisionPolicy.from_config(prov.wait)
    provider = make_provider(prov, ctx.environ, policy, ctx.runner.log, site=site,
                             hosts=loaded.config.environments[site.environment].hosts)
    key_text = ctx.environ.get("FORGE_SSH_KEY")
    if not key_text:
        raise SecretError("FORGE_SSH_KEY is not set",
                          hint="the deploy key: its public half becomes the deploy user's login")
    deploy_key = parse_private_key(key_text)
    host_key = generate_host_key()
    spec = reconcile.build_spec(site, user_labels=prov.labels, ssh_sources=prov.ssh_sources,
                             deploy_key=deploy_key, host_key=host_key)
    outcome = reconcile.provision(
        provider, spec, site, host_key=host_key, deploy_key=deploy_key,
        pinned=ctx.environ.get("FORGE_KNOWN_HOSTS") or None, plan_only=ctx.dry_run,
        wait=bool(ctx.args.wait), policy=policy, rt=_runtime(ctx))
    _report(ctx, site, outcome, _hosts_hint(loaded, site, outcome))
    return 0


def _hosts_hint(loaded: LoadedConfig, site: Site, outcome: reconcile.Outcome) -> str | None:
    """What to change in forge.yml so deploy goes to this server, if anything."""
    server = outcome.server
    if not outcome.applied or server is None or not server.ipv4:
        return None
    hosts = loaded.config.environments[site.environment].hosts
    if any(h.host == server.ipv4 for h in hosts):
        return None
    where = f"environments.{site.environment}.hosts"
    entry = f"{{ host: {server.ipv4}, port: {site.ssh_port}, user: {site.deploy_user} }}"
    if hosts:
        return f"{where} does not list {server.ipv4}: deploys go elsewhere until it does ({entry})"
    return f"to deploy to this server, set {where}: [{entry}] and path: {site.path}"


def _report(ctx: Context, site: Site, outcome: reconcile.Outcome, hint: str | None) -> None:
    server = outcome.server
    if hint:
        ctx.runner.warning(hint)
    if outcome.applied and server is not None and server.ipv4:
        ctx.runner.set_output("ip", server.ipv4)
        if outcome.known_hosts:
            ctx.runner.set_output("known-hosts", outcome.known_hosts)
    ctx.runner.summary(_summary(site, outcome))
    lines = [f"{'plan for' if not outcome.applied else 'server'} {site.server_name} "
             f"({site.environment}):"]
    lines += [f"  {line}" for line in outcome.plan.lines()]
    if not outcome.applied:
        lines.append("plan only: nothing was changed")
    elif server is not None:
        lines.append(f"ip: {server.ipv4}")
        if outcome.known_hosts:
            lines.append(f"known_hosts ({outcome.host_key}): {outcome.known_hosts}")
        if outcome.https:
            lines.append(f"https: {outcome.https}")
    ctx.emit(outcome.as_dict(), "\n".join(lines))


def _summary(site: Site, outcome: reconcile.Outcome) -> str:
    title = "Plan" if not outcome.applied else "Provisioned"
    rows = [f"### {title}: `{site.server_name}` ({site.environment})", "",
            "| | |", "|---|---|"]
    server = outcome.server
    if server is not None:
        rows.append(f"| server | id {server.id}, {server.server_type} in {server.location} |")
        rows.append(f"| IPv4 | `{server.ipv4}` |")
    if outcome.applied:
        rows.append(f"| host key | {outcome.host_key} |")
        rows.append(f"| cloud-init | {outcome.cloud_init or 'not waited for'} |")
        if outcome.https:
            rows.append(f"| HTTPS | {_md(outcome.https)} |")
    out = "\n".join(rows) + "\n\nChanges:\n\n" + "\n".join(
        f"- `{line}`" for line in outcome.plan.lines())
    if outcome.known_hosts:
        out += f"\n\nknown_hosts:\n\n```\n{outcome.known_hosts}\n```"
    if outcome.warnings:
        out += "\n\n" + "\n".join(f"> **Warning:** {_md(w)}" for w in outcome.warnings)
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def cmd_destroy(ctx: Context) -> int:
    from forge_ci.provision import reconcile
    from forge_ci.provision.providers import make_provider

    loaded, site = _site(ctx)
    prov = provision_section(loaded.config, str(loaded.path))
    name = site.server_name
    if prov.provider == "ssh":
        from forge_ci.provision.ssh.provider import refuse_destroy

        hosts = loaded.config.environments[site.environment].hosts
        raise refuse_destroy(hosts[0].host if hosts else name)
    confirm = ctx.args.confirm
    if not ctx.dry_run and confirm != name:
        # Checked before any API call: a typo must not even look the server up.
        problem = ("destroy deletes the server and everything on it" if confirm is None
                   else f"--confirm {confirm!r} is not the server's name")
        raise UsageError(problem, hint=f"pass --confirm {name} to delete server {name}")
    policy = ProvisionPolicy.from_config(prov.wait)
    provider = make_provider(prov, ctx.environ, policy, ctx.runner.log, site=site)
    plan = reconcile.destroy(provider, name, forge_labels(site.project, site.environment),
                          plan_only=ctx.dry_run, rt=_runtime(ctx))
    _report_destroy(ctx, plan, done=not ctx.dry_run)
    return 0


def _report_destroy(ctx: Context, plan: Plan, *, done: bool) -> None:
    verb = "destroyed" if done and not plan.empty else "would destroy" if not done else "nothing"
    lines = [f"{verb}: {plan.server_name}", *(f"  {line}" for line in plan.lines())]
    ctx.runner.summary(f"### Destroy: `{plan.server_name}`\n\n"
                       + "\n".join(f"- {_md(line)}" for line in plan.lines()))
    ctx.emit({**plan.as_dict(), "destroyed": done and not plan.empty}, "\n".join(lines))
