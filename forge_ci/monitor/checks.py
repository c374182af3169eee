"""The monitor's checks. Each returns a :class:`Check` and never raises for what it
finds (a site that is down is a result, not an error).

=========== ==================================================== =====================
check       warning                                              critical
=========== ==================================================== =====================
http URL    answers slower than ``monitor.response_max``         no answer, wrong status
                                                                 or text
tls H:P     fewer than ``monitor.tls_min_days`` days left         expired, untrusted,
                                                                 wrong name, no TLS
backup      -                                                    newest authenticated
                                                                 snapshot older than
                                                                 ``monitor.backup_max_age``
                                                                 (or none)
disk HOST   free space below twice ``monitor.disk_min_free``     below it
lock HOST   the deploy lock held longer than                     -
            ``monitor.lock_max_age``
schedule    no repository activity for 50 days (GitHub disables  -
            scheduled workflows after 60)
=========== ==================================================== =====================
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from forge_ci import tls
from forge_ci.config.models import EnvironmentConfig
from forge_ci.deploy.releases import Layout
from forge_ci.remote.base import Host, sh
from forge_ci.tls import Severity

SCHEDULE_WARN_DAYS = 50
SCHEDULE_DISABLED_DAYS = 60


@dataclass(frozen=True)
class Check:
    """One finding. ``name`` is stable between runs (the state file's key)."""

    name: str
    severity: Severity
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "severity": self.severity.value, "detail": self.detail}


def worst(checks: Sequence[Check]) -> Severity:
    order = [Severity.OK, Severity.WARNING, Severity.CRITICAL]
    return max((c.severity for c in checks), key=order.index, default=Severity.OK)


def check_http(url: str, *, status: int = 200, contains: str | None = None,
               response_max: float, cafile: str | None = None,
               timeout: float = 10.0, clock: Callable[[], float] = time.monotonic,
               retries: int = 1, sleep: Callable[[float], None] = time.sleep) -> Check:
    """One GET; a connection that fails is tried ``retries`` more times on a fresh one
    before the site counts as down (one dropped connection is not an outage)."""
    name = f"http {url}"
    for attempt in range(retries + 1):
        started = clock()
        try:
            r = requests.get(url, timeout=timeout, allow_redirects=False,
                             verify=cafile or True, headers={"Cache-Control": "no-cache"})
            break
        except requests.RequestException as e:
            if attempt == retries:
                return Check(name, Severity.CRITICAL, f"no answer ({type(e).__name__})")
            sleep(1.0)
    took = clock() - started
    if r.status_code != status:
        return Check(name, Severity.CRITICAL, f"HTTP {r.status_code}, expected {status}")
    if contains is not None and contains not in r.text:
        return Check(name, Severity.CRITICAL, f"HTTP {r.status_code} without {contains!r}")
    if took > response_max:
        return Check(name, Severity.WARNING,
                     f"HTTP {r.status_code} in {took:.2f}s (more than {response_max:g}s)")
    return Check(name, Severity.OK, f"HTTP {r.status_code} in {took:.2f}s")


def check_tls(url: str, *, min_days: int, cafile: str | None = None,
              now: dt.datetime | None = None) -> Check:
    report = tls.inspect_url(url, cafile=Path(cafile) if cafile else None, now=now)
    severity = report.severity(min_days)
    detail = report.summary()
    if severity is Severity.WARNING:
        detail += f" (fewer than {min_days}: renew it)"
    return Check(f"tls {report.host}:{report.port}", severity, detail)


def check_backup(newest: dt.datetime | None, *, max_age: float, now: dt.datetime) -> Check:
    if newest is None:
        return Check("backup", Severity.CRITICAL, "no authenticated snapshot in the store")
    age = (now - newest).total_seconds()
    text = f"newest snapshot {_ago(age)} old ({newest:%Y-%m-%d %H:%M} UTC)"
    if age > max_age:
        return Check("backup", Severity.CRITICAL, f"{text}: more than {_ago(max_age)}")
    return Check("backup", Severity.OK, text)


def check_disk(host: Host, path: str, *, min_free: float) -> Check:
    name = f"disk {host.name}"
    r = host.run(f"df -P {sh(path)}", check=False, timeout=60)
    lines = r.text.strip().splitlines() if r.status == 0 else []
    try:
        fields = lines[-1].split()
        size, avail = int(fields[1]), int(fields[3])
        free = 100.0 * avail / size if size else 0.0
    except (IndexError, ValueError):
        return Check(name, Severity.CRITICAL, f"could not read free space (df exit {r.status})")
    text = f"{free:.1f}% free on {fields[5] if len(fields) > 5 else path}"
    if free < min_free:
        return Check(name, Severity.CRITICAL, f"{text} (less than {min_free:g}%)")
    if free < 2 * min_free:
        return Check(name, Severity.WARNING, f"{text} (less than {2 * min_free:g}%)")
    return Check(name, Severity.OK, text)


def check_lock(host: Host, layout: Layout, *, max_age: float, now: dt.datetime) -> Check:
    """Held when the kernel lists a flock on the lock file's inode in ``/proc/locks``;
    its age comes from the owner file. Looking never takes the lock, so a deploy that
    starts at the same moment cannot find it busy because of the monitor."""
    name = f"lock {host.name}"
    script = (f"ino=$(stat -c %i {sh(layout.lock)} 2>/dev/null) || exit 0\n"
              'grep -q "FLOCK .*:$ino " /proc/locks 2>/dev/null || exit 0\n'
              f"echo held; cat {sh(layout.lock_owner)} 2>/dev/null; exit 0")
    r = host.run(script, check=False, timeout=60)
    out = r.text.strip().splitlines()
    if not out or out[0] != "held":
        return Check(name, Severity.OK, "free")
    try:
        owner = json.loads(out[1])
        since = dt.datetime.strptime(owner["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (IndexError, ValueError, KeyError, TypeError):
        return Check(name, Severity.WARNING, "held by an unknown owner")
    who = ", ".join(f"{k} {owner[k]}" for k in ("command", "actor", "run") if owner.get(k))
    age = (now - since).total_seconds()
    text = f"held {_ago(age)} ({who or 'owner unknown'})"
    if age > max_age:
        return Check(name, Severity.WARNING, f"{text}: more than {_ago(max_age)}, stuck?")
    return Check(name, Severity.OK, text)


def check_schedule(last_activity: dt.datetime, *, now: dt.datetime) -> Check:
    days = (now - last_activity).total_seconds() / 86400
    left = SCHEDULE_DISABLED_DAYS - days
    if days >= SCHEDULE_WARN_DAYS:
        return Check("schedule", Severity.WARNING,
                     f"no commit for {days:.0f} days: GitHub disables this schedule after "
                     f"{SCHEDULE_DISABLED_DAYS} days without activity (about {max(left, 0):.0f} "
                     "left); push a commit or re-enable it in the Actions tab")
    return Check("schedule", Severity.OK, f"last commit {days:.0f} days ago")


def _ago(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m"


_BY_FINDING = {"ok": Severity.OK, "warn": Severity.WARNING, "fail": Severity.CRITICAL}


def check_certificate(host: Host, config: EnvironmentConfig,
                      status_file: str | None = None) -> list[Check]:
    """What forge-https on ``host`` last recorded (issued / pending / failed), as doctor
    reports it: a certificate that could not be issued yet says what to fix, before the
    TLS check sees only that HTTPS does not answer."""
    from forge_ci.deploy.doctor import HTTPS_STATUS, HostFacts, https_findings, https_status

    line = https_status(host, status_file or HTTPS_STATUS)
    if not line:
        return []  # not provisioned by forge: the TLS check covers the certificate
    facts = HostFacts((), "dir", "", True, None, (), (), True, True, https=line)
    return [Check(f"https {host.name}", _BY_FINDING[f.status],
                  f.detail + (f" (fix: {f.hint})" if f.hint else ""))
            for f in https_findings(host.name, facts, config)]
