"""The ``backup:`` section of an environment (owned by the backup package)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseConfig(_Frozen):
    name: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password: SecretStr
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class Retention(_Frozen):
    keep_last: Annotated[int, Field(ge=1)] | None = None
    keep_hourly: Annotated[int, Field(ge=1)] | None = None
    keep_daily: Annotated[int, Field(ge=1)] | None = None
    keep_weekly: Annotated[int, Field(ge=1)] | None = None
    keep_monthly: Annotated[int, Field(ge=1)] | None = None
    keep_yearly: Annotated[int, Field(ge=1)] | None = None
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        counts = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly,
                  self.keep_monthly, self.keep_yearly)
        if all(c is None for c in counts):
            raise ValueError("an empty retention policy would delete every snapshot; "
                             "set at least one keep_* count")
        return self


class BackupConfig(_Frozen):
    store: str = Field(pattern=r"^(s3|file)://")
    database: DatabaseConfig | None = None
    paths: tuple[str, ...] = ()
    retention: Retention | None = None
