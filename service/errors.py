"""One exception hierarchy for the package.

Each error carries an HTTP status and a stable machine code so the selector's single
JSON error handler (and the CLI) can turn it into a message a caller can act on.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base class: something the service or the caller got wrong, with an actionable message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RolloutError):
    """The caller sent something malformed (JSON, missing or mistyped field)."""

    status = 400
    code = "bad_request"


class ReportRefused(BadRequest):
    """A report asked for something the event store does not hold (a flag, an arm, a metric)
    or an impossible window: refused before any notebook runs, so nothing is written.

    The command line exits 2 (a usage error) with the message on one `error:` line.
    """

    code = "report_refused"
    exit_code = 2


class Unauthorized(RolloutError):
    """No API key, or one the selector does not know (never echoed back)."""

    status = 401
    code = "unauthorized"


class Forbidden(RolloutError):
    """A known API key without the scope this call needs."""

    status = 403
    code = "forbidden"


class UnknownExposure(RolloutError):
    """An outcome that joins no exposure the selector served: refused, so no report counts it."""

    status = 422
    code = "unknown_exposure"


class StoreUnavailable(RolloutError):
    """The event store cannot be read right now (for a check that needs it); retry later."""

    status = 503
    code = "store_unavailable"


class UnknownFlag(RolloutError):
    """The flag named in the URL is not known to the flag client."""

    status = 404
    code = "unknown_flag"


class PayloadTooLarge(RolloutError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RolloutError):
    status = 415
    code = "unsupported_media_type"


class InputRejected(RolloutError):
    """The bento refused the inputs (schema or value error): the caller's mistake, not ours."""

    status = 422
    code = "inputs_rejected"


class BentoUnavailable(RolloutError):
    """Neither the chosen bento nor the flag's default bento could serve the request."""

    status = 503
    code = "bento_unavailable"


class FlagDefinitionError(RolloutError):
    """A flag file is invalid; `problems` lists each one with file, flag and field."""

    status = 500
    code = "invalid_flag_definition"

    def __init__(self, problems: list[FlagProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FlagProblem:
    """One problem in one flag file, located by file, flag and field."""

    def __init__(self, file: str, flag: str, field: str, message: str) -> None:
        self.file, self.flag, self.field, self.message = file, flag, field, message

    def __str__(self) -> str:
        return f"{self.file}: flag '{self.flag}': {self.field}: {self.message}"

    def __repr__(self) -> str:
        return f"FlagProblem({self})"


class ConfigError(RolloutError):
    """The service's own configuration is wrong (missing token, bad URL)."""

    code = "config_error"


class UnleashAdminError(RolloutError):
    """The Unleash Admin API refused or could not be reached; the message carries its answer."""

    status = 502
    code = "unleash_admin_error"
