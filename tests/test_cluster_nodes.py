"""Two Ray nodes on this machine, started the way users start a cluster, then used by address.

``ray start --head --block`` and ``ray start --address=127.0.0.1:PORT --block`` (one CPU
each, loopback, no dashboard, Ray's token authentication) run as child processes of this
module. A driver in a fresh process, as a user's script would be (this file run as a
script), connects by address and runs: a RayVectorEnv with one actor per node (equal to a
local env), a recording on the cluster (byte-equal to a local one) and a real-game
evaluation on it (equal to the local one). Teardown stops both nodes by their process ids
and checks that no Ray process is left that was not running before.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# pytest-xdist: on one worker with the other Ray tests (setup.cfg). The teardown checks that no Ray process is
# left that was not running before: no other Ray may start meanwhile.
pytestmark = pytest.mark.xdist_group("ray")
NODE = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--object-store-memory={100 * 2**20}",
        "--disable-usage-stats", "--block"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_pids() -> set[int]:
    """Ray's daemons and workers now running on this machine (read from ps; nobody is killed by name)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    names = ("raylet", "gcs_server", "ray::", "default_worker.py", "log_monitor.py", "monitor.py",
             "dashboard/agent.py", "runtime_env/agent")
    return {int(line.split(None, 1)[0]) for line in out.splitlines() if any(n in line for n in names)}


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    pytest.importorskip("vizdoom")
    before = ray_pids()
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # Token authentication (Ray's default): one token in ~/.ray/auth_token, presented by every node and driver.
    subprocess.run([ray_cli, "get-auth-token", "--generate"], check=True, capture_output=True)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = []
    try:
        head = [ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *NODE]
        nodes.append(subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        deadline = time.time() + 120
        while True:  # the head is up once its port answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or nodes[0].poll() is not None:
                    raise RuntimeError("the Ray head did not start")
                time.sleep(0.5)
        nodes.append(subprocess.Popen([ray_cli, "start", f"--address={address}", *NODE], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        yield address, env
    finally:
        for p in reversed(nodes):  # `ray start --block` stops its node's processes when told to stop
            p.send_signal(signal.SIGTERM)
        for p in reversed(nodes):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # the session we started, by its id
                p.wait()
        current = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes its address for a bare ray.init()
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()  # ours, and stopped: a later ray.init() must not try to join it
        deadline = time.time() + 60
        while (left := ray_pids() - before) and time.time() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left running after the test cluster stopped: {sorted(left)}"


@pytest.fixture(scope="module")
def driver_run(cluster, tmp_path_factory):
    """This file run as a user's driver script against the cluster; what it found."""
    address, env = cluster
    out = tmp_path_factory.mktemp("driver")
    proc = subprocess.run([sys.executable, __file__, address, str(out)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"the driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads((out / "found.json").read_text()), out


def test_vector_env_runs_one_actor_per_node_and_equals_local(driver_run):
    found, _ = driver_run
    assert found["nodes_alive"] == 2
    assert len(set(found["actor_nodes"])) == 2  # one actor on each node
    assert found["equal_obs"] and found["equal_reward"]


def test_recording_on_the_cluster_gives_the_same_files(driver_run):
    found, out = driver_run
    assert found["recorded"] == 3
    for name in found["files"]:
        assert (out / "here" / name).read_bytes() == (out / "there" / name).read_bytes()


def test_real_game_evaluation_on_the_cluster_equals_local(driver_run):
    found, _ = driver_run
    here, there = found["evaluation"]
    assert here["returns"] == there["returns"] and here["lengths"] == there["lengths"]


def drive(address: str, out: Path) -> None:
    """The driver: what a user's script does with a cluster's address."""
    import ray
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))  # agents/ lives beside the package
    from agents.evaluate import Evaluator, RandomAgent
    from agents.wrappers import RAW
    from wham_gym.cluster import RayExecutor, RayVectorEnv
    from wham_gym.env import WHAMVectorEnv
    from wham_gym.games.recorder import record
    from wham_gym.model import load_model

    ray.init(address=address, log_to_driver=False)
    deadline = time.time() + 120
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:  # the second node joins
        if time.time() > deadline:
            raise RuntimeError("the second Ray node did not join")
        time.sleep(0.5)
    found = {"nodes_alive": len([n for n in ray.nodes() if n["Alive"]])}

    N, tiny = 4, load_model("tiny")
    remote = RayVectorEnv(N, tiny, num_actors=2, num_cpus=1, threads=1)  # one CPU each: one actor per node
    local = WHAMVectorEnv(N, tiny)
    found["actor_nodes"] = [a["node_id"] for a in remote.actors_info]
    o1, _ = remote.reset(seed=5)
    o2, _ = local.reset(seed=5)
    equal_obs, equal_reward = bool((o1 == o2).all()), True
    rng = np.random.default_rng(5)
    for _ in range(3):
        a = rng.uniform(-1, 1, (N, 16)).astype(np.float32)
        (o1, r1, *_), (o2, r2, *_) = remote.step(a), local.step(a)
        equal_obs &= bool((o1 == o2).all())
        equal_reward &= bool((r1 == r2).all())
    found.update(equal_obs=equal_obs, equal_reward=equal_reward)
    remote.close()

    kw = dict(scenario="defend_the_center", episodes=3, policy="random", max_steps=12, seed=4, progress=False)
    here = record(str(out / "here"), workers=1, **kw)
    record(str(out / "there"), executor=RayExecutor(num_cpus=0.5), **kw)
    found["files"] = [e["file"] for e in here["episodes"]]
    found["recorded"] = len(found["files"])

    found["evaluation"] = []
    for ray_opt in (False, {"num_cpus": 0.5}):
        ev = Evaluator(None, "defend_the_center", max_steps=15, num_envs=2, seed=3, ray=ray_opt)
        try:
            found["evaluation"].append(ev.run(RandomAgent(seed=1), "real", episodes=3, wrapping=RAW))
        finally:
            ev.close()
    (out / "found.json").write_text(json.dumps(found))
    ray.shutdown()


if __name__ == "__main__":
    drive(sys.argv[1], Path(sys.argv[2]))
