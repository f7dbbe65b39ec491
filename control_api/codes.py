"""Result codes of the Voice-Call API (spec §8.3) and their HTTP status ("Our decisions")."""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    SUCCESS = "0"
    INTERNAL = "1010001"
    INVALID_REQUEST = "1010002"
    INVALID_APP_KEY = "1010003"
    INVALID_API = "1010006"
    ACCOUNT_INACTIVE = "1010007"
    APP_SUSPENDED = "1010008"
    FLOW_CONTROL = "1010010"
    TIME_OUT_LIMIT = "1010013"
    INVALID_DISPLAY_NUMBER = "1010023"
    INVALID_CALLER_NUMBER = "1010024"
    DEVELOPER_CALL_LIMIT = "1013001"
    APP_CALL_LIMIT = "1013002"
    DISPLAY_CALL_LIMIT = "1013003"
    BLACKLIST = "1013004"
    CONCURRENCY = "1020165"
    IP_NOT_ALLOWED = "1020166"
    AUTH_BLOCKED = "1020176"
    AKSK_MISSING = "1023033"
    USERNAME_MISSING = "1023034"
    NONCE_MISSING = "1023035"
    CREATED_MISSING = "1023036"
    DIGEST_MISSING = "1023037"
    PAYLOAD_TOO_LARGE = "1010414"  # our own: no published code for an oversized body
    NOT_FOUND = "1010404"          # our own: unknown session / record / admin object


HTTP_STATUS: dict[Code, int] = {
    Code.SUCCESS: 200,
    Code.INTERNAL: 500,
    Code.INVALID_REQUEST: 400,
    Code.INVALID_DISPLAY_NUMBER: 400,
    Code.INVALID_CALLER_NUMBER: 400,
    Code.INVALID_APP_KEY: 401,
    Code.TIME_OUT_LIMIT: 401,
    Code.AKSK_MISSING: 401,
    Code.USERNAME_MISSING: 401,
    Code.NONCE_MISSING: 401,
    Code.CREATED_MISSING: 401,
    Code.DIGEST_MISSING: 401,
    Code.INVALID_API: 405,
    Code.ACCOUNT_INACTIVE: 403,
    Code.APP_SUSPENDED: 403,
    Code.FLOW_CONTROL: 403,
    Code.DEVELOPER_CALL_LIMIT: 403,
    Code.APP_CALL_LIMIT: 403,
    Code.DISPLAY_CALL_LIMIT: 403,
    Code.BLACKLIST: 403,
    Code.CONCURRENCY: 403,
    Code.IP_NOT_ALLOWED: 403,
    Code.AUTH_BLOCKED: 403,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.NOT_FOUND: 404,
}

DEFAULT_DESC: dict[Code, str] = {
    Code.SUCCESS: "Success",
    Code.INTERNAL: "Internal system error.",
    Code.INVALID_REQUEST: "Invalid request.",
    Code.INVALID_APP_KEY: "Invalid app_key.",
    Code.INVALID_API: "Invalid Rest API.",
    Code.ACCOUNT_INACTIVE: "User is not active.",
    Code.APP_SUSPENDED: "app_key is suspended.",
    Code.FLOW_CONTROL: "Flow control: too many requests in progress, retry later.",
    Code.TIME_OUT_LIMIT: "Time out limit.",
    Code.INVALID_DISPLAY_NUMBER: "Display number invalid.",
    Code.INVALID_CALLER_NUMBER: "Invalid caller number.",
    Code.CONCURRENCY: "The appkey call port of using exceeds the limited.",
    Code.AUTH_BLOCKED: "Authentication failed, try again later.",
    Code.AKSK_MISSING: "X-AKSK header is missing.",
    Code.USERNAME_MISSING: "Username is missing.",
    Code.NONCE_MISSING: "Nonce is missing.",
    Code.CREATED_MISSING: "Created is missing.",
    Code.DIGEST_MISSING: "PasswordDigest is missing.",
    Code.PAYLOAD_TOO_LARGE: "Request body too large.",
    Code.NOT_FOUND: "Not found.",
}


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as ``{"resultcode","resultdesc"}`` with
    the HTTP status of :data:`HTTP_STATUS` unless ``status`` overrides it."""

    def __init__(self, code: Code, desc: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.desc = desc if desc is not None else DEFAULT_DESC.get(code, "Error.")
        self.status = status if status is not None else HTTP_STATUS.get(code, 400)
        super().__init__(f"{code.value} {self.desc}")


def invalid(what: str) -> ApiError:
    """``1010002`` with the parameter named the way the vendor does: ``Invalid request.<what>``."""
    return ApiError(Code.INVALID_REQUEST, f"Invalid request.{what}")
