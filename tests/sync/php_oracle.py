"""PHP as the oracle: one long-running `php oracle.php` shared by the sync tests."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ORACLE = Path(__file__).with_name("oracle.php")


class Php:
    """One long-running `php oracle.php`: a JSON request per line, a JSON answer per line."""

    def __init__(self) -> None:
        php = shutil.which("php")
        if php is None:
            pytest.fail("php is not on PATH: the oracle test needs php-cli (never skipped)")
        self.proc = subprocess.Popen(
            [php, str(ORACLE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the PHP oracle died (exit {self.proc.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)

    def check(self, source: bytes, output: bytes) -> dict[str, Any]:
        """PHP's verdict on OUTPUT as the rewrite of SOURCE: readable, equal, expected."""
        return self.ask(
            {
                "op": "check",
                "source": base64.b64encode(source).decode(),
                "output": base64.b64encode(output).decode(),
            }
        )
