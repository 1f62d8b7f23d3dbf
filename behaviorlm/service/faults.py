"""What can go wrong with a prediction, in the service's own words: no HTTP here.

The runtime and the predictor raise these; ``behaviorlm.service.errors`` turns each kind into
its HTTP status (and ``Retry-After``) at the edge, in the one error body. Each carries the
message the client reads, the request field it concerns, the ``error.type`` of the body and,
where waiting helps, the seconds to wait before a retry.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceFault(Exception):
    """A failure the client is meant to read."""

    default_type: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        type: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.type = type or self.default_type
        self.retry_after_s = retry_after_s


class InvalidRequest(ServiceFault):
    """The request cannot be scored as written (a field names what is wrong)."""

    default_type = "invalid_request"


class AdapterNotFound(ServiceFault):
    """The request names an adapter that is not loaded."""

    default_type = "adapter_not_found"


class NotReady(ServiceFault):
    """The engine is loading, recovering, draining or stopped."""

    default_type = "unavailable"


class Overloaded(ServiceFault):
    """Admission refused the work: it could not finish within its deadline, or the queue is
    full."""

    default_type = "overloaded"


class DeadlineExceeded(ServiceFault):
    """Admitted, but not finished within the deadline; the engine work was dropped."""

    default_type = "deadline_exceeded"


class EngineFailed(ServiceFault):
    """The engine raised; the service is not ready until a canary passes again."""

    default_type = "engine_error"
