"""Typed errors. Each carries a stable machine-readable ``code`` and a message saying what is
wrong and how to fix it; HTTP handlers turn ``status`` 4xx ones into ``{"error", "message"}``."""

from __future__ import annotations


class FacepipeError(Exception):
    """Base class: ``code`` is stable for clients, ``message`` is for people."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class InvalidRequest(FacepipeError):
    """The client sent something we cannot accept (HTTP 400 unless ``status`` says otherwise)."""

    code = "invalid_request"
    status = 400


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    status = 413


class InvalidMessage(FacepipeError):
    """A queue message that does not follow the task schema.

    ``permanent`` ones can never succeed: recognition answers them with an ``error`` result
    (when the message's request_id can be read) instead of failing the record into retries.
    """

    code = "invalid_message"
    status = 422
    permanent = True


class PayloadMissing(InvalidMessage):
    """The claim-check object a task names is gone (expired, or never written)."""

    code = "payload_missing"


class EmbedderMismatch(InvalidMessage):
    """A task cut for another embedder: a deployment mismatch, not a bad message, so the record
    fails (and is retried, then dead-lettered) until both functions agree."""

    code = "embedder_mismatch"
    permanent = False


class ConfigError(FacepipeError):
    code = "config_error"


class WeightsUnavailable(FacepipeError):
    code = "weights_unavailable"


class GalleryError(FacepipeError):
    code = "gallery_error"
