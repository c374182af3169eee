"""forge.yml: models and loader."""

from forge_ci.config.loader import LoadedConfig, load, parse
from forge_ci.config.models import EnvironmentConfig, ForgeConfig, HostConfig

__all__ = ["EnvironmentConfig", "ForgeConfig", "HostConfig", "LoadedConfig", "load", "parse"]
