"""FORMAT.md's promise: with forge gone, `age`, `zstd`, `jq` and bash restore a
snapshot. The procedure is taken from FORMAT.md itself and run as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import forge_ci.backup

from .conftest import Site

FORMAT = Path(forge_ci.backup.__file__).with_name("FORMAT.md")


def _procedure() -> str:
    text = FORMAT.read_text()
    section = text[text.index("Restoring by hand"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "FORMAT.md lost its by-hand restore"
    return match.group(1)


def test_the_documented_procedure_restores_a_snapshot_without_forge(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site: Site = make_site(store="file")
    (site.uploads / "video.mp4").write_bytes(os.urandom(5_000_000))  # three segments
    site.chown()
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    script = _procedure()
    script = re.sub(r"^m=.*$", f"m=snapshots/backup-lab/production/{sid}", script, flags=re.M)
    script = script.replace("key.txt", str(site.identity_file))
    work = lab_dir / "by-hand"
    work.mkdir()
    store = lab_dir / "store"
    # Run inside a copy of the store's layout: the keys are relative paths.
    (work / "data").symlink_to(store / "data")
    (work / "snapshots").symlink_to(store / "snapshots")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()

    restored = work / "restore" / "shared" / "web" / "app" / "uploads"
    want = {p.relative_to(site.uploads): p.read_bytes() for p in site.uploads.rglob("*")
            if p.is_file() and not p.is_symlink()}
    got = {p.relative_to(restored): p.read_bytes() for p in restored.rglob("*")
           if p.is_file() and not p.is_symlink()}
    # As FORMAT.md says, names with a tab or a newline (or not UTF-8) come out
    # mangled by the simple loop - but their contents are all there.
    def plain_name(p: Path) -> bool:
        name = str(p)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False  # a non-UTF-8 name, kept as a lone surrogate
        return "\t" not in name and "\n" not in name
    simple = {k: v for k, v in want.items() if plain_name(k)}
    assert {k: got.get(k) for k in simple} == simple and len(simple) > 20
    assert sorted(got.values()) == sorted(want.values())
    dump = (work / "dump.sql").read_bytes()
    assert b"CREATE TABLE" in dump
    assert dump.rstrip().splitlines()[-1].startswith(b"-- Dump completed")


def _signature_check() -> str:
    text = FORMAT.read_text()
    section = text[text.index("Checking a signature by hand"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "FORMAT.md lost its by-hand signature check"
    return match.group(1)


def test_the_documented_signature_check_runs_as_written(  # type: ignore[no-untyped-def]
        make_site, lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """openssl, with the pinned public key from forge.yml, accepts the signature forge
    wrote - and refuses it for another key or another snapshot's name."""
    from forge_ci.backup.signing import SigningKey

    site: Site = make_site(store="file", big=10_000)
    sid = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    other = site.json(capsys, "backup", "production", read=False)["snapshot_id"]
    store = lab_dir / "store"

    def check(snapshot: str, signer: str, work: Path) -> subprocess.CompletedProcess[bytes]:
        script = _signature_check()
        script = re.sub(r"^m=.*$", f"m=snapshots/backup-lab/production/{snapshot}", script,
                        flags=re.M)
        script = re.sub(r"^signer=\S+", f"signer={signer}", script, flags=re.M)
        script = script.replace("key.txt", str(site.identity_file))
        work.mkdir()
        for top in ("snapshots", "signatures"):
            (work / top).symlink_to(store / top)
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work,
                              capture_output=True, timeout=60)

    pinned = str(site.signing_key.public)
    done = check(sid, pinned, lab_dir / "ok")
    assert done.returncode == 0, done.stderr.decode()
    assert b"Signature Verified Successfully" in done.stdout
    assert check(sid, str(SigningKey.generate().public), lab_dir / "unpinned").returncode == 1
    # Another snapshot's signature copied over this one's does not verify.
    sig = store / "signatures" / "backup-lab" / "production"
    (sig / sid).write_bytes((sig / other).read_bytes())
    moved = check(sid, pinned, lab_dir / "moved")
    assert moved.returncode == 1 and b"Signature Verification Failure" in moved.stdout
