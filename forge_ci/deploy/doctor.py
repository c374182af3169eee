"""``forge-ci doctor ENV``: check a server before the first deploy and say what to fix.

Every check gives one :class:`Finding`: ``ok``, ``warn`` (works, but look) or ``fail``
(a deploy would fail or serve a broken site), with a hint for the last two.

Per host, read in one round trip:

``tools``    every command a deploy runs there (``curl`` too with ``preview.on_host``)
``path``     the deploy path exists (or its nearest parent does) and the deploy user
             can create files in it (a real temp file, not ``test -w``)
``disk``     free space on the path's filesystem is at least ``min_free``
``shared``   each shared path is on every host or on none; a shared path that names a
             file (see :func:`forge_ci.deploy.plan.names_file`) exists somewhere
``site``     a site forge did not deploy lives in the path: deploy with ``--adopt``

Then over HTTP, with files only this run can name (a random token):

``docroot``  the web server at ``url`` serves ``<path>/current/web``
``php``      PHP runs there and can read a 0600 file owned by the deploy user, as it
             must read the release's ``.env``
``preview``  the preview route serves ``<path>/<preview.link>/web`` (through ``curl`` on
             each host with ``preview.on_host``)

The probe files go into a scratch release ``releases/.forge-doctor-<token>/``: a text
file and a PHP file in its ``web/``, and the 0600 file beside ``web/`` (where a release
keeps ``.env``). When nothing is live yet, ``current`` points at the scratch release
for the probe; when a release is live, the probe files go into it instead (visitors
keep that release). The preview link is pointed at the scratch release and put back.
Everything forge wrote is removed afterwards, whatever happened. On a host forge
already deploys to, the probe holds the deploy lock, so no deploy runs meanwhile.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from forge_ci.config.models import EnvironmentConfig
from forge_ci.deploy import health
from forge_ci.deploy.observe import REQUIRED_TOOLS, SITE_UPLOADS
from forge_ci.deploy.plan import names_file, shared_paths
from forge_ci.deploy.releases import Layout
from forge_ci.errors import ForgeError
from forge_ci.remote.base import Host, sh

Status = Literal["ok", "warn", "fail"]
MIN_FREE_MB = 1024
SCRATCH_PREFIX = ".forge-doctor-"
# One line (state, time, names) that provisioning's forge-https keeps up to date.
HTTPS_STATUS = "/var/lib/forge-https/status"
Fetch = Callable[[str], tuple[int, str]]


@dataclass(frozen=True)
class Finding:
    host: str  # a host name, or the URL for checks made through it
    check: str
    status: Status
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {"host": self.host, "check": self.check, "status": self.status,
                "detail": self.detail, "hint": self.hint}

    def line(self) -> str:
        text = f"{self.status:<4}  {self.check:<8} {self.host}: {self.detail}"
        return text + (f"\n      fix: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [f.to_json() for f in self.findings]}

    def render(self) -> str:
        n = sum(f.status == "fail" for f in self.findings)
        tail = "everything a deploy needs is in place" if self.ok else f"{n} thing(s) to fix"
        return "\n".join([*(f.line() for f in self.findings), tail])


# -- one round trip per host --------------------------------------------------

@dataclass(frozen=True)
class HostFacts:
    missing_tools: tuple[str, ...]
    path: Literal["dir", "notdir", "absent"]
    nearest: str  # the path, or its nearest existing parent
    writable: bool
    free_kb: int | None
    shared: tuple[str, ...]  # shared paths present in shared/
    site_paths: tuple[str, ...]  # an existing site's paths (no releases/)
    current: bool  # current exists
    forge: bool  # .forge/ exists: forge deployed here before
    https: str = ""  # forge-https's status line (provisioned servers), "" when absent


def tools_for(config: EnvironmentConfig) -> tuple[str, ...]:
    extra = ["curl"] if config.preview and config.preview.on_host else []
    if config.php.refresh == "opcache-reset":
        extra.append("perl")
    return (*REQUIRED_TOOLS, *extra)


def _facts_script(root: str, tools: Sequence[str], shared: Sequence[str]) -> str:
    lay = Layout(root)
    wanted = " ".join(sh(p) for p in shared)
    site = " ".join(sh(p) for p in dict.fromkeys([*shared, SITE_UPLOADS]))
    return f"""\
for t in {" ".join(sh(t) for t in tools)}; do command -v "$t" >/dev/null || printf '%s ' "$t"; done
printf '\\0'
r={sh(root)}
if [ -d "$r" ]; then printf dir; elif [ -e "$r" ]; then printf notdir; else printf absent; fi
printf '\\0'
d=$r; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; printf '%s\\0' "$d"
t=$(mktemp "$d/.forge-doctor.XXXXXX" 2>/dev/null) && rm -f "$t" && printf yes; printf '\\0'
df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4}}'; printf '\\0'
if cd "$r" 2>/dev/null; then
  for p in {wanted}; do [ -e "shared/$p" ] && printf '%s\\n' "$p"; done; printf '\\0'
  if [ ! -d releases ]; then
    for p in {site}; do [ -e "$p" ] && [ ! -L "$p" ] && printf '%s\\n' "$p"; done
  fi; printf '\\0'
  [ -L current ] && printf yes; printf '\\0'
  [ -d {sh(posixpath.basename(lay.meta))} ] && printf yes; printf '\\0'
else
  printf '\\0\\0\\0\\0'
fi
head -n 1 {HTTPS_STATUS} 2>/dev/null; printf '\\0'
"""


def host_facts(host: Host, config: EnvironmentConfig, root: str) -> HostFacts:
    out = host.run(_facts_script(root, tools_for(config), shared_paths(config))).stdout
    f = [x.decode("utf-8", "replace") for x in (out.split(b"\0") + [b""] * 11)[:10]]
    path: Literal["dir", "notdir", "absent"] = (
        "dir" if f[1] == "dir" else "notdir" if f[1] == "notdir" else "absent")
    free = int(f[4]) if f[4].strip().isdigit() else None
    return HostFacts(tuple(f[0].split()), path, f[2], f[3] == "yes", free,
                     tuple(f[5].splitlines()), tuple(f[6].splitlines()), f[7] == "yes",
                     f[8] == "yes", f[9].strip())


def host_findings(name: str, facts: HostFacts, root: str, min_free: int) -> list[Finding]:
    out: list[Finding] = []
    if facts.missing_tools:
        out.append(Finding(name, "tools", "fail", f"missing {', '.join(facts.missing_tools)}",
                           "install them (Debian/Ubuntu: coreutils, tar, util-linux, curl, "
                           "perl-base) for the deploy user's PATH"))
    else:
        out.append(Finding(name, "tools", "ok", "every command a deploy runs is there"))
    if facts.path == "notdir":
        out.append(Finding(name, "path", "fail", f"{root} exists but is not a directory",
                           "move it away or set path in forge.yml to a directory"))
    elif not facts.writable:
        where = root if facts.path == "dir" else f"{facts.nearest} (to create {root})"
        out.append(Finding(name, "path", "fail", f"the deploy user cannot write in {where}",
                           f"create {root} owned by the deploy user (mkdir -p, chown)"))
    elif facts.path == "absent":
        out.append(Finding(name, "path", "warn", f"{root} does not exist yet; the first "
                           f"deploy creates it in {facts.nearest}",
                           f"create {root} now if the web server needs it to start"))
    else:
        out.append(Finding(name, "path", "ok", f"{root} is writable by the deploy user"))
    if facts.free_kb is None:
        out.append(Finding(name, "disk", "warn", f"could not read free space at {facts.nearest}",
                           "check df on the server"))
    else:
        free = facts.free_kb << 10
        text = f"{free / 2**30:.1f} GiB free at {facts.nearest}"
        if free < min_free:
            out.append(Finding(name, "disk", "fail", f"{text}, below {min_free / 2**30:.1f} GiB",
                               "free space: a release and its staged copy need room"))
        else:
            out.append(Finding(name, "disk", "ok", text))
    if facts.site_paths:
        out.append(Finding(name, "site", "warn",
                           f"{root} holds a site forge did not deploy "
                           f"({', '.join(facts.site_paths)})",
                           "first deploy with --adopt (after --adopt --dry-run) to move them "
                           "into shared/; shared must list them"))
    return out


def https_status(host: Host, path: str = HTTPS_STATUS) -> str:
    """forge-https's status line on ``host`` ("" when the file is not there)."""
    return host.run(f"head -n 1 {sh(path)} 2>/dev/null || true").text.strip()


def https_findings(name: str, facts: HostFacts, config: EnvironmentConfig) -> list[Finding]:
    """What forge-https (set up by provisioning) last said about the certificate."""
    wanted = config.https.acme != "off" if config.https else bool(
        config.url and config.url.startswith("https://"))
    if not wanted:
        return []
    state, _, rest = facts.https.partition(" ")
    names = rest.partition(" ")[2] or "the site's names"
    if state == "ok":
        return [Finding(name, "https", "ok", f"certificate issued for {names}")]
    if state == "pending":
        return [Finding(name, "https", "warn",
                        f"no certificate yet for {names}: the ACME check could not reach "
                        "this server, so the site serves plain HTTP",
                        f"point the DNS records of {names} at this server; the renewal "
                        "timer, or forge-ci provision again, then issues it")]
    if state == "failed":
        return [Finding(name, "https", "fail", f"the last certificate run for {names} failed",
                        "read `journalctl -u forge-https` on the server (or the cron "
                        "mail), fix it, then run forge-ci provision again")]
    if state == "off":
        return [Finding(name, "https", "warn", "forge-https is set to acme: off on the "
                        "server, but forge.yml wants a certificate",
                        "run forge-ci provision again to apply forge.yml's https settings")]
    return [Finding(name, "https", "warn", "no forge-https status on this server "
                    f"({HTTPS_STATUS}): the certificate is not managed by forge",
                    "fine when TLS ends elsewhere (set https: {acme: off}); else provision "
                    "the server with forge")]


def shared_findings(config: EnvironmentConfig,
                    facts: Sequence[tuple[str, HostFacts]]) -> list[Finding]:
    """The same rule as deploy's: a shared path on some hosts and not on another is
    refused, and so is a file on none."""
    out: list[Finding] = []
    for p in shared_paths(config):
        have = [n for n, f in facts if p in f.shared or p in f.site_paths]
        lacking = [n for n, f in facts if n not in have]
        if have and lacking:
            out += [Finding(n, "shared", "fail", f"shared/{p} is missing here but present on "
                            f"{', '.join(have)}",
                            f"copy shared/{p} from {have[0]} to this host") for n in lacking]
        elif not have and names_file(p):
            out += [Finding(n, "shared", "fail", f"shared file shared/{p} is missing",
                            f"create shared/{p} in the deploy path (a deploy refuses without "
                            "it unless the build contains it)") for n in lacking]
        elif not have:
            out.append(Finding("every host", "shared", "ok",
                               f"shared/{p} is on no host yet: created empty by the first "
                               "deploy"))
        else:
            out.append(Finding("every host", "shared", "ok", f"shared/{p} is on every host"))
    return out


# -- over HTTP ------------------------------------------------------------------

def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    # url comes from forge.yml, which only allows http(s).
    req = urllib.request.Request(url, headers={"User-Agent": "forge-ci doctor",  # noqa: S310
                                               "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - http(s) only
            return int(r.status), r.read(1 << 16).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 16).decode("utf-8", "replace")


def _probe_php(token: str) -> bytes:
    return (
        "<?php\n"
        "header('Content-Type: text/plain'); header('Cache-Control: no-store');\n"
        "$who = function_exists('posix_geteuid') ? posix_getpwuid(posix_geteuid())['name'] "
        ": '?';\n"
        f"$s = @file_get_contents(dirname(__DIR__) . '/forge-doctor-{token}.secret');\n"
        "echo $s === false ? \"forge-doctor:unreadable:$who\" "
        ": 'forge-doctor:read:' . trim($s) . \":$who\";\n"
    ).encode()


@dataclass(frozen=True)
class _Probe:
    token: str
    secret: str

    @property
    def scratch(self) -> str:
        return SCRATCH_PREFIX + self.token

    def files(self) -> dict[str, tuple[bytes, int]]:
        """Paths relative to a release, their content and mode."""
        t = self.token
        return {f"web/forge-doctor-{t}.txt": (f"forge-doctor:{t}\n".encode(), 0o644),
                f"web/forge-doctor-{t}.php": (_probe_php(t), 0o644),
                f"forge-doctor-{t}.secret": (self.secret.encode(), 0o600)}


def _place(host: Host, tree: str, probe: _Probe) -> None:
    host.makedirs(posixpath.join(tree, "web"))
    for rel, (data, mode) in probe.files().items():
        host.write_atomic(posixpath.join(tree, rel), data, mode)


def _url_findings(where: str, base: str, probe: _Probe, fetch: Fetch, root_dir: str,
                  check: str) -> list[Finding]:
    """docroot (static file) and php (the 0600 file) through ``base``."""
    t, base = probe.token, base.rstrip("/")
    try:
        status, body = fetch(f"{base}/forge-doctor-{t}.txt")
    except (OSError, ValueError) as e:
        return [Finding(where, check, "fail", f"{base} did not answer: {e}",
                        "start the web server, or fix url / DNS / firewall")]
    if status != 200 or f"forge-doctor:{t}" not in body:
        return [Finding(where, check, "fail",
                        f"{base} does not serve {root_dir} (a file placed there answered "
                        f"HTTP {status})",
                        f"point the web server's document root at {root_dir} "
                        f"(nginx: root {root_dir};) and reload it")]
    out = [Finding(where, check, "ok", f"{base} serves {root_dir}")]
    try:
        status, body = fetch(f"{base}/forge-doctor-{t}.php")
    except (OSError, ValueError) as e:
        return [*out, Finding(where, "php", "fail", f"PHP probe failed: {e}",
                              "check PHP-FPM and the web server's error log")]
    if "<?php" in body:
        out.append(Finding(where, "php", "fail", "PHP files are sent as text, not run",
                           "pass .php requests to PHP-FPM (nginx: fastcgi_pass)"))
    elif f"forge-doctor:read:{probe.secret}" in body:
        who = body.strip().rsplit(":", 1)[-1]
        out.append(Finding(where, "php", "ok",
                           f"PHP (running as {who}) reads a 0600 file like .env"))
    elif "forge-doctor:unreadable" in body:
        who = body.strip().rsplit(":", 1)[-1]
        out.append(Finding(where, "php", "fail",
                           f"PHP runs as {who} and cannot read a 0600 file the deploy user "
                           "owns: it could not read .env",
                           "run the PHP-FPM pool as the deploy user (user = in the pool "
                           "config), or deploy as the pool's user"))
    else:
        out.append(Finding(where, "php", "fail", f"the PHP probe answered HTTP {status}",
                           "check PHP-FPM and the web server's error log"))
    return out


Hold = Callable[[Host], AbstractContextManager[object]]


@dataclass(frozen=True)
class _Placed:
    """What the probe changed on one host, for :func:`_clean` to undo."""

    host: Host
    had_current: bool
    had_releases: bool
    old_preview: str | None  # where the preview link pointed ("" when it did not exist)


def http_findings(config: EnvironmentConfig, hosts: Sequence[Host],
                  facts: Sequence[HostFacts], root: str, fetch: Fetch = _get,
                  log: Callable[[str], None] = lambda _: None,
                  hold: Hold | None = None) -> list[Finding]:
    """docroot, php and preview, through files this run alone can name. ``hold``: the
    deploy lock, taken on hosts forge deployed to, so no deploy runs meanwhile."""
    if not config.url:
        return [Finding("-", "docroot", "warn", "no url in forge.yml: docroot and PHP not "
                        "checked", "set url so deploys can check health")]
    if any(f.path != "dir" or not f.writable or f.missing_tools for f in facts):
        # The probe needs the path and the tools a deploy needs: fix those first.
        return [Finding(config.url, "docroot", "warn", "not checked: the deploy path or its "
                        "tools are not ready (see above)", "fix those, then run doctor again")]
    lay = Layout(root)
    probe = _Probe(secrets.token_hex(8), secrets.token_hex(8))
    scratch = posixpath.join(lay.releases, probe.scratch)
    pv = config.preview
    placed: list[_Placed] = []
    with contextlib.ExitStack() as stack:
        for host, f in zip(hosts, facts, strict=True):
            if f.forge and hold is not None:
                stack.enter_context(hold(host))
        try:
            for host, f in zip(hosts, facts, strict=True):
                had_releases = host.run(f"[ -d {sh(lay.releases)} ]", check=False).status == 0
                old_pv = (host.run(f"readlink {sh(lay.link(pv.link))}", check=False).text.strip()
                          if pv else None)
                placed.append(_Placed(host, f.current, had_releases, old_pv))
                _place(host, scratch, probe)
                if pv is not None:
                    host.point_link(lay.link(pv.link), posixpath.join("releases", probe.scratch))
                if f.current:
                    _place(host, lay.current, probe)
                else:
                    host.point_link(lay.current, posixpath.join("releases", probe.scratch))
            log(f"doctor: probing {config.url} with files named forge-doctor-{probe.token}.*")
            return _probe_all(config, hosts, lay, probe, fetch)
        finally:
            for pl in placed:
                _clean(pl, lay, probe, pv.link if pv else None, log)
    raise AssertionError("unreachable")


def _probe_all(config: EnvironmentConfig, hosts: Sequence[Host], lay: Layout, probe: _Probe,
               fetch: Fetch) -> list[Finding]:
    assert config.url is not None
    out = _url_findings(config.url, config.url, probe, fetch,
                        posixpath.join(lay.current, "web"), "docroot")
    pv = config.preview
    if pv is None:
        return out
    pv_dir = posixpath.join(lay.link(pv.link), "web")
    if pv.on_host:
        for host in hosts:
            out += [x for x in _url_findings(host.name, pv.url, probe,
                                             health.fetch_on(host, 10.0), pv_dir, "preview")
                    if x.check == "preview"]
    else:
        out += [x for x in _url_findings(pv.url, pv.url, probe, fetch, pv_dir, "preview")
                if x.check == "preview"]
    return out


def _clean(pl: _Placed, lay: Layout, probe: _Probe, pv_link: str | None,
           log: Callable[[str], None]) -> None:
    """Undo :func:`http_findings`' changes; each line is safe when its change never
    happened."""
    mine = posixpath.join("releases", probe.scratch)
    script = []
    if pl.had_current:
        script.append("rm -f -- " + " ".join(sh(posixpath.join(lay.current, rel))
                                             for rel in probe.files()))
    else:
        script.append(f'[ "$(readlink {sh(lay.current)})" = {sh(mine)} ] && '
                      f"rm -f -- {sh(lay.current)}")
    if pv_link is not None:
        link = lay.link(pv_link)
        if pl.old_preview:
            script.append(f"ln -sfn -- {sh(pl.old_preview)} {sh(link)}.forge-tmp && "
                          f"mv -Tf -- {sh(link)}.forge-tmp {sh(link)}")
        else:
            script.append(f'[ "$(readlink {sh(link)})" = {sh(mine)} ] && rm -f -- {sh(link)}')
    script.append(f"rm -rf -- {sh(posixpath.join(lay.releases, probe.scratch))}")
    if not pl.had_releases:
        # An existing site must stay recognisable as one: releases/ goes too.
        script.append(f"rmdir -- {sh(lay.releases)} 2>/dev/null")
    script.append("true")
    try:
        pl.host.run("\n".join(script))
    except ForgeError as e:
        log(f"{pl.host.name}: doctor could not remove its probe files: {e.message}")


def diagnose(config: EnvironmentConfig, hosts: Sequence[Host], root: str, *,
             min_free: int = MIN_FREE_MB << 20, fetch: Fetch = _get,
             log: Callable[[str], None] = lambda _: None, hold: Hold | None = None) -> Report:
    """Every check on every host; changes nothing that outlives the call."""
    facts = [(h.name, host_facts(h, config, root)) for h in hosts]
    out: list[Finding] = []
    for name, f in facts:
        out += host_findings(name, f, root, min_free)
        out += https_findings(name, f, config)
    out += shared_findings(config, facts)
    out += http_findings(config, hosts, [f for _, f in facts], root, fetch, log, hold)
    return Report(tuple(out))
