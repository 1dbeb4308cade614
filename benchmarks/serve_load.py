"""Load test of ``wham-gym serve``: K concurrent protocol clients, our batching against the release's rule.

Each client loops: POST /new_job (a 10-frame prompt from the model's prompt bank, 10 dream steps), then
GET /get_job_results every ``--poll`` seconds until its 10 frames are in, then the next job. Servers run
as subprocesses on loopback (``wham-gym serve --threads 1``), one per batching rule, clients in this
process (asyncio + httpx). Every phase is bounded in time; the run stops by itself.

Measured per (rule, K): dream steps/s (frames received by clients over the phase), request latency
(every HTTP request: new_job, polls) and job latency (new_job sent -> last frame received) p50/p95/p99,
mean batch size (server-side, GET /stats), failed requests (any status other than 200/204, or a transport
error). In the K=32 phase of each rule: the server's RSS (VmRSS of the HTTP process and of its dream worker
child, summed) after the first 1,000 requests (warm) and after 10,000 more, requests counting new_job +
polls (not the monitor's /stats calls). Frame latency: from a job's submission or its previous frame to
the poll that brought the next frame (includes up to one poll interval).

    python benchmarks/serve_load.py                      # K = 1, 8, 32; both rules; writes benchmarks/results/serve_load.json
    python benchmarks/serve_load.py --clients 2 --seconds 20 --memory-requests 0   # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import zipfile
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from wham_gym.model import load_model
from wham_gym.prompts import default_prompt_bank

OUT = Path(__file__).resolve().parent / "results" / "serve_load.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Server:
    """``wham-gym serve`` in a subprocess on a free loopback port; stopped (and waited for) on exit."""

    def __init__(self, rule: str, model: str, max_jobs: int, device: str = "cpu"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "wham_gym", "serve", "--model", model, "--port", str(self.port),
               "--threads", "1", "--batching", rule, "--max-concurrent-jobs", str(max_jobs),
               "--max-batch", "32", "--log-level", "warning", "--device", device]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {cmd}")
            time.sleep(0.2)

    def processes(self) -> list[int]:
        """The server's process and its descendants (the dream worker was started by one of its threads)."""
        parent = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [self.proc.pid]
        for pid in found:
            found += [c for c, p in parent.items() if p == pid]
        return found

    def rss(self) -> dict:
        """Resident memory of each of the server's processes (HTTP process first), and their total."""
        each = {}
        for pid in self.processes():
            try:
                each[pid] = rss_bytes(pid)
            except (OSError, RuntimeError):
                pass  # a process exiting
        return {"total": sum(each.values()), "processes": list(each.values())}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def prompt_form(model, frames: int) -> tuple[dict, list]:
    p = default_prompt_bank(model).sample(np.random.default_rng(0), 1, frames, size=(180, 300))[0]
    actions = np.concatenate([p.actions, np.zeros((1, 16), np.float32)])
    steps, files = [], []
    for i, (f, a) in enumerate(zip(p.frames, actions)):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        steps.append({"image_name": f"f{i}.png", "action": [float(x) for x in a], "tokens": []})
        files.append((f"f{i}.png", (f"f{i}.png", buf.getvalue(), "image/png")))
    return {"steps": steps}, files


class Phase:
    """One (rule, K) run: counters shared by the clients."""

    def __init__(self, server: Server, clients: int, seconds: float, poll: float, steps: int, body, files,
                 memory_requests: int):
        self.server, self.k, self.seconds, self.poll, self.steps = server, clients, seconds, poll, steps
        self.body = json.dumps({**body, "num_steps_to_predict": steps})
        self.files = files
        self.requests = self.failed = self.frames = 0
        self.request_latency, self.job_latency, self.frame_latency, self.errors = [], [], [], []
        self.memory_requests = memory_requests
        self.rss_warm = self.rss_after = None
        self.stop = False

    async def request(self, http, method, url, **kw):
        t = time.perf_counter()
        try:
            r = await http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            r = None
            self.errors.append(repr(exc))
        self.request_latency.append(time.perf_counter() - t)
        self.requests += 1
        if r is None or r.status_code not in (200, 204):
            self.failed += 1
            if r is not None:
                self.errors.append(f"{r.status_code} {r.text[:200]}")
        if self.memory_requests:
            if self.rss_warm is None and self.requests >= 1000:
                self.rss_warm = (self.requests, self.server.rss())
            elif self.rss_after is None and self.rss_warm and self.requests >= self.rss_warm[0] + self.memory_requests:
                self.rss_after = (self.requests, self.server.rss())
        return r

    def done(self, t0) -> bool:
        out_of_time = time.monotonic() - t0 > self.seconds
        memory_due = self.memory_requests and self.rss_after is None and time.monotonic() - t0 < 3 * self.seconds
        return self.stop or (out_of_time and not memory_due)

    async def client(self, http, t0):
        while not self.done(t0):
            start = time.perf_counter()
            r = await self.request(http, "POST", "/new_job", data={"json": self.body}, files=self.files)
            if r is None or r.status_code != 200:
                await asyncio.sleep(self.poll)
                continue
            job, got, last = r.json()["job_ids"][0], 0, start
            while got < self.steps and not self.done(t0):
                await asyncio.sleep(self.poll)
                r = await self.request(http, "GET", "/get_job_results", params={"job_ids": [job]})
                if r is not None and r.status_code == 200:
                    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                        n = len(json.loads(z.read("predictions.json")))
                    got += n
                    self.frames += n
                    now = time.perf_counter()
                    self.frame_latency += [now - last] * n  # since the job was sent or its last frame came
                    last = now
            if got >= self.steps:
                self.job_latency.append(time.perf_counter() - start)
            else:  # the phase ended mid-job: free the server for the next phase
                await http.get("/cancel_job", params={"job_id": job})

    async def run(self) -> dict:
        limits = httpx.Limits(max_connections=self.k + 2, max_keepalive_connections=self.k + 2)
        async with httpx.AsyncClient(base_url=self.server.url, timeout=600, limits=limits) as http:
            s0 = (await http.get("/stats")).json()
            t0 = time.monotonic()
            await asyncio.gather(*(self.client(http, t0) for _ in range(self.k)))
            wall = time.monotonic() - t0
            s1 = (await http.get("/stats")).json()
            while s1["stepping"] or s1["live_jobs"]:  # let a cancelled batch land before the next phase
                await asyncio.sleep(0.5)
                s1 = (await http.get("/stats")).json()
        batches = s1["batches"] - s0["batches"]
        pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
        return {
            "clients": self.k, "seconds": round(wall, 1), "requests": self.requests, "failed": self.failed,
            "errors": self.errors[:5], "frames": self.frames, "dream_steps_per_s": self.frames / wall,
            "mean_batch_size": (s1["stream_steps"] - s0["stream_steps"]) / batches if batches else None,
            "request_latency_s": {q: pct(self.request_latency, q) for q in (50, 95, 99)},
            "frame_latency_s": {q: pct(self.frame_latency, q) for q in (50, 95, 99)},
            "jobs_completed": len(self.job_latency),
            "job_latency_s": {q: pct(self.job_latency, q) for q in (50, 95, 99)},
            "rss_warm": self.rss_warm, "rss_after": self.rss_after,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rules", default="all,release")
    ap.add_argument("--seconds", type=float, default=90, help="phase length for K < 32 (K = 32: 2.5x)")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between a client's polls")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompt-frames", type=int, default=10)
    ap.add_argument("--memory-requests", type=int, default=10_000, help="requests between the two RSS readings "
                    "in the largest-K phase (0: none)")
    ap.add_argument("--device", default="cpu", help="the servers' engine device (cpu or cuda)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.clients.split(",")]
    body, files = prompt_form(load_model(args.model), args.prompt_frames)
    report = {"date": str(date.today()), "torch": torch.__version__, "python": platform.python_version(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "engine_threads": 1,
              "device": args.device,
              "load_average_start": os.getloadavg(), "poll_s": args.poll, "steps_per_job": args.steps,
              "prompt_frames": args.prompt_frames, "runs": {}}
    # Both servers stay up; the rules alternate phase by phase, so a shared machine's load drifts over
    # both alike (an idle server costs no CPU: its scheduler waits on a condition).
    rules = args.rules.split(",")
    servers = {}
    try:
        for rule in rules:
            servers[rule] = Server(rule, args.model, max_jobs=max(ks) * 2, device=args.device)
            report["runs"][rule] = [{"rss_start": servers[rule].rss()}]
        for k in ks:
            for rule in rules:
                seconds = args.seconds * (2.5 if k == max(ks) else 1)
                mem = args.memory_requests if k == max(ks) else 0
                res = asyncio.run(Phase(servers[rule], k, seconds, args.poll, args.steps, body, files, mem).run())
                res["load_average"] = os.getloadavg()
                report["runs"][rule].append(res)
                print(json.dumps({"rule": rule, **res}), flush=True)
    finally:
        for server in servers.values():
            server.close()
    report["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
