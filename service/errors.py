"""Service errors, and the one place that maps every error to an HTTP status and JSON body
``{"error": <code>, "detail": <what to do>}``."""

from __future__ import annotations

from model.errors import AedmaeError


class ServiceError(AedmaeError):
    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers is not None:
            self.headers = headers


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class RequestTimeout(ServiceError):
    """The request body did not arrive in time (settings.body_timeout_s)."""

    status, code = 408, "request_timeout"


class ClientClosed(ServiceError):
    """The client hung up before its answer was ready (nginx's 499; nobody receives the body)."""

    status, code = 499, "client_closed_request"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class Overloaded(ServiceError):
    """The queue is full: try again after Retry-After seconds."""

    status, code = 429, "overloaded"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class StoreFailed(ServiceError):
    """The camera store (settings.camera_store) could not be written: nothing changed."""

    status, code = 500, "camera_store_failed"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"
