"""``wham-gym serve``: WHAM's run_server.py protocol spoken by a client written here from the protocol itself.

The helpers below (multipart upload, polling, zip parsing) use httpx and the standard library only,
never the package's own client, so they check the wire format rather than our reading of it. Servers
run in-process on loopback ephemeral ports; the last test checks that none of their threads is left.
"""

import contextlib
import io
import json
import math
import socket
import threading
import time
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from wham_gym import load_model  # noqa: E402
from wham_gym.engine import DreamEngine  # noqa: E402
from wham_gym.serve.app import DreamServer  # noqa: E402
from wham_gym.serve.client import DreamClient, RemoteWHAMEnv  # noqa: E402
from wham_gym.serve.protocol import Sampling  # noqa: E402
from wham_gym.serve.scheduler import pick_batch  # noqa: E402
from wham_gym.serve.server import ServerThread  # noqa: E402

STEPS = 2  # dream steps per job in these tests (the default model takes ~0.3-1 s a step on 2 cores)


# ------------------------------------------------------------------ a client written from the protocol
def png(frame) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return out.getvalue()


def post_job(http, body, images: dict):
    """POST /new_job: field ``json`` + one file part per image_name."""
    files = [(name, (name, data, "image/png")) for name, data in images.items()]
    return http.post("/new_job", data={"json": body if isinstance(body, str) else json.dumps(body)}, files=files)


def read_zip(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        predictions = json.loads(z.read("predictions.json"))
        frames = {p["image_filename"]: np.asarray(Image.open(io.BytesIO(z.read(p["image_filename"]))))
                  for p in predictions}
        assert sorted(z.namelist()) == sorted([*frames, "predictions.json"])
    return predictions, frames


def poll_until(http, ids, steps, timeout=300):
    """GET /get_job_results until every job has ``steps`` results; 204 means nothing new yet."""
    got = {i: [] for i in ids}
    deadline = time.monotonic() + timeout
    while any(len(v) < steps for v in got.values()):
        assert time.monotonic() < deadline, f"jobs unfinished: {got}"
        r = http.get("/get_job_results", params={"job_ids": ids})
        if r.status_code == 204:
            time.sleep(0.05)
            continue
        assert r.status_code == 200, r.text
        predictions, frames = read_zip(r.content)
        for p in predictions:
            assert p["image_filename"] == f"{p['job_id']}_{p['dream_step_index']}.png"
            got[p["job_id"]].append({**p, "frame": frames[p["image_filename"]]})
    return {i: sorted(v, key=lambda p: p["dream_step_index"]) for i, v in got.items()}


def wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def default_model():
    torch.set_num_threads(1)
    return load_model("default")


@pytest.fixture(scope="module")
def server(default_model):
    srv = DreamServer(default_model, model_name="default", max_concurrent_jobs=6, max_job_lifespan=120,
                      max_upload_bytes=2 * 2**20, seed=0)
    with serving(srv) as (url, http):
        yield srv, url, http


@contextlib.contextmanager
def serving(srv):
    """Serve ``srv`` on a free loopback port for the block; afterwards none of its threads is left."""
    before = set(threading.enumerate())
    runner = ServerThread(srv.app())
    with runner as url, httpx.Client(base_url=url, timeout=120) as http:
        yield url, http
    assert not runner.thread.is_alive() and srv.scheduler._thread is None
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("wham-gym")]
    assert not left, left


@pytest.fixture(scope="module")
def prompt(default_model):
    """Three real frames (the model's own prompt bank) and the actions taken at them."""
    from wham_gym.prompts import default_prompt_bank

    p = default_prompt_bank(default_model).sample(np.random.default_rng(0), 1, 3, size=(180, 300))[0]
    actions = np.concatenate([p.actions, [[0.0] * 12 + [0.375, 0.0, -0.15, 0.0]]]).astype(np.float64)
    return p.frames, actions


def job_body(actions, n=STEPS, **extra):
    return {"num_steps_to_predict": n, **extra,
            "steps": [{"image_name": f"f{i}.png", "action": [float(x) for x in a], "tokens": []}
                      for i, a in enumerate(actions)]}


def images(frames):
    return {f"f{i}.png": png(f) for i, f in enumerate(frames)}


@pytest.fixture(scope="module")
def tiny64():
    # float64 so batched and lone computations agree to the last bit (as in tests/test_engine.py)
    m = load_model("tiny", dtype=torch.float64)
    with torch.no_grad():
        for p in m.gpt.parameters():
            p.mul_(4.0)
    return m


# ------------------------------------------------------------------ the release's routes
def test_details_and_round_trip_with_the_default_model(server, prompt):
    srv, url, http = server
    assert http.get("/").json() == {"model_file": "default", "max_concurrent_jobs": 6, "max_dream_steps_per_job": 10,
                                    "max_job_lifespan": 120}
    frames, actions = prompt
    r = post_job(http, job_body(actions, num_parallel_predictions=2), images(frames))
    assert r.status_code == 200, r.text
    reply = r.json()
    assert set(reply) == {"job_ids", "current_jobs_in_queue"} and len(reply["job_ids"]) == 2
    results = poll_until(http, reply["job_ids"], STEPS)
    for job_id, steps in results.items():
        assert [p["dream_step_index"] for p in steps] == list(range(STEPS))
        for p in steps:
            assert p["frame"].shape == (180, 300, 3) and p["frame"].dtype == np.uint8
            assert len(p["tokens"]) == 135 and all(0 <= t < 1024 for t in p["tokens"])
            assert len(p["action"]) == 16 and set(p["action"][:12]) <= {0.0, 1.0}
            assert set(p["action"][12:]) <= {-1.0, -0.85, -0.625, -0.375, -0.15, 0.0, 0.15, 0.375, 0.625, 0.85, 1.0}
        # the frame is the decoding of the tokens
        decoded = srv.model.decode_tokens(torch.tensor([steps[-1]["tokens"]])).numpy()[0]
        assert np.array_equal(decoded, steps[-1]["frame"])
    # results are handed out once; finished jobs then answer 204
    assert http.get("/get_job_results", params={"job_ids": reply["job_ids"]}).status_code == 204


def local_dream(model, frames, actions, steps, seed, future=(), predict=True, **sampling):
    """The same dream with a lone local engine: prompt, then the last prompt action, then each next action."""
    engine = DreamEngine(model, 1, **sampling)
    engine.reset(frames=torch.from_numpy(np.stack(frames))[None], actions=torch.from_numpy(actions[None]).float(),
                 seeds=[seed])
    action, out = torch.from_numpy(actions[-1:]).float(), []
    for i in range(steps):
        r = engine.step(action, predict_actions=predict)
        out.append(r.tokens[0].tolist())
        action = torch.tensor(future[i:i + 1]).float() if i < len(future) else r.predicted_actions
    return out


def test_tokens_equal_a_local_engine_for_the_same_seed(server, default_model, prompt):
    _, _, http = server
    frames, actions = prompt
    future = [[1.0] + [0.0] * 11 + [-0.9, 0.2, 0.0, 0.0]]  # replaces the dreamt action at frame 0
    bodies = [job_body(actions, n=2, top_k=1, top_p="None", seed=5, future_actions=[{"action": future[0]}]),
              job_body(actions, n=2, temperature="0.9", seed=11)]  # argmax, then WHAM's default sampling
    ids = [post_job(http, b, images(frames)).json()["job_ids"][0] for b in bodies]
    got = poll_until(http, ids, 2)
    quantized_future = [[1.0] + [0.0] * 11 + [-0.85, 0.15, 0.0, 0.0]]
    assert got[ids[0]][0]["action"] == quantized_future[0]  # reported as bin middles
    want_argmax = local_dream(default_model, frames, actions, 2, seed=5, future=quantized_future, top_k=1)
    want_sampled = local_dream(default_model, frames, actions, 2, seed=11, temperature=0.9, top_p=1.0)
    assert [p["tokens"] for p in got[ids[0]]] == want_argmax
    assert [p["tokens"] for p in got[ids[1]]] == want_sampled


def test_a_dream_does_not_depend_on_its_batch_mates(tiny64):
    """Jobs of different prompt lengths and seeds, dreamt together, each equal a lone local engine (float64)."""
    rng = np.random.default_rng(3)
    srv = DreamServer(tiny64, max_concurrent_jobs=8)
    prompts = []
    for P in (1, 3, 9):
        toks = rng.integers(0, tiny64.config.image_vocab_size, (P, 60))
        acts = rng.uniform(-1, 1, (P, 16)).astype(np.float32).astype(np.float64)
        acts[:, :12] = rng.random((P, 12)) < 0.3
        prompts.append((toks, acts))
    with serving(srv) as (url, http):
        ids = []
        for k, (toks, acts) in enumerate(prompts):
            body = {"num_steps_to_predict": 3, "temperature": 1.0, "seed": 100 + k,
                    "steps": [{"image_name": "", "action": a.tolist(), "tokens": t.tolist()} for t, a in zip(toks, acts)]}
            ids.append(post_job(http, body, {}).json()["job_ids"][0])
        got = poll_until(http, ids, 3)
        assert http.get("/stats").json()["mean_batch_size"] >= 1
    for k, (toks, acts) in enumerate(prompts):
        engine = DreamEngine(tiny64, 1, temperature=1.0, top_p=1.0)
        engine.reset(tokens=torch.from_numpy(toks)[None], actions=torch.from_numpy(acts[None]).float(), seeds=[100 + k])
        action, want = torch.from_numpy(acts[-1:]).float(), []
        for _ in range(3):
            r = engine.step(action, predict_actions=True, decode=False)
            want.append(r.tokens[0].tolist())
            action = r.predicted_actions
        assert [p["tokens"] for p in got[ids[k]]] == want


def test_batches_group_settings_oldest_first_and_nobody_starves():
    a, b = Sampling(0.9, None, 1.0), Sampling(0.5, 1, None)
    due = [SimpleNamespace(name=i, sampling=s) for i, s in enumerate([a, b, a, a, b, a, a])]
    names = lambda batch: [s.name for s in batch]  # noqa: E731
    assert names(pick_batch(due, 32)) == [0, 2, 3, 5, 6]  # the oldest one's group, in age order
    assert names(pick_batch(due, 2)) == [0, 2]
    assert names(pick_batch(due, 32, "release")) == [0]  # the release stops at the first other setting
    assert names(pick_batch(due[2:], 32, "release")) == [2, 3]
    assert names(pick_batch(due[2:4] + due[5:], 32, "release")) == [2, 3, 5]  # at most 3
    # Round after round, a stepped stream goes to the back: every stream steps within a few rounds.
    queue, stepped = list(due), {i: 0 for i in range(7)}
    for _ in range(6):
        batch = pick_batch(queue, 2)
        for s in batch:
            stepped[s.name] += 1
        queue = [s for s in queue if s not in batch] + batch
    assert min(stepped.values()) >= 1


def test_cancel_stops_a_job(server, prompt):
    srv, _, http = server
    frames, actions = prompt
    job = post_job(http, job_body(actions, n=10), images(frames)).json()["job_ids"][0]
    assert http.get("/cancel_job", params={"job_id": job}).status_code == 200
    wait_for(lambda: not any(s.running for s in list(srv.registry.jobs.values())))  # any step in flight lands
    for _ in range(3):
        assert http.get("/get_job_results", params={"job_ids": [job]}).status_code == 204
    assert job not in srv.registry.jobs
    assert http.get("/cancel_job", params={"job_id": job}).status_code == 200  # idempotent


def test_unpolled_jobs_expire(tiny64):
    srv = DreamServer(tiny64, max_job_lifespan=0.2)
    toks = [[0] * 60]
    with serving(srv) as (url, http):
        body = {"num_steps_to_predict": 1, "steps": [{"image_name": "", "action": [0.0] * 16, "tokens": toks[0]}]}
        job = post_job(http, body, {}).json()["job_ids"][0]
        wait_for(lambda: http.get("/stats").json()["expired"] >= 1)
        r = http.get("/get_job_results", params={"job_ids": [job]})
        assert r.status_code == 410 and "expired" in r.text and "max_job_lifespan" in r.text


# ------------------------------------------------------------------ bad input: a 4xx with a message, then business as usual
def bad_requests(actions, frames):
    good = images(frames[:1])
    one = job_body(actions[:1])
    jpeg = io.BytesIO()
    Image.fromarray(frames[0]).save(jpeg, format="JPEG")

    def with_action(a):
        return {**one, "steps": [{**one["steps"][0], "action": a}]}

    return {
        "missing num_steps_to_predict": (400, "num_steps_to_predict", {k: v for k, v in one.items()
                                                                         if k != "num_steps_to_predict"}, good),
        "too many steps": (400, "expected 1 to 10", {**one, "num_steps_to_predict": 11}, good),
        "malformed JSON": (400, "malformed JSON", '{"num_steps_to_predict": 2, "steps": [', good),
        "corrupt PNG": (400, "not a readable PNG", one, {"f0.png": png(frames[0])[:200]}),
        "not a PNG": (400, "expected a PNG", one, {"f0.png": jpeg.getvalue()}),
        "missing image": (400, "names no file part", one, {}),
        "short action": (400, "16 numbers", with_action([0.0] * 15), good),
        "NaN action": (400, "finite", with_action([0.0] * 12 + [math.nan, 0.0, 0.0, 0.0]), good),
        "stick out of range": (400, "sticks must lie in", with_action([0.0] * 12 + [3.0, 0.0, 0.0, 0.0]), good),
        "text in action": (400, "16 numbers", with_action(["a"] * 16), good),
        "bad temperature": (400, "temperature", {**one, "temperature": "hot"}, good),
        "top_k and top_p": (400, "one or the other", {**one, "top_k": 5, "top_p": 0.5}, good),
        "bad tokens": (400, "tokens", {**one, "steps": [{**one["steps"][0], "tokens": [5000] * 135}]}, good),
        "no steps": (400, "steps", {"num_steps_to_predict": 1, "steps": []}, good),
    }


def test_every_bad_input_is_a_4xx_with_a_message(server, prompt):
    _, _, http = server
    frames, actions = prompt
    for name, (status, text, body, files) in bad_requests(actions, frames).items():
        r = post_job(http, body, files)
        assert (r.status_code, text in r.text) == (status, True), f"{name}: {r.status_code} {r.text}"
    r = http.post("/new_job", data={"other": "x"})
    assert r.status_code == 400 and "'json' field" in r.text
    r = http.post("/new_job", json={"num_steps_to_predict": 1})
    assert r.status_code == 415 and "multipart/form-data" in r.text
    for path, params, status in [("/get_job_results", {"job_ids": ["nope"]}, 404), ("/get_job_results", {}, 400),
                                 ("/cancel_job", {"job_id": "nope"}, 404), ("/cancel_job", {}, 400)]:
        r = http.get(path, params=params)
        assert r.status_code == status and len(r.text) > 20, (path, r.text)
    assert http.post("/sessions/nope/step", json={"action": [0.0] * 16}).status_code == 404
    assert http.delete("/sessions/nope").status_code == 404
    # the upload limit (2 MiB here), by Content-Length and by a body streamed without one
    r = post_job(http, job_body(actions[:1]), {"f0.png": b"\0" * (3 * 2**20)})
    assert r.status_code == 413 and "--max-upload-mb" in r.text

    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="f0.png"; filename="f0.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 2**16

    r = http.post("/new_job", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413, r.text
    assert http.get("/").status_code == 200  # still serving


def test_too_many_jobs_is_refused(server, prompt):
    srv, _, http = server
    frames, actions = prompt
    for parallel in (7, 10**9):
        r = post_job(http, job_body(actions[:1], n=1, num_parallel_predictions=parallel), images(frames[:1]))
        assert r.status_code == 400 and "num_parallel_predictions" in r.text and "[1, 6]" in r.text
    ids = post_job(http, job_body(actions[:1], n=10, num_parallel_predictions=6), images(frames[:1])).json()["job_ids"]
    r = post_job(http, job_body(actions[:1], n=1), images(frames[:1]))
    assert r.status_code == 400 and "Too many jobs" in r.text and "max 6" in r.text
    for job in ids:
        assert http.get("/cancel_job", params={"job_id": job}).status_code == 200


def test_a_client_leaving_mid_upload_leaks_nothing(server):
    srv, url, http = server
    host, port = url.removeprefix("http://").split(":")
    before = http.get("/stats").json()["jobs"]
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /new_job HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"json\"\r\n\r\n{")
    assert http.get("/").status_code == 200
    assert http.get("/stats").json()["jobs"] == before


# ------------------------------------------------------------------ remote RL sessions
def test_remote_env_over_sessions(server):
    srv, url, _ = server
    env = RemoteWHAMEnv(url, max_episode_steps=2)
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (180, 300, 3) and info["tokens"].shape == (135,)
        for t in range(2):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs.shape == (180, 300, 3) and isinstance(reward, float) and isinstance(terminated, bool)
            assert info["learned_reward"]  # the default model ships a reward model
        assert truncated
        obs, _ = env.reset(seed=1)
        assert obs.shape == (180, 300, 3)
        sid = env.session_id
    finally:
        env.close()
    assert sid not in srv.registry.sessions


def test_a_session_equals_a_local_engine(tiny64):
    rng = np.random.default_rng(4)
    toks = rng.integers(0, tiny64.config.image_vocab_size, (3, 60))
    acts = rng.uniform(-1, 1, (4, 16)).astype(np.float32)
    acts[:, :12] = rng.random((4, 12)) < 0.5
    srv = DreamServer(tiny64)
    with serving(srv) as (url, http):
        body = {"seed": 9, "temperature": 1.0,
                "steps": [{"image_name": "", "action": a.tolist(), "tokens": t.tolist()} for t, a in zip(toks, acts)]}
        r = http.post("/sessions", data={"json": json.dumps(body)}, files=[("unused", ("u", b"", "x"))],
                      params={"frame": "none"})
        assert r.status_code == 200, r.text
        sid = r.json()["session_id"]
        got = [http.post(f"/sessions/{sid}/step", json={"action": a.tolist()}, params={"frame": "none"}).json()["tokens"]
               for a in acts[2:]]
        r = http.post(f"/sessions/{sid}/step", json={"action": [0.0] * 15})
        assert r.status_code == 400 and "16 numbers" in r.text
        assert http.delete(f"/sessions/{sid}").status_code == 200
        assert http.post(f"/sessions/{sid}/step", json={"action": [0.0] * 16}).status_code == 404
    engine = DreamEngine(tiny64, 1, temperature=1.0, top_p=1.0)
    engine.reset(tokens=torch.from_numpy(toks)[None], actions=torch.from_numpy(acts[None, :2]), seeds=[9])
    want = [engine.step(torch.from_numpy(a[None]), decode=False).tokens[0].tolist() for a in acts[2:]]
    assert got == want


def test_a_process_worker_dreams_the_same_and_leaves_nothing_running():
    """The engine in a child process (wham-gym serve's default): same tokens as a local engine; stopped with the server."""
    model = load_model("tiny")
    srv = DreamServer("tiny", worker="process", threads=1)
    rng = np.random.default_rng(5)
    toks = rng.integers(0, model.config.image_vocab_size, (2, 60))
    body = {"num_steps_to_predict": 2, "seed": 21,
            "steps": [{"image_name": "", "action": [0.0] * 12 + [0.5, 0.0, 0.0, 0.0], "tokens": t.tolist()}
                      for t in toks]}
    with serving(srv) as (url, http):
        job = post_job(http, body, {}).json()["job_ids"][0]
        got = [p["tokens"] for p in poll_until(http, [job], 2)[job]]
        worker = srv.scheduler.stepper.proc
        assert worker.is_alive()
    assert not worker.is_alive()
    engine = DreamEngine(model, 1, top_p=1.0)
    action, want = torch.tensor([[0.0] * 12 + [0.625, 0.0, 0.0, 0.0]]), []  # 0.5 binned: the bin middle 0.625
    engine.reset(tokens=torch.from_numpy(toks)[None], actions=action[None], seeds=[21])
    for _ in range(2):
        r = engine.step(action, predict_actions=True, decode=False)
        want.append(r.tokens[0].tolist())
        action = r.predicted_actions
    assert got == want


def test_package_client_round_trip(server, prompt):
    _, url, _ = server
    frames, actions = prompt
    with DreamClient(url) as client:
        ids = client.new_job(frames, actions, 1, seed=3)
        dreams = client.wait(ids, 1)
        assert dreams[ids[0]][0]["frame"].shape == (180, 300, 3)
        assert client.stats()["error"] is None


def test_cli_parses_serve():
    from wham_gym.commands.main import build_parser

    args = build_parser().parse_args(["serve", "--port", "5001", "--batching", "release", "--max-batch", "8"])
    assert (args.port, args.batching, args.max_batch, args.func.__name__) == (5001, "release", 8, "run_serve")
