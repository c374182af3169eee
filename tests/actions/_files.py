"""Load forge's workflow and action files as data for the structural tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
REUSABLE = ("deploy", "rollback", "backup", "restore", "provision", "monitor", "drill")
ACTIONS = REUSABLE
WORKFLOW_DIRS = (REPO / ".github" / "workflows", REPO / "examples" / "workflows",
                 REPO / "tests" / "actions" / "workflows")
FORGE_USES = re.compile(r"^org/forge/(?P<path>[^@]+)@(?P<ref>.+)$")
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[^@]*)?@[0-9a-f]{40}$")


def load(path: Path) -> Any:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)  # YAML 1.1 reads a bare `on` key as True
    return doc


def workflow_files() -> list[Path]:
    return sorted(p for d in WORKFLOW_DIRS for p in [*d.glob("*.yml"), *d.glob("*.yaml")])


def action_files() -> list[Path]:
    return sorted((REPO / "actions").glob("*/action.yml"))


def reusable(name: str) -> Any:
    return load(REPO / ".github" / "workflows" / f"{name}.yml")


def action(name: str) -> Any:
    return load(REPO / "actions" / name / "action.yml")


def steps_of(doc: Any) -> Iterator[dict[str, Any]]:
    """Every step of a workflow's jobs or of a composite action."""
    if "runs" in doc:
        yield from doc["runs"].get("steps", [])
        return
    for job in (doc.get("jobs") or {}).values():
        yield from job.get("steps", []) or []
