"""Failed requests seen by steady clients during deploys, bad deploys and rollbacks.

    .venv/bin/python bench/bench_zero_downtime.py   (as root) [--good 20] [--bad 5] [--rollbacks 5]

Real WordPress (the example site) on the lab's nginx + PHP-FPM + MariaDB, reached
over real SSH, with a preview route. Two clients request the home page without
pause for the whole run; every answer that is not a 200 is counted. Also printed:
the time from the switch until PHP serves the new release's marker (all checks
passing), as measured by forge in each deploy.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from lab._proc import lab_root  # noqa: E402
from lab.mariadb import start_mariadb  # noqa: E402
from lab.site import start_site  # noqa: E402
from lab.sshd import start_sshd  # noqa: E402

from tests.deploy.sshsite import Load, SshSite  # noqa: E402


def forge_json(site: SshSite, *args: str) -> tuple[int, dict[str, object]]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = site.forge(*args, "--json")
    try:
        return code, json.loads(buf.getvalue() or "{}")
    except ValueError:
        return code, {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--good", type=int, default=20)
    ap.add_argument("--bad", type=int, default=5)
    ap.add_argument("--rollbacks", type=int, default=5)
    ap.add_argument("--no-preview", action="store_true",
                    help="check after the switch instead (shows what visitors then see)")
    args = ap.parse_args()
    db = start_mariadb()
    wp = start_site(db, preview=True)
    host = start_sshd()
    try:
        site = SshSite.create(lab_root(), wp, [host])
        # Enough releases kept that five rollbacks in a row each find an older good one.
        preview = "" if args.no_preview else f"    preview: {{ url: '{wp.preview_url}' }}\n"
        site.configure(f"{preview}    keep_releases: 10\n")
        code, _ = forge_json(site, "deploy", "production")
        assert code == 0, wp.logs()
        index = site.src / "web/index.php"
        good_index = index.read_text()
        latencies: list[float] = []
        codes = {"good": [], "bad": [], "rollback": []}  # type: dict[str, list[int]]
        with Load(wp.url + "/") as load:
            for i in range(args.good):
                site.set_version(f"v{i + 2}")
                code, out = forge_json(site, "deploy", "production")
                codes["good"].append(code)
                if isinstance(out.get("switch_to_healthy"), float):
                    latencies.append(float(out["switch_to_healthy"]))  # type: ignore[arg-type]
            index.write_text("<?php http_response_code(500); echo 'fatal error';\n")
            for _ in range(args.bad):
                codes["bad"].append(forge_json(site, "deploy", "production")[0])
            index.write_text(good_index)
            for _ in range(args.rollbacks):
                codes["rollback"].append(forge_json(site, "rollback", "production")[0])
        total = sum(load.statuses.values())
        print(
            f"requests: {total}, failed (non-200 or no answer): "
            f"{sum(load.failures.values())} {dict(load.failures) or ''}"
        )
        print(
            f"exit codes: good {codes['good']}, bad {codes['bad']}, rollbacks {codes['rollback']}"
        )
        if latencies:
            print(
                f"switch -> new marker served and checks green: median "
                f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
                f"over {len(latencies)} deploys"
            )
    finally:
        host.close()
        wp.close()
        db.close()


if __name__ == "__main__":
    main()
