"""The ASGI app: routes over a `ServerState`, the body-limit and API-key middlewares.

Every error is OpenAI's {"error": {"message", "type", "param", "code"}}. With an API key,
/v1/ routes want `Authorization: Bearer KEY` (401 otherwise); /health, /metrics and the
playground's page and files stay open (the page asks for the key and sends it itself).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from specdec.server.handlers import ServerState, check_model, handle_generation
from specdec.server.protocol import APIError, ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, error_body

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("specdec.server")


async def _reject(send, status: int, body: dict, headers: dict | None = None) -> None:
    await JSONResponse(body, status_code=status, headers=headers)({"type": "http"}, None, send)


class BodyLimit:
    """ASGI middleware: read the whole body first; 413 to one over max_bytes (declared or
    streamed), 408 (and the connection closed) to one not all there within timeout seconds."""

    def __init__(self, app, max_bytes: int, timeout: float, on_reject) -> None:
        self.app, self.max_bytes, self.timeout, self.on_reject = app, max_bytes, timeout, on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, 413, f"request body over the limit of {self.max_bytes} bytes", "body_too_large")
        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.timeout
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                return await self._refuse(send, 408, f"the request body did not arrive within {self.timeout:g} s", "body_timeout")
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send, 413, f"request body over the limit of {self.max_bytes} bytes", "body_too_large")
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send, status: int, message: str, code: str):
        self.on_reject(status)
        await _reject(send, status, error_body(message, code=code), headers={"connection": "close"})


class APIKeyAuth:
    """ASGI middleware: /v1/ routes want `Authorization: Bearer <key>` (as vLLM and SGLang take it)."""

    def __init__(self, app, api_key: str, on_reject) -> None:
        self.app, self.expected, self.on_reject = app, f"Bearer {api_key}".encode(), on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                self.on_reject(401)
                message = "Incorrect API key provided." if given else "Missing API key: send Authorization: Bearer <key>."
                return await _reject(send, 401, error_body(message, code="invalid_api_key"), headers={"www-authenticate": "Bearer"})
        await self.app(scope, receive, send)


def _replay(messages, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def create_app(state: ServerState, max_body_bytes: int, body_timeout: float, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        yield
        state.scheduler.join()

    app = FastAPI(title="specdec", lifespan=lifespan, docs_url=None, redoc_url=None)
    metrics = state.metrics

    def error(request: Request, status: int, body: dict) -> JSONResponse:
        if request.url.path.startswith("/v1/"):
            metrics.request_done(status)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error(request, e.status, e.body())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return error(request, 400, error_body(f"invalid JSON body: {first.get('ctx', {}).get('error', first['msg'])}", code="invalid_json"))
        where = ".".join(loc)
        param = loc[0] if loc else None
        if first.get("type") == "extra_forbidden":
            return error(request, 400, error_body(f"Unrecognized request argument supplied: {where}", param=param, code="unrecognized_argument"))
        message = str(first["msg"]).removeprefix("Value error, ")
        return error(request, 400, error_body(f"{where}: {message}" if where else message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error(request, e.status_code, error_body(str(e.detail), type="invalid_request_error" if e.status_code < 500 else "server_error"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error(request, 500, error_body(f"internal error: {type(e).__name__}", type="server_error"))

    @app.get("/health")
    async def health():
        if not state.scheduler.alive:
            return JSONResponse(error_body("engine worker is not running", type="service_unavailable"), status_code=503)
        return {"status": "ok", "running": state.scheduler.num_running, "waiting": state.scheduler.num_waiting}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        card = ModelCard(id=state.model_id, max_model_len=state.max_seq_len, speculative=state.speculative)
        return ModelList(data=[card]).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(state, model_id)
        return ModelCard(id=state.model_id, max_model_len=state.max_seq_len, speculative=state.speculative).model_dump()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await handle_generation(state, request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await handle_generation(state, request, body, chat=True)

    if (STATIC_DIR / "index.html").is_file():

        @app.get("/")
        async def playground():
            return FileResponse(STATIC_DIR / "index.html")

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout, on_reject=metrics.request_done)
    if api_key:
        app.add_middleware(APIKeyAuth, api_key=api_key, on_reject=metrics.request_done)  # outermost: before the body is read
    return app
