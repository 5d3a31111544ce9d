"""The contract's error shape and the HTTP status each code maps to."""

from __future__ import annotations

from typing import Any

STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_request": 400,
    "payload_too_large": 413,
    "group_full": 409,
    "group_closed": 409,
    "already_member": 409,
    "limit_reached": 409,
    "out_of_stock": 409,
    "campaign_not_active": 409,
    "already_bound": 409,
    "return_window_closed": 409,
    "refund_exceeds_order": 409,
    "insufficient_balance": 409,
    "already_reviewed": 409,
    "already_distributor": 409,
    "invalid_notification": 400,
    "payment_failed": 502,
    "rate_limited": 429,
    "too_many_connections": 429,
    "uri_too_long": 414,
    "headers_too_large": 431,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    """A request refused with a contract error code.

    A refusal the client should simply retry later (`rate_limited`) says when:
    `retry_after_ms`, carried in the error object (and as HTTP's `Retry-After`).
    """

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def status(self) -> int:
        return status_of(self.code)

    def error(self) -> dict[str, Any]:
        """The `error` object of the contract's shape."""
        found: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            found["retry_after_ms"] = self.retry_after_ms
        return found

    def body(self) -> dict[str, Any]:
        return {"error": self.error()}


def status_of(code: str) -> int:
    """HTTP status for a contract error code (409 for game refusals not listed)."""
    return STATUS.get(code, 409)
