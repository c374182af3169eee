"""The top-level ``provision:`` section (owned by the provision package)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ProvisionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["hetzner"] = "hetzner"
    server_type: str = "cx22"
    image: str = "ubuntu-24.04"
    location: str = "fsn1"
    fallback_locations: tuple[str, ...] = ()
    fallback_server_types: tuple[str, ...] = ()
    ssh_sources: tuple[str, ...] = Field(default=("0.0.0.0/0", "::/0"))
    labels: dict[str, str] = Field(default_factory=dict)
