"""Build once in CI: the artifact a release is made from."""

from forge_ci.build.builder import Artifact, build, open_artifact
from forge_ci.build.manifest import Manifest

__all__ = ["Artifact", "Manifest", "build", "open_artifact"]
