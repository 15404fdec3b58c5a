"""`specdec serve`: an OpenAI-compatible HTTP server over the batch engine.

    specdec serve --speculative-algorithm ngram            # 127.0.0.1:30000
    specdec serve --speculative-algorithm hybrid           # n-gram or the shipped EAGLE head per step
    curl localhost:30000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions,
POST /v1/chat/completions, GET /health, GET /metrics (Prometheus), GET / (the playground).
Every error is OpenAI's {"error": {"message", "type", "param", "code"}} with a 4xx/5xx
status. The server binds loopback unless told otherwise; with --api-key (or
SPECDEC_API_KEY) every /v1/ route wants `Authorization: Bearer KEY` (401 otherwise), while
/health, /metrics and the playground's page stay open. A request body must arrive whole
within --body-timeout seconds (408 and the connection closed otherwise) and fit
--max-body-bytes (413). SIGINT/SIGTERM abort the requests in flight, stop the engine
worker and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import signal
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
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT = 30.0
API_KEY_ENV = "SPECDEC_API_KEY"
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


def create_app(state: ServerState, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, body_timeout: float = DEFAULT_BODY_TIMEOUT,
               api_key: str | None = None) -> FastAPI:
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


def register(subparsers) -> None:
    from specdec.options import add_model_args, add_spec_args

    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, speculation)",
                              description="An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, "
                              "/v1/models, /health, /metrics) over one engine that decodes up to --max-batch-size "
                              "requests together, each speculating losslessly with the proposer chosen here.")
    add_model_args(p, max_model_len=2048, batch_invariant=False)
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: the file or directory name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=30000, help="(default: %(default)s)")
    add_spec_args(p, serve_aliases=True)
    p.add_argument("--max-batch-size", type=int, default=8, help="requests decoded together (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                   help="seconds a request body may take to arrive; slower: 408 and the connection closed (default: %(default)s)")
    p.add_argument("--api-key", default=None,
                   help=f"require `Authorization: Bearer KEY` on /v1/ routes (default: ${API_KEY_ENV} if set, else open)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="(default: %(default)s)")
    p.set_defaults(func=run_serve)


def build_state(args: argparse.Namespace) -> ServerState:
    from specdec.api import load_engine
    from specdec.options import configs_from_args
    from specdec.server.metrics import ServerMetrics, SpecCollector
    from specdec.server.scheduler import Scheduler

    if args.max_batch_size < 1 or args.max_queue < 0 or args.max_body_bytes < 1 or not args.body_timeout > 0:
        raise ValueError("--max-batch-size and --max-body-bytes must be >= 1, --max-queue >= 0, --body-timeout > 0")
    # The batched forward packs rows of different lengths into one pass: it is not batch-invariant
    # (models/attention.py), so served greedy output is exact in float32 only.
    engine_config, spec = configs_from_args(args, batch_invariant=False)
    target, engine = load_engine(engine_config, spec)
    metrics = ServerMetrics()
    scheduler = Scheduler(engine, target.tokenizer, metrics, args.max_queue)
    metrics.attach(SpecCollector(lambda: engine.stats, lambda: scheduler.num_waiting, lambda: scheduler.num_running))
    name = target.path.name.removesuffix(".gguf")
    model_id = args.served_model_name or name
    aliases = {model_id, name, "default"} | ({args.model, Path(args.model).name} if args.model else set())
    return ServerState(model_id, aliases, target.tokenizer, target.config.vocab_size, engine.max_seq_len, scheduler, metrics, spec.method)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = build_state(args)
    app = create_app(state, args.max_body_bytes, args.body_timeout, args.api_key or os.environ.get(API_KEY_ENV) or None)
    scheduler = state.scheduler

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            scheduler.request_stop()  # ends the streams in flight so shutdown does not wait on them
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn's version re-raises the signal after a graceful shutdown; a served
            # SIGINT/SIGTERM is a normal exit here.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5, access_log=False)
    server = Server(config)
    scheduler.start()
    print(f"specdec serve: {state.model_id} on http://{args.host}:{args.port} (speculative {state.speculative}, batch {args.max_batch_size})", flush=True)
    server.run()
    scheduler.join()
    return 0 if server.started else 1
