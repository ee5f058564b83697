"""``streams worker``: one Faust worker of the pipeline (``streams.app``)."""

from __future__ import annotations

import argparse
import dataclasses

from streams.cli.base import K, R, Subparsers, add_command, ready, settings
from streams.cli.errors import UsageError
from streams.settings import Settings


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "worker", "start a pipeline worker (Faust)", cmd_worker,
                     "Start a worker of the consumer group STREAMS_APP_ID. Run several to scale out: partitions "
                     "of events.raw are shared among them. One worker process uses one core; --processes N "
                     "runs N on this machine (process i serves /live, /ready and /metrics on the web port + i), "
                     "restarts one that dies, and stops them all on Ctrl-C / SIGTERM. Refuses to start "
                     "(status 2) when a web port is taken: give a second worker on one machine its own "
                     "--web-port.",
                     needs=(R, K), own_logging=True)
    sp.add_argument("--web-port", type=int, help="HTTP port for /live, /ready, /health, /metrics (default STREAMS_WEB_PORT)")
    sp.add_argument("--no-create-topics", action="store_true", help="do not create missing topics at start")
    sp.add_argument("--processes", type=int, metavar="N",
                    help="worker processes on this machine, one per core is a good start (default "
                         "STREAMS_WORKER_PROCESSES, 1); web ports web-port .. web-port+N-1")


def _check_web_port(port: int, setting: str) -> None:
    """Refuse to start when another process (a second worker, say) listens on the HTTP port.

    Faust would otherwise start, fail to bind deep inside its web server and
    crash with a traceback. Not a silent move to the next free port: Prometheus
    and load balancers are configured with the port, and a worker that answers
    elsewhere looks dead to them. The check binds as aiohttp does (0.0.0.0,
    SO_REUSEADDR); a race with a process that takes the port after it remains.
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise UsageError(f"web port {port} is taken ({exc.strerror}; another worker on this machine?): "
                             f"set {setting} to a free port, or STREAMS_WEB_ENABLED=0 to run without "
                             "the HTTP server") from None


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    import logging.config

    from streams.app import create_app
    from streams.ops.log_format import TEXT_FORMAT, logging_config
    from streams.ops.topics import ensure_topics

    s = settings()
    if args.web_port is not None:
        s = dataclasses.replace(s, web_port=args.web_port)
    processes = args.processes if args.processes is not None else s.worker_processes
    if processes < 1:
        raise UsageError(f"--processes must be at least 1, got {processes}")
    port_setting = "--web-port" if args.web_port is not None else "STREAMS_WEB_PORT"
    if s.web_enabled:
        if s.web_port + processes - 1 > 65535:
            raise UsageError(f"{port_setting} {s.web_port} + {processes} processes goes past port 65535")
        for i in range(processes):
            _check_web_port(s.web_port + i, port_setting)
    ready(args, s)
    if processes > 1:
        return _run_pool(args, s, processes)
    logging.basicConfig(level=s.log_level, format=TEXT_FORMAT)
    # JSON: Faust's worker applies this config instead of its own (coloured text) handler.
    config = logging_config(s.log_level, s.log_format) if s.log_format == "json" else None
    if config is not None:
        logging.config.dictConfig(config)
    if not args.no_create_topics:
        ensure_topics(s)
    app = create_app(s)
    worker = faust.Worker(app, loglevel=s.log_level.lower(), quiet=True, redirect_stdouts=False,
                          logging_config=config)
    worker.execute_from_commandline()
    return 0


def _run_pool(args: argparse.Namespace, s: Settings, processes: int) -> int:
    """``processes`` worker processes of this command (streams.ops.worker_pool); topics made once, here."""
    import logging
    import sys

    from streams.ops.log_format import TEXT_FORMAT
    from streams.ops.topics import ensure_topics
    from streams.ops.worker_pool import WorkerPool, child_argv

    logging.basicConfig(level=s.log_level, format=TEXT_FORMAT)
    if not args.no_create_topics:
        ensure_topics(s)
    base = [sys.executable, "-m", "streams.cli.main", "worker", "--processes", "1", "--no-create-topics"]
    pool = WorkerPool(lambda i: child_argv(base, i, s.web_port if s.web_enabled else None), processes)
    return pool.run()
