"""The one error shape of the command API: ``{"error": {"code", "message", "field"?}}``."""

from starlette.responses import JSONResponse


class ApiError(Exception):
    """A request the API refuses; ``code`` is stable, ``message`` says what is wrong."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse({"error": body}, status_code=self.status)
