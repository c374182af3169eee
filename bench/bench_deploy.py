"""Deploy speed and memory against tar-over-ssh and rsync, measured in the same run.

    .venv/bin/python bench/bench_deploy.py [--files 4300] [--mb 75] [--repeat 3]
                                           [--trace FILE] [--baseline DIR]
                                           [--only first|redeploy]

A Bedrock-sized tree (WordPress core from Debian plus generated vendor and theme
assets up to the target size) is deployed over loopback SSH to a lab sshd, with
nginx + PHP-FPM serving the release marker, so the health check is real.
Prints wall times (medians over ``--repeat`` runs, alternating who goes first) and
ratios, with the load average; needs root and the lab's Debian packages.
``--trace FILE`` runs forge through bench/trace_remote.py and appends every remote
round trip of each deploy to FILE (a profile; it adds a little time).
``--baseline DIR`` also deploys with the forge of another checkout (for example
``git worktree add /tmp/ab main``), alternated with this one's in the same runs,
so a change is measured against the code it replaces under the same load.
``--only`` runs one of the two comparisons (more rounds of it in the same time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import measure  # noqa: E402  (bench/, beside this script)
from lab.bedrock import make_site  # noqa: E402
from lab.mariadb import start_mariadb  # noqa: E402
from lab.site import start_site  # noqa: E402
from lab.sshd import start_sshd  # noqa: E402
from lab.users import chown_tree  # noqa: E402


def fill(tree: Path, files: int, mb: int) -> None:
    """Top the example (with WordPress core) up to `files` files and `mb` MB."""
    have = sum(1 for p in tree.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    extra = max(files - have, 1)
    per = max((mb * 1_000_000 - size) // extra, 1)
    vendor = tree / "vendor"
    for i in range(extra):
        d = vendor / f"pkg{i // 100:03d}" / "src"
        d.mkdir(parents=True, exist_ok=True)
        # Half compressible text, half random: like PHP sources plus minified assets.
        body = (b"<?php // generated\n" * (per // 40)) + os.urandom(per // 2)
        (d / f"File{i}.php").write_bytes(body[:per])


def timed(
    argv: list[str], env: dict[str, str] | None = None, shell: bool = False,
    cwd: Path | None = None, cpu: list[float] | None = None,
) -> tuple[float, int]:
    """Wall seconds and the peak RSS in MiB of this one command (GNU time's: the command
    and what it waited for, not the lab services this script started);
    its CPU seconds (user + system) are appended to ``cpu``."""
    cpu = [] if cpu is None else cpu
    # Dirty pages from the previous run would be written back during this one.
    subprocess.run(["sync"], check=True)
    command = ["sh", "-c", " ".join(argv)] if shell else argv
    with tempfile.TemporaryFile() as err:
        try:
            wall, spent, peak = measure.spawn(command, dict(os.environ if env is None else env),
                                              cwd=None if cwd is None else str(cwd),
                                              stderr=err.fileno())
        except SystemExit:
            err.seek(0)
            raise SystemExit(f"failed: {argv}\n{err.read().decode()[-2000:]}") from None
    cpu.append(spent)
    return wall, int(peak)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4300)
    ap.add_argument("--mb", type=int, default=75)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trace", type=Path, default=None)
    ap.add_argument("--only", choices=("first", "redeploy"), default=None)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout whose forge runs alternated with this one's")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    work.chmod(0o755)
    db = start_mariadb()
    site = start_site(db)
    host = start_sshd()
    try:
        src = make_site(work / "src", "v1")
        fill(src, args.files, args.mb)
        chown_tree(work, "forgedeploy")
        n = sum(1 for p in src.rglob("*") if p.is_file())
        mb = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 1e6
        (src / "forge.yml").write_text(
            "version: 1\nproject: bench\nenvironments:\n  production:\n"
            f"    url: {site.url}\n"
            f"    hosts: [{{host: 127.0.0.1, port: {host.port}, user: forgedeploy}}]\n"
            f"    path: {site.path}\n    shared: [web/app/uploads]\n"
        )
        # This checkout's forge, wherever the venv's editable install points.
        env = dict(os.environ, **host.env(), PYTHONPATH=str(ROOT))
        # As in an action (`python -I`, which ignores PYTHON* variables), forge may
        # write its bytecode: without that, a shell that sets PYTHONDONTWRITEBYTECODE
        # makes every timed run compile forge's changed modules again (~0.09 s of CPU).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for tree in {ROOT, args.baseline or ROOT}:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "forge_ci")],
                           check=True, stdout=subprocess.DEVNULL)
        forge = [sys.executable, "-m", "forge_ci"]
        deploy_cmd = forge
        if args.trace:
            deploy_cmd = [sys.executable, str(ROOT / "bench" / "trace_remote.py")]
            env["FORGE_TRACE_OUT"] = str(args.trace)
        artifact = work / "artifact"
        subprocess.run(
            [*forge, "build", "--config", str(src / "forge.yml"), "--out", str(artifact)],
            check=True,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        ssh = " ".join(host.ssh_argv())
        ref_dir = f"/tmp/forge-bench-ref-{os.getpid()}"
        rs_dir = f"/tmp/forge-bench-rsync-{os.getpid()}"
        subprocess.run(
            host.ssh_argv(f"rm -rf {ref_dir} {rs_dir}; mkdir -p {ref_dir} {rs_dir}"), check=True
        )
        deploy = [
            *deploy_cmd,
            "deploy",
            "production",
            "--config",
            str(src / "forge.yml"),
            "--artifact",
            str(artifact),
        ]

        # After each deploy forge stages the next one's tree in the background
        # (releases/.forge-base-*.tmp): wait for that copy to end before wiping.
        wipe = host.ssh_argv(
            f"while pgrep -u \"$(id -u)\" -f 'c[p] -al' >/dev/null; do sleep 0.05; done; "
            f"rm -rf {ref_dir}/* {site.path}/releases {site.path}/current {site.path}/.forge"
        )
        base_deploy = [sys.executable, "-m", "forge_ci", *deploy[len(deploy_cmd):]]
        base_env = dict(env, PYTHONPATH=str(args.baseline or ROOT))
        base_env.pop("FORGE_TRACE_OUT", None)

        # CPU seconds of each forge run: on a loaded machine they move far less than
        # wall time, so an A/B of start-up work still shows there.
        cpus: dict[tuple[str, str], list[float]] = {}

        def run_forge(who: str, what: str = "") -> tuple[float, int]:
            spent = cpus.setdefault((who, what), [])
            if who == "baseline":
                return timed(base_deploy, env=base_env, cwd=args.baseline, cpu=spent)
            return timed(deploy, env=env, cwd=ROOT, cpu=spent)

        forges = ("forge", "baseline") if args.baseline else ("forge",)
        # Each from an empty target, so caches favour no one; medians.
        tars: list[float] = []
        firsts: dict[str, list[float]] = {w: [] for w in forges}
        rss1 = 0
        for i in range(args.repeat if args.only != "redeploy" else 0):
            # Rotate who goes first, so no one always meets another's writeback.
            order = ("tar", *forges)
            order = order[i % len(order):] + order[:i % len(order)]
            for who in order:
                subprocess.run(wipe, check=True)
                if who == "tar":
                    t, _ = timed(
                        [f"tar -C {artifact}/tree -cf - . | {ssh} 'tar -C {ref_dir} -xf -'"],
                        shell=True,
                    )
                    tars.append(t)
                else:
                    t, rss = run_forge(who, "first")
                    firsts[who].append(t)
                    rss1 = max(rss1, rss)
                print(f"  first deploy, {who}: {t:.2f}s", file=sys.stderr)
        if not (site.path / "current").is_symlink():  # the last first deploy was tar's
            subprocess.run(wipe, check=True)
            run_forge("forge")
        # One-file change: rebuild the artifact, then redeploy; rsync gets the same change.
        rsync = [
            "rsync",
            "-a",
            "--delete",
            "-e",
            " ".join(host.ssh_argv()[:-1]),
            f"{artifact}/tree/",
            f"forgedeploy@127.0.0.1:{rs_dir}/",
        ]
        timed(rsync)
        from forge_ci.build.manifest import scan

        rsyncs: list[float] = []
        seconds: dict[str, list[float]] = {w: [] for w in forges}
        rss2 = 0
        change = 0
        for i in range(args.repeat if args.only != "first" else 0):
            order = ("rsync", *forges)
            order = order[i % len(order):] + order[:i % len(order)]
            for who in order:
                if who == "rsync":
                    rsyncs.append(timed(rsync)[0])
                    continue
                change += 1
                (artifact / "tree/web/app/themes/forge-example/version.txt").write_text(
                    f"v{change + 1}\n")
                (artifact / "manifest.json").write_bytes(scan(artifact / "tree").to_bytes())
                # Deploys are minutes apart in real life: let the previous one's staged
                # copy (made in the background after it went live) finish first.
                live = os.readlink(site.path / "current").split("/")[-1]
                staged = site.path / "releases" / f".forge-base-{live}"
                for _ in range(200):
                    if staged.is_dir():
                        break
                    time.sleep(0.05)
                t, rss = run_forge(who, "redeploy")
                seconds[who].append(t)
                rss2 = max(rss2, rss)
                print(f"  redeploy: {who} {t:.2f}s (CPU {cpus[(who, 'redeploy')][-1]:.2f}s)",
                      file=sys.stderr)
        def median(xs: list[float]) -> float:
            return statistics.median(xs) if xs else float("nan")

        t_tar, t_rsync = median(tars), median(rsyncs)
        load = os.getloadavg()[0]
        print(f"tree: {n} files, {mb:.0f} MB, loopback SSH; medians of {args.repeat}; "
              f"nproc {os.cpu_count()}, load {load:.2f}")
        for who in forges:
            t_first, t_second = median(firsts[who]), median(seconds[who])
            label = "forge" if who == "forge" else f"baseline ({args.baseline})"
            print(f"{label}:")
            if args.only != "redeploy":
                print(f"  first deploy   {t_first:6.2f}s  tar|ssh tar  {t_tar:6.2f}s  "
                      f"ratio {t_first / t_tar:4.2f} (goal <= 1.0); "
                      f"CPU {median(cpus.get((who, 'first'), [])):.2f}s")
            if args.only != "first":
                print(f"  one-file redeploy {t_second:6.2f}s  rsync -a --delete {t_rsync:6.2f}s  "
                      f"ratio {t_second / t_rsync:4.2f} (goal <= 1.3); "
                      f"CPU {median(cpus.get((who, 'redeploy'), [])):.2f}s")
        print(f"peak RSS of forge: {max(rss1, rss2)} MB (goal < 150)")
        subprocess.run(host.ssh_argv(f"rm -rf {ref_dir} {rs_dir}"), check=False)
    except BaseException:
        # A failed run: keep sshd's side of it (LogLevel VERBOSE) before the lab goes.
        kept = Path(tempfile.gettempdir()) / f"forge-bench-sshd-{time.strftime('%H%M%S')}.log"
        shutil.copyfile(host.log_path, kept)
        print(f"sshd's log of this run: {kept}", file=sys.stderr)
        raise
    finally:
        host.close()
        site.close()
        db.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
