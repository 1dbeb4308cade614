"""``wham-gym serve``: a dream server that speaks WHAM's run_server.py protocol (see wham_gym.serve)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("serve", help="dream server: WHAM's run_server.py protocol + remote RL sessions",
                       description="Serve a world model over HTTP with the routes of WHAM's run_server.py "
                                   "(GET /, POST /new_job, GET /get_job_results, GET /cancel_job) and RL sessions "
                                   "(/sessions). Every due step of every job and session joins one batched engine "
                                   "step. Needs the 'serve' extra: pip install 'wham-gym[serve]'.")
    p.add_argument("--model", default="default", help="model: 'default', a preset, a .ckpt or a model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--max-concurrent-jobs", type=int, default=30)
    p.add_argument("--max-dream-steps-per-job", type=int, default=10)
    p.add_argument("--max-job-lifespan", type=float, default=600, help="seconds a job is kept unpolled (default 600)")
    p.add_argument("--max-batch", type=int, default=32, help="engine slots: streams stepped together (default 32)")
    p.add_argument("--batching", choices=("all", "release"), default="all",
                   help="all: every due stream joins the batch (default); release: at most 3, same settings "
                        "(the release's rule, for comparison)")
    p.add_argument("--max-sessions", type=int, default=256)
    p.add_argument("--max-upload-mb", type=float, default=32, help="largest request body in MiB (default 32)")
    p.add_argument("--worker", choices=("process", "thread"), default="process",
                   help="where the engine runs: a child process with its own GIL, so HTTP traffic never stalls "
                        "dreaming (default), or a thread of the server's process (one copy of the weights)")
    p.add_argument("--seed", type=int, default=None, help="seed jobs in order (default: random seeds)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        from ..serve.app import DreamServer
        from ..serve.server import run
    except ModuleNotFoundError as exc:
        print(f"wham-gym serve needs {exc.name}: pip install 'wham-gym[serve]'")
        return 1
    server = DreamServer(args.model, device=args.device, max_concurrent_jobs=args.max_concurrent_jobs,
                         max_dream_steps_per_job=args.max_dream_steps_per_job, max_job_lifespan=args.max_job_lifespan,
                         max_batch=args.max_batch, batching=args.batching, max_sessions=args.max_sessions,
                         max_upload_bytes=int(args.max_upload_mb * 2**20), seed=args.seed, worker=args.worker,
                         threads=args.threads)
    run(server.app(), host=args.host, port=args.port, log_level=args.log_level)
    return 0
