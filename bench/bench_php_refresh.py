"""Switch -> new release served, when PHP caches hard: opcache-reset against a
graceful FPM reload (the reference), on the same site, under load.

    .venv/bin/python bench/bench_php_refresh.py   (as root) [--deploys 10]

Real WordPress (the example site) on the lab's nginx + PHP-FPM + MariaDB, reached
over real SSH. nginx passes the symlinked path ($document_root) and the pool runs
opcache with validate_timestamps=0, so after a switch PHP keeps running the old
release until something refreshes it (one deploy with refresh: none shows that
first). Then --deploys deploys with `php.refresh: opcache-reset` and as many with
`refresh: command` (SIGUSR2 to the FPM master: a graceful reload), alternating,
while two clients request the home page without pause. Printed per method: the
time from the switch (seen by watching the `current` link) until a client that
polls the marker page first gets the new release's id; the time forge measured
from the end of the switch until all its checks passed (the home page's first
render after a reset compiles WordPress afresh); the refresh step alone; the
failed requests.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from lab._proc import lab_root  # noqa: E402
from lab.mariadb import start_mariadb  # noqa: E402
from lab.site import WordPressSite, start_site  # noqa: E402
from lab.sshd import start_sshd  # noqa: E402

from forge_ci.deploy import php_refresh  # noqa: E402
from tests.deploy.sshsite import Load, SshSite  # noqa: E402

STALE_POOL = {
    "opcache.validate_timestamps": "0",
    "opcache.revalidate_path": "0",
    "opcache.file_update_protection": "0",
}
_REFRESH_TIME = re.compile(r": PHP: .*\((\d+\.\d+)s\)$", re.MULTILINE)


@dataclass
class Watch:
    """What a client polling the marker page saw around one deploy."""

    to_new: float | None = None  # switch of `current` -> first answer with the new id
    # Answers with the old id from requests started after the first new one:
    # before forge's refresh step returned (the cache's restart still pending),
    # and after it (must be 0: from then on PHP runs the new release everywhere).
    old_during_refresh: int = 0
    old_after_refresh: int = 0


# When the refresh step returned, recorded around forge's own function (the
# bench runs forge in this process); a measurement hook, not a change of behaviour.
_refreshed: list[float] = []
_refresh = php_refresh.refresh


def _timed_refresh(*args: Any, **kwargs: Any) -> str | None:
    done = _refresh(*args, **kwargs)
    _refreshed.append(time.monotonic())
    return done


php_refresh.refresh = _timed_refresh


@contextmanager
def marker_watch(wp: WordPressSite) -> Iterator[Watch]:
    import requests

    stop = threading.Event()
    switched: list[tuple[float, str]] = []
    seen: list[tuple[float, float, str]] = []  # (request start, answer, release)
    link = wp.path / "current"

    def watch_link() -> None:
        before = os.readlink(link)
        while not stop.is_set():
            now = os.readlink(link)
            if now != before:
                switched.append((time.monotonic(), now.rsplit("/", 1)[-1]))
                return
            time.sleep(0.001)

    def poll_marker() -> None:
        with requests.Session() as http:
            while not stop.is_set():
                began = time.monotonic()
                text = http.get(f"{wp.url}/forge-release.php", timeout=10).text
                seen.append((began, time.monotonic(),
                             text.strip().removeprefix("forge-release:")))

    threads = [threading.Thread(target=f, daemon=True) for f in (watch_link, poll_marker)]
    for t in threads:
        t.start()
    watch = Watch()
    _refreshed.clear()
    try:
        yield watch
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    if not switched:
        return
    at, release = switched[0]
    first = next((end for _, end, r in seen if end >= at and r == release), None)
    if first is None:
        return
    watch.to_new = first - at
    done = next((t for t in _refreshed if t > at), float("inf"))
    old = [began for began, _, r in seen if began > first and r != release]
    watch.old_during_refresh = sum(1 for began in old if began < done)
    watch.old_after_refresh = sum(1 for began in old if began >= done)


def deploy(site: SshSite) -> tuple[int, dict[str, object], str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = site.forge("deploy", "production", "--json")
    try:
        return code, json.loads(out.getvalue() or "{}"), err.getvalue()
    except ValueError:
        return code, {}, err.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploys", type=int, default=10, help="per method")
    args = ap.parse_args()
    db = start_mariadb()
    wp = start_site(db, symlinked_root=True, php_admin=STALE_POOL)
    host = start_sshd()
    reload = json.dumps(wp.reload_command)
    methods = {
        "opcache-reset": f"{{ refresh: opcache-reset, fpm_socket: '{wp.fpm_socket}' }}",
        "graceful reload": f"{{ refresh: command, reload_command: {reload} }}",
    }
    try:
        site = SshSite.create(lab_root(), wp, [host])
        site.configure(f"    php: {methods['opcache-reset']}\n    keep_releases: 3\n")
        code, _, err = deploy(site)
        assert code == 0, err + wp.logs()
        site.configure("    php: { refresh: none }\n")
        site.set_version("stale")
        code, _, _ = deploy(site)
        print(f"refresh: none -> exit {code} (3: the marker check saw the old release, "
              "rolled back)")
        latency: dict[str, list[float]] = {m: [] for m in methods}
        to_marker: dict[str, list[float]] = {m: [] for m in methods}
        old_during: dict[str, int] = {m: 0 for m in methods}
        old_after: dict[str, int] = {m: 0 for m in methods}
        refresh: dict[str, list[float]] = {m: [] for m in methods}
        codes: dict[str, list[int]] = {m: [] for m in methods}
        attempts: dict[str, Counter[str]] = {m: Counter() for m in methods}
        failures: dict[str, Counter[int | str]] = {m: Counter() for m in methods}
        n = 0
        for _ in range(args.deploys):
            for method, php in methods.items():
                n += 1
                site.configure(f"    php: {php}\n    keep_releases: 3\n")
                site.set_version(f"v{n}")
                with Load(wp.url + "/") as load, marker_watch(wp) as marker:
                    code, out, err = deploy(site)
                if marker.to_new is not None:
                    to_marker[method].append(marker.to_new)
                old_during[method] += marker.old_during_refresh
                old_after[method] += marker.old_after_refresh
                codes[method].append(code)
                failures[method].update(load.failures)
                if isinstance(out.get("switch_to_healthy"), float):
                    latency[method].append(float(out["switch_to_healthy"]))  # type: ignore[arg-type]
                refresh[method] += [float(x) for x in _REFRESH_TIME.findall(err)]
                attempts[method][str(out.get("health", "?"))] += 1
        for method in methods:
            lat, ref = latency[method], refresh[method]
            print(f"{method}: exit codes {codes[method]}; failed requests "
                  f"{sum(failures[method].values())} {dict(failures[method]) or ''}")
            if to_marker[method]:
                m = to_marker[method]
                print(f"  switch -> a client first sees the new marker: median "
                      f"{statistics.median(m) * 1000:.0f} ms, max {max(m) * 1000:.0f} ms")
                print(f"  then the old marker again: {old_during[method]} times while the "
                      f"refresh step ran, {old_after[method]} after it returned")
            if lat:
                print(f"  switch -> forge's checks green: median "
                      f"{statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
            if ref:
                print(f"  refresh step (one SSH command): median "
                      f"{statistics.median(ref) * 1000:.0f} ms")
            print(f"  checks: {dict(attempts[method])}")
        for what, data in (("new marker", to_marker), ("checks green", latency)):
            a, b = data["opcache-reset"], data["graceful reload"]
            if a and b:
                print(f"opcache-reset / graceful reload, switch -> {what}: "
                      f"{statistics.median(a) / statistics.median(b):.2f}x")
    finally:
        host.close()
        wp.close()
        db.close()


if __name__ == "__main__":
    main()
