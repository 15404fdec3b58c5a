"""`specdec serve`: an OpenAI-compatible HTTP server over the batch engine.

    specdec serve --speculative-algorithm ngram            # 127.0.0.1:30000
    specdec serve --speculative-algorithm hybrid           # n-gram or the shipped EAGLE head per step
    curl localhost:30000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions,
POST /v1/chat/completions, GET /health, GET /metrics (Prometheus), GET / (the playground).
Every error is OpenAI's {"error": {"message", "type", "param", "code"}} with a 4xx/5xx
status. The server binds loopback unless told otherwise; with --api-key (or
SPECDEC_API_KEY) every /v1/ route wants `Authorization: Bearer KEY` (401 otherwise), while
/health, /metrics and the playground's page stay open (the page asks for the key and sends
it as that header; it never holds it). A request body must arrive whole
within --body-timeout seconds (408 and the connection closed otherwise) and fit
--max-body-bytes (413). SIGINT/SIGTERM abort the requests in flight, stop the engine
worker and exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from specdec.server.handlers import ServerState

# This module only registers `serve` and runs it: torch and fastapi load when the server
# starts (in run_serve), so `specdec serve --help` stays light.
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT = 30.0
API_KEY_ENV = "SPECDEC_API_KEY"


def register(subparsers) -> None:
    from specdec.options import add_model_args, add_spec_args

    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, speculation)",
                              description="An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, "
                              "/v1/models, /health, /metrics) over one engine that decodes up to --max-batch-size "
                              "requests together, each speculating losslessly with the proposer chosen here.")
    add_model_args(p, max_model_len=2048, batch_invariant=False)
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: the file or directory name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=30000, help="TCP port to listen on (default: %(default)s)")
    add_spec_args(p, serve_aliases=True)
    p.add_argument("--max-batch-size", type=int, default=8, help="requests decoded together (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                   help="seconds a request body may take to arrive; slower: 408 and the connection closed (default: %(default)s)")
    p.add_argument("--api-key", default=None,
                   help=f"require `Authorization: Bearer KEY` on /v1/ routes (default: ${API_KEY_ENV} if set, else open)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="log level of the server and of uvicorn (default: %(default)s)")
    p.set_defaults(func=run_serve)


def build_state(args: argparse.Namespace) -> ServerState:
    from specdec.api import load_engine
    from specdec.options import configs_from_args
    from specdec.server.handlers import ServerState
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

    from specdec.server.routes import create_app

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
