"""forge_ci: deploy, back up and provision Roots Bedrock WordPress sites from CI."""

__version__ = "0.1.0"
