"""Error tree of the serving package.

Client-side errors keep Triton's own message so that a user sees exactly what
the server refused; deployment errors carry the stage that failed because the
DeploymentRejected event reports it.
"""

from __future__ import annotations

from infra.errors import ModelBusError


class ServingError(ModelBusError):
    """A request to, or a change of, the serving layer failed."""


class ModelNotFound(ServingError):
    """The model or version is not loaded in Triton (gRPC NOT_FOUND)."""


class InvalidRequest(ServingError):
    """Triton or the served model refused the inputs (gRPC INVALID_ARGUMENT)."""


class ServerUnavailable(ServingError):
    """Triton could not be reached or is not ready."""

    is_transient = True   # retried by the outcome policy until Triton answers (infra/kafka/outcome.py)


class SignatureError(ServingError):
    """A signature.json does not follow the model artifact contract."""


class ArtifactError(ServingError):
    """A model artifact is missing files or fails its checksum; it is never placed in the repository."""


class RepositoryError(ServingError):
    """The Triton model repository refused a write (hostile model name, storage failure)."""
