"""agents/: wrappers, evaluation, PPO/SAC training with resume, and the comparison, end to end on the tiny model
and the real Doom game (a few hundred steps, short episodes)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("vizdoom")
pytest.importorskip("stable_baselines3")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain `pytest` puts tests/ on sys.path, not the repository
    sys.path.insert(0, str(REPO))

from stable_baselines3 import PPO, SAC  # noqa: E402

from agents import compare, evaluate, runs, train_sb3, wrappers  # noqa: E402
from agents.evaluate import BehaviourAgent, Evaluator, RandomAgent  # noqa: E402
from agents.wrappers import Wrapping  # noqa: E402
from wham_gym import controller  # noqa: E402
from wham_gym.games.doom import DoomEnv  # noqa: E402

pytestmark = pytest.mark.doom
SMALL = Wrapping(obs_size=(36, 60), frame_stack=2)
TINY_RUN = ["--model", "tiny", "--num-envs", "2", "--max-episode-steps", "12", "--obs-size", "36x60",
            "--frame-stack", "2", "--eval-episodes", "1", "--final-episodes", "2", "--eval-envs", "2",
            "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def test_obs_size_parsing():
    assert wrappers.parse_obs_size("72x120") == (72, 120)
    assert wrappers.parse_obs_size("full") is None and wrappers.parse_obs_size(None) is None
    for bad in ("72", "axb", "200x120", "0x10"):
        with pytest.raises(ValueError, match="obs size"):
            wrappers.parse_obs_size(bad)
    with pytest.raises(ValueError, match="frame_stack"):
        Wrapping(frame_stack=0)


def test_both_worlds_share_spaces_and_wrappers(tiny):
    real = wrappers.make_real_venv("defend_the_center", 2, SMALL, max_steps=3, seed=0)
    dream = wrappers.make_dream_venv(tiny, 2, SMALL, max_episode_steps=3, seed=0)
    try:
        assert real.observation_space == dream.observation_space == spaces.Box(0, 255, (36, 60, 6), np.uint8)
        assert real.action_space == dream.action_space and real.action_space.low.min() == -1
        for venv in (real, dream):
            assert venv.reset().shape == (2, 36, 60, 6)
            a = np.random.default_rng(0).uniform(-1, 1, (2, 16)).astype(np.float32)
            for t in range(3):
                obs, rew, dones, infos = venv.step(a)
            assert dones.all() and obs.shape == (2, 36, 60, 6) and rew.dtype == np.float32
            assert infos[0]["terminal_observation"].shape == (36, 60, 6)  # resized and stacked too
            assert infos[0]["episode"]["l"] == 3  # VecMonitor sits under the wrappers
    finally:
        real.close()
        dream.close()
    rescale = dream.venv.venv  # under VecFrameStack and VecResize
    assert isinstance(rescale, wrappers.VecRescaleAction)
    lo, hi = controller.action_space().low, controller.action_space().high
    assert np.allclose(rescale.to_controller(-np.ones(16)), lo) and np.allclose(rescale.to_controller(np.ones(16)), hi)
    mid = rescale.to_controller(np.zeros(16))
    assert np.allclose(mid[:12], 0.5) and np.allclose(mid[12:], 0.0)  # a button is pressed from agent action 0 up
    assert np.allclose(rescale.to_controller(np.full(16, 7.0)), hi)  # clipped


def test_resize_frames():
    frames = np.random.default_rng(0).integers(0, 256, (2, 180, 300, 3), dtype=np.uint8)
    out = wrappers.resize_frames(frames, (72, 120))
    assert out.shape == (2, 72, 120, 3) and out.dtype == np.uint8
    flat = np.full((180, 300, 3), 77, np.uint8)
    assert (wrappers.resize_frames(flat, (36, 60)) == 77).all()
    # grayscale: one channel of BT.601 luma, rounded, at full size or downscaled
    gray = wrappers.resize_frames(frames, None, grayscale=True)
    luma = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert gray.shape == (2, 180, 300, 1) and np.abs(gray[..., 0] - luma).max() <= 0.5 + 1e-3
    pure = np.zeros((1, 4, 4, 3), np.uint8)
    pure[..., 1] = 255  # pure green -> 0.587 * 255 = 149.7
    assert (wrappers.resize_frames(pure, (2, 2), grayscale=True) == 150).all()


def test_reward_scale_and_grayscale_in_the_wrapper_stack():
    plain = Wrapping(obs_size=(36, 60), frame_stack=2, action_set="take_cover")
    scaled = Wrapping(obs_size=(36, 60), frame_stack=2, action_set="take_cover", grayscale=True, reward_scale=0.03)
    venvs = [wrappers.make_real_venv("take_cover", 1, w, max_steps=4, seed=3) for w in (plain, scaled)]
    try:
        assert venvs[1].observation_space.shape == (36, 60, 2)  # one gray channel per stacked frame
        for venv in venvs:
            venv.reset()
        for t in range(4):
            steps = [venv.step(np.array([1])) for venv in venvs]
        (_, r0, d0, i0), (_, r1, d1, i1) = steps
        assert r0[0] > 0 and np.isclose(r1[0], 0.03 * r0[0])  # the agent learns from the scaled reward...
        assert d0[0] and d1[0] and i0[0]["episode"]["r"] == i1[0]["episode"]["r"] > 0  # ...returns stay in tics
    finally:
        for venv in venvs:
            venv.close()
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="reward_scale"):
            Wrapping(reward_scale=bad)


def test_behaviour_agent_sees_the_real_frames(tiny):
    # The model's context must hold the real frames the agent was shown and the actions it took.
    env = DoomEnv("defend_the_center", max_steps=30)
    agent = BehaviourAgent(tiny, 1, seed=0)
    W = agent.engine.window
    obs, _ = env.reset(seed=0)
    frames, actions, start = [obs], [], True
    try:
        for t in range(W + 3):
            a, _ = agent.predict(obs[None], episode_start=np.array([start]))
            images, acts = agent.engine.context_tokens(0)
            keep = frames[-W:]
            assert torch.equal(images, tiny.encode_frames(torch.from_numpy(np.stack(keep))))
            want = actions[-(len(keep) - 1):] if len(keep) > 1 else []
            assert acts.shape[0] == len(want)
            if want:
                assert torch.equal(acts, tiny.action_ids(torch.as_tensor(np.stack(want))))
            assert a.shape == (1, 16) and controller.action_space().contains(a[0])
            obs, *_ = env.step(a[0])
            frames.append(obs)
            actions.append(a[0])
            start = False
        agent.predict(obs[None], episode_start=np.array([True]))  # a new episode forgets the old one
        assert agent.engine.context_tokens(0)[0].shape[0] == 1
    finally:
        env.close()
    with pytest.raises(ValueError, match="slots"):
        agent.predict(np.stack([obs, obs]))


def test_evaluator_real_and_dream(tiny):
    ev = Evaluator(tiny, max_steps=6, num_envs=2)
    try:
        r = ev.run(RandomAgent(seed=0), "real", 3)
        assert r["episodes"] == 3 and r["lengths"] == [6, 6, 6] and r["steps"] == 18 and len(r["returns"]) == 3
        assert r["mean"] == pytest.approx(np.mean(r["returns"])) and r["std"] >= 0 and r["seconds"] > 0
        d = ev.run(BehaviourAgent(tiny, 2, seed=0), "dream", 2)
        assert d["episodes"] == 2 and d["mean_length"] == 6
        assert ev.run(RandomAgent(seed=0), "real", 3) == {**r, "seconds": pytest.approx(r["seconds"], abs=10)}
        with pytest.raises(ValueError, match="one slot per eval env"):
            ev.run(BehaviourAgent(tiny, 1), "real", 2)
        with pytest.raises(ValueError, match="world"):
            ev.run(RandomAgent(), "moon", 1)
    finally:
        ev.close()
    with pytest.raises(ValueError, match="world model"):
        Evaluator(None).run(RandomAgent(), "dream", 1)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_ppo_in_the_dream_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "ppo"
    argv = ["--algo", "ppo", "--world", "dream", "--n-steps", "16", "--eval-every", "32", "--out", str(out), *TINY_RUN]
    res = train_sb3.train(argv + ["--steps", "64"])  # two PPO rollouts of 16 steps x 2 envs
    assert res["timesteps"] == 64 and res["real"]["episodes"] == 2 and res["dream"]["episodes"] == 2
    assert res["train_wall_s"] > 0 and res["eval_wall_s"] > 0 and res["config"]["obs_size"] == "36x60"
    rows = _csv(out / "progress.csv")
    for col in ("time/total_timesteps", "rollout/ep_rew_mean", "rollout/ep_len_mean", "train/loss",
                "eval/real_return", "eval/dream_return"):
        assert col in rows[0], col
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["timesteps"] for e in evals] == [0, 32, 64]
    for e in evals:
        for world in ("real", "dream"):
            assert {"mean", "std", "episodes", "returns", "lengths", "steps", "seconds"} <= set(e[world])
    ckpts = runs.RunDir(out).checkpoints()
    assert [c[0] for c in ckpts] == [32, 64] and ckpts[-1][2]["timesteps"] == 64
    model = PPO.load(ckpts[-1][1], device="cpu")
    assert model.num_timesteps == 64
    act, _ = model.predict(np.zeros((36, 60, 6), np.uint8))
    assert act.shape == (16,) and np.abs(act).max() <= 1
    assert PPO.load(out / "final.zip", device="cpu").num_timesteps == 64

    # Run again with a larger budget: resumes from the latest checkpoint, logs continue.
    res = train_sb3.train(argv + ["--steps", "96"])
    assert res["timesteps"] == 96 and res["wall_s"] > 0
    assert (out / "progress.0.csv").exists()
    steps = [float(r["time/total_timesteps"]) for r in runs.RunDir(out).progress_rows()]
    assert steps == sorted(steps) and steps[-1] == 96
    assert [e["timesteps"] for e in runs.RunDir(out).eval_entries()] == [0, 32, 64, 96]
    assert [c[0] for c in runs.RunDir(out).checkpoints()] == [32, 64, 96]
    assert train_sb3.train(argv + ["--steps", "96"]) == res  # finished: nothing to do
    with pytest.raises(SystemExit):  # another setting that shapes the policy: refused
        train_sb3.train([*argv, "--steps", "96", "--frame-stack", "3"])


def test_lockstep_reinjection_through_the_sb3_wrappers(tiny, tmp_path):
    from agents.wrappers import lockstep_reinjection

    reinjection = lockstep_reinjection("defend_the_center", 2, max_steps=12, every=3, asynchronous=False)
    venv = wrappers.make_dream_venv(tiny, 2, wrappers.RAW, max_episode_steps=12, reinjection=reinjection, seed=0)
    try:
        venv.reset()
        marks = []
        for _ in range(6):
            _, _, _, infos = venv.step(np.zeros((2, 16), np.float32))
            marks.append([bool(i.get("reinjected")) for i in infos])
        assert marks == [[False, False], [False, False], [True, True]] * 2
    finally:
        venv.close()
    res = train_sb3.train(["--reinjection", "lockstep", "--reinject-every", "4", "--steps", "32", "--n-steps", "16",
                           "--eval-every", "0", "--eval-worlds", "real", "--out", str(tmp_path / "lock"), *TINY_RUN])
    assert res["reinjection"] == "lockstep" and res["timesteps"] == 32


def test_train_sac_in_the_real_game_keeps_its_replay_buffer(tmp_path):
    out = tmp_path / "sac"
    argv = ["--algo", "sac", "--world", "real", "--steps", "64", "--learning-starts", "16", "--batch-size", "8",
            "--buffer-size", "200", "--eval-every", "32", "--eval-worlds", "real", "--out", str(out), *TINY_RUN]
    res = train_sb3.train(argv)
    assert res["timesteps"] == 64 and "dream" not in res and res["real"]["episodes"] == 2
    ckpt = runs.RunDir(out).latest_checkpoint()
    replays = sorted(p.name for p in (out / "checkpoints").glob("*.replay.npz"))
    assert replays == ["step_000000064.replay.npz"]  # only the newest is kept
    model = SAC.load(ckpt[1], device="cpu")
    venv = wrappers.make_real_venv("defend_the_center", 2, SMALL)
    try:
        model.set_env(venv)
        fresh = SAC("CnnPolicy", venv, buffer_size=200, device="cpu")
        runs.load_replay(fresh.replay_buffer, str(out / "checkpoints" / replays[0]))
        assert fresh.replay_buffer.pos == 32 and fresh.replay_buffer.observations[:32].any()
        assert fresh.replay_buffer.observations.shape[2:] == (6, 36, 60)
    finally:
        venv.close()


def test_train_rejects_bad_arguments(tmp_path, capsys):
    for bad in (["--world", "real", "--reinjection", "retrieval"], ["--obs-size", "500x10"], ["--steps", "0"],
                ["--eval-worlds", "real,moon"], ["--world", "real", "--dream-ends", "expected"],
                ["--dream-ends", "expected"],  # the tiny model has no termination hazard to take the expectation of
                ["--world", "real", "--dream-starts", "data/x"], ["--dream-starts", str(tmp_path / "nothing")],
                ["--dream-ends", "drawn"],  # nor end frames to draw
                ["--end-risk", "3,0.2"], ["--dream-ends", "risk", "--end-risk", "3"],
                ["--dream-ends", "risk", "--end-risk", "3,1.5"], ["--pi-layers", "0"], ["--action-repeat", "0"],
                ["--action-history", "2"], ["--dream-ends", "card:motion-only"],  # the tiny card offers none
                ["--world", "real", "--dream-shards", "2"], ["--dream-shards", "2", "--dream-ends", "drawn"],
                ["--world", "real", "--ends-in-expectation"],
                ["--ends-in-expectation"]):  # the tiny model's ends are its learned hazard's: no q to expect
        with pytest.raises(SystemExit):
            train_sb3.train([*bad, "--out", str(tmp_path / "x"), "--model", "tiny"])
    err = capsys.readouterr().err
    assert "applies to dream training" in err and "obs size" in err and "--steps must be >= 1" in err
    assert "--dream-ends expected applies to dream training" in err and "needs a world model with a learned" in err
    assert "--dream-starts applies to dream training" in err and "nothing" in err
    assert "never learned to draw an end frame" in err
    assert "--end-risk applies to --dream-ends risk" in err and "expected SHARPNESS,CENTER" in err
    assert "a center in (0, 1)" in err
    assert "--pi-layers sets the MLP that reads --observe latent" in err and "--action-repeat must be >= 1" in err
    assert "--action-history appends to the flat latent" in err
    assert "ends 'motion-only': this model's card offers no such ends" in err
    assert "--dream-shards applies to dream training" in err and "--dream-shards runs the card's ends" in err
    assert "--ends-in-expectation takes a dream's risk or motion ends" in err
    assert "expected ends read a risk or motion termination's end probability" in err


def _vector_env(venv):
    """The WHAMVectorEnv under SB3's wrappers and our adapter."""
    while not hasattr(venv, "prompt_bank"):
        venv = getattr(venv, "venv", None) or venv.env
    return venv


def test_dream_starts_come_from_the_recordings_given(tiny, tmp_path):
    """--dream-starts: training dreams start from random windows of those episodes, evaluation dreams do not."""
    rec = REPO / "wham_gym/assets/default/prompts"
    args = train_sb3.build_parser().parse_args([*TINY_RUN, "--dream-starts", str(rec / "prompt_01.npz"),
                                                "--out", str(tmp_path / "r")])
    cfg = train_sb3.make_config(args)
    venv = train_sb3.make_train_venv(cfg, tiny)
    try:
        assert [str(e) for e in _vector_env(venv).prompt_bank.episodes] == [str(rec / "prompt_01.npz")]
    finally:
        venv.close()
    cfg.pop("dream_starts")
    venv = train_sb3.make_train_venv(cfg, tiny)  # without it: the model's own prompts
    try:
        assert "prompt_01.npz" not in " ".join(str(e) for e in _vector_env(venv).prompt_bank.episodes)
    finally:
        venv.close()


def test_dream_horizon_cuts_training_dreams_only(tiny, tmp_path):
    """--dream-horizon H: training dreams are truncated (bootstrapped by SB3) after H steps; the run's episode cap
    stays for evaluations, and the setting is refused where it means nothing."""
    args = train_sb3.build_parser().parse_args([*TINY_RUN, "--dream-horizon", "3", "--out", str(tmp_path / "r")])
    cfg = train_sb3.make_config(args)
    assert cfg["dream_horizon"] == 3 and cfg["max_episode_steps"] > 3
    venv = train_sb3.make_train_venv(cfg, tiny)
    try:
        assert _vector_env(venv).max_episode_steps == 3
        venv.reset()
        for _ in range(3):
            _, _, dones, infos = venv.step(np.zeros(venv.num_envs, dtype=np.int64)
                                           if cfg.get("action_set") else
                                           np.zeros((venv.num_envs, *venv.action_space.shape), np.float32))
        assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    finally:
        venv.close()
    for bad in (["--world", "real", "--dream-horizon", "5"], ["--dream-horizon", "0"],
                ["--max-episode-steps", "10", "--dream-horizon", "11"]):
        with pytest.raises(ValueError, match="--dream-horizon"):
            train_sb3.make_config(train_sb3.build_parser().parse_args([*TINY_RUN, *bad, "--out", str(tmp_path / "x")]))


def test_compare_all_rows_and_results_md(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Agents\n\nNotes kept by hand.\n\n" + compare.BEGIN + "\nold\n" + compare.END + "\n\nTail.\n")
    # One PPO rollout (16 steps x 2 envs) per training row, evaluated at 0 and 32 steps: a two-point curve.
    argv = ["--steps", "32", "--sac", "--real-frames", "24", "--name", "t", "--model", "tiny", "--num-envs", "2",
            "--max-episode-steps", "8", "--episodes", "2", "--dream-episodes", "1", "--eval-every", "32",
            "--eval-episodes", "1",
            "--eval-envs", "2", "--obs-size", "36x60", "--frame-stack", "2", "--threads", "1", "--inline",
            "--retrieval-bank", str(REPO / "wham_gym/assets/default/prompts"),
            "--train-args", "--n-steps 16 --learning-starts 16 --batch-size 16 --buffer-size 200 "
                            "--retrieval-frames 24",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--results-md", str(md)]
    res = compare.main(argv)
    assert list(res["rows"]) == list(compare.ROWS)
    saved = json.loads((tmp_path / "results" / "t.json").read_text())
    assert saved["rows"].keys() == res["rows"].keys() and saved["versions"]["torch"] == torch.__version__
    for name, row in saved["rows"].items():
        assert row["real"]["episodes"] == 2 and row["dream"]["episodes"] == 1
        assert row["env_steps"] == (0 if name in ("random", "behaviour") else 32)  # whole rollouts of 32
        frames = 0 if name in ("random", "behaviour") else 24 if compare.is_dream_row(name) else 32  # the game's
        assert row["real_frames"] == frames
        trained = name not in ("random", "behaviour")
        assert ("real_sampled" in row) == trained and (not trained or row["real_sampled"]["episodes"] == 2)
    assert runs.read_json(tmp_path / "runs" / "t" / "ppo-dream-retrieval" / "config.json")["reinjection"] == "retrieval"
    png = tmp_path / "results" / "t.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert text.startswith("# Agents\n\nNotes kept by hand.") and text.rstrip().endswith("Tail.")
    assert "\nold\n" not in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(compare.ROWS)
    assert all(label in text for label, _ in compare.ROWS.values()) and "](results/t.png)" in text
    assert "`--n-steps 16 --learning-starts 16" in text  # the training rows' own arguments, in the header
    assert compare._ret(saved["rows"]["ppo-real"]["real"]).endswith(", 2)")
    assert compare._ret({"mean": 1.0, "std": 0.5, "episodes": 3}) == "1.00 ± 0.50 (3)"  # kept from before ci95

    # Finished rows are skipped; a different budget under the same name is refused.
    again = compare.main(argv)
    assert again["rows"] == res["rows"]
    # A result from before the sampled-action evaluation, or from a run evaluated in the real game only, gets
    # just what it lacks added, not a new training run.
    saved["rows"]["ppo-real"].pop("real_sampled")
    saved["rows"]["ppo-real"]["dream"] = None
    (tmp_path / "results" / "t.json").write_text(json.dumps(saved))
    upgraded = compare.main([*argv, "--rows", "ppo-real"])["rows"]["ppo-real"]
    assert upgraded["real_sampled"]["episodes"] == 2 and upgraded["real"] == res["rows"]["ppo-real"]["real"]
    assert upgraded["dream"]["episodes"] == 1 and upgraded["dream"]["steps"] >= 1
    assert runs.read_json(tmp_path / "results" / "t.json")["rows"]["ppo-real"]["dream"] == upgraded["dream"]
    with pytest.raises(SystemExit):
        compare.main([*argv[:1], "33", *argv[2:]])


def test_evaluate_cli_and_scripts_run_as_files(tmp_path):
    out = tmp_path / "ppo"
    train_sb3.train(["--steps", "32", "--n-steps", "16", "--eval-every", "0", "--eval-worlds", "real",
                     "--out", str(out), *TINY_RUN])
    res = evaluate.main(["--policy", str(out), "--worlds", "real,dream", "--episodes", "2", "--max-steps", "5",
                         "--model", "tiny", "--num-envs", "2", "--out", str(tmp_path / "e.json")])
    assert json.loads((tmp_path / "e.json").read_text()) == res and res["real"]["lengths"] == [5, 5]
    res = evaluate.main(["--policy", "behaviour", "--worlds", "real", "--episodes", "1", "--max-steps", "4",
                         "--model", "tiny"])
    assert res["real"]["steps"] == 4
    # Scripts run as files too (compare imports the others): python agents/compare.py --help
    r = subprocess.run([sys.executable, str(REPO / "agents" / "compare.py"), "--help"], capture_output=True, text=True,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0 and "--rows" in r.stdout, r.stderr


def test_compare_temperature_sweep_with_an_action_set(tmp_path, capsys):
    # Item 5's table: a dream row per temperature, the random row drawing the action set's presets.
    md = tmp_path / "RESULTS.md"
    argv = ["--steps", "16", "--name", "sweep", "--model", "tiny", "--scenario", "take_cover",
            "--action-set", "take_cover", "--rows", "random,ppo-dream", "--temperatures", "1.3,0.7",
            "--real-frames", "500", "--num-envs", "1", "--max-episode-steps", "6", "--episodes", "2",
            "--eval-every", "0", "--eval-episodes", "1", "--eval-envs", "2", "--obs-size", "36x60",
            "--frame-stack", "1", "--threads", "1", "--inline", "--train-args", "--n-steps 16",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--results-md", str(md)]
    # agents.evaluate's single results may share the folder: the tables are drawn from comparisons only.
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a-single-evaluation.json").write_text(json.dumps({"real": {"mean": 1.0}}))
    res = compare.main(argv)
    assert list(res["rows"]) == ["random", "ppo-dream-t0.7", "ppo-dream-t1.3"]  # the table's order
    for t in ("0.7", "1.3"):
        row = res["rows"][f"ppo-dream-t{t}"]
        cfg = runs.read_json(tmp_path / "runs" / "sweep" / f"ppo-dream-t{t}" / "config.json")
        assert (cfg["temperature"], cfg["action_set"]) == (float(t), "take_cover")
        assert row["label"].endswith(f"T = {t}") and row["real_frames"] == 500 and row["env_steps"] == 16
    assert res["rows"]["random"]["real"]["episodes"] == 2 and res["rows"]["random"]["real_frames"] == 0
    text = md.read_text()
    assert "Spearman's rank correlation" in text and "1092 ± 556" in text and "| real frames used |" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| Random policy", "| PPO, trained in the dream, T = 0.7",
                                                           "| PPO, trained in the dream, T = 1.3"]
    capsys.readouterr()
    for bad, message in ((["--rows", "ppo-real-t1.1"], "unknown ['ppo-real-t1.1']"),
                         (["--rows", "ppo-dream", "--temperatures", "hot"], "--temperatures: expected"),
                         (["--rows", "ppo-real-frames", "--real-frames", "0"], "--real-frames must be >= 1")):
        with pytest.raises(SystemExit):
            compare.main(["--steps", "16", "--results-dir", str(tmp_path / "r2"), *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["--steps", "16", "--rows", "ppo-real-frames", "--results-dir", str(tmp_path / "r2")])
    assert "needs --real-frames" in capsys.readouterr().err


def test_compare_rows_from_other_processes_are_kept(tmp_path):
    path = tmp_path / "c.json"
    runs.write_json(path, {"rows": {"ppo-dream": {"v": "theirs, newer"}, "random": {"v": "theirs"}}})
    results = {"rows": {"ppo-dream": {"v": "our stale copy"}, "ppo-real": {"v": "ours"}}}
    compare.merge_rows(str(path), results, {"ppo-real"})
    assert results["rows"] == {"random": {"v": "theirs"}, "ppo-real": {"v": "ours"},
                               "ppo-dream": {"v": "theirs, newer"}}
    assert list(results["rows"]) == ["random", "ppo-real", "ppo-dream"]  # the table's order


def test_ppo_with_an_action_set_in_the_real_game(tmp_path, capsys):
    out = tmp_path / "ppo-take-cover"
    result = train_sb3.train(["--world", "real", "--scenario", "take_cover", "--action-set", "take_cover",
                              "--grayscale", "--reward-scale", "0.03", "--steps", "32", "--n-steps", "16", "--eval-every", "0", "--eval-worlds", "real",
                              "--out", str(out), *TINY_RUN])
    assert result["timesteps"] >= 32
    cfg = runs.read_json(out / "config.json")
    assert (cfg["action_set"], cfg["grayscale"], cfg["reward_scale"]) == ("take_cover", True, 0.03)
    assert runs.wrapping_from_config(cfg).grayscale
    from stable_baselines3 import PPO

    policy = PPO.load(str(out / "final.zip"), device="cpu")
    assert policy.action_space.n == 3  # none / left / right
    assert policy.observation_space.shape[0] == 2  # 2 stacked gray frames (TINY_RUN), channel-first for the CNN
    with pytest.raises(SystemExit):  # resuming with another reward scale is refused, saying why
        train_sb3.train(["--world", "real", "--scenario", "take_cover", "--action-set", "take_cover",
                         "--grayscale", "--reward-scale", "0.1", "--steps", "64", "--n-steps", "16",
                         "--eval-every", "0", "--eval-worlds", "real", "--out", str(out), *TINY_RUN])
    assert "reward_scale: 0.03 there, 0.1 now" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # axes without a set to take them from: refused at the boundary
        train_sb3.train(["--action-axes", "--out", str(tmp_path / "axes"), *TINY_RUN])
    assert "give --action-set too" in capsys.readouterr().err


def test_sac_acts_through_the_action_sets_axes_in_both_worlds(tmp_path, tiny):
    # SAC needs a Box: with an action set it gets the set's axes (take_cover: left stick x in [-1, 1])
    out = tmp_path / "sac-take-cover"
    result = train_sb3.train(["--algo", "sac", "--scenario", "take_cover", "--action-set", "take_cover",
                              "--observe", "latent", "--steps", "32", "--learning-starts", "8", "--batch-size", "8",
                              "--buffer-size", "100", "--gradient-steps", "1", "--eval-every", "0",
                              "--eval-worlds", "real,dream", "--out", str(out), *TINY_RUN])
    assert result["timesteps"] == 32 and result["real"]["episodes"] == 2 and result["dream"]["episodes"] == 2
    cfg = runs.read_json(out / "config.json")
    assert (cfg["action_set"], cfg["action_axes"], cfg["gradient_steps"]) == ("take_cover", True, 1)
    policy, wrapping, _ = evaluate.load_policy(str(out), device="cpu")
    assert isinstance(policy, SAC) and policy.action_space.shape == (1,) and wrapping.action_axes

    # the Box maps onto the controller alike in both worlds: the stick's value snapped to the set's levels (its data's
    # -1, 0, +1), every other dimension 0
    axes = Wrapping(obs_size=None, frame_stack=1, action_set="take_cover", action_axes=True)
    sent = []
    dream = wrappers.make_dream_venv(tiny, 2, axes, max_episode_steps=3, seed=0)
    real = wrappers.make_real_venv("take_cover", 2, axes, max_steps=3, seed=0)
    try:
        for venv in (dream, real):
            assert venv.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
            inner = venv.venv  # VecAxesActions -> what the world receives
            while type(inner).__name__ != "VecMonitor":
                inner = inner.venv
            inner.step_async = lambda a, f=inner.step_async: (sent.append(np.array(a)), f(a))[1]
            venv.reset()
            venv.step(np.array([[-0.75], [2.0]]))  # between levels: the nearest; out of the Box: clipped
    finally:
        dream.close()
        real.close()
    want = np.zeros((2, 16), np.float32)
    want[:, controller.ACTION_NAMES.index("left_stick_x")] = [-1.0, 1.0]
    for got in sent:
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="action_set"):
        Wrapping(action_axes=True)


def test_tokenizer_view_and_game_settings_of_the_real_game(tiny):
    plain = Wrapping(obs_size=None, frame_stack=1, action_set="take_cover")
    viewed = Wrapping(obs_size=None, frame_stack=1, action_set="take_cover", tokenizer_view=True)
    with pytest.raises(ValueError, match="model="):
        wrappers.make_real_venv("take_cover", 1, viewed, max_steps=3)
    venvs = [wrappers.make_real_venv("take_cover", 1, plain, max_steps=3, seed=5, game_kwargs={"render_hud": True}),
             wrappers.make_real_venv("take_cover", 1, viewed, max_steps=3, seed=5, game_kwargs={"render_hud": True},
                                     model=tiny),
             wrappers.make_real_venv("take_cover", 1, plain, max_steps=3, seed=5)]
    try:
        obs = [venv.reset() for venv in venvs]
        for t in range(3):
            steps = [venv.step(np.array([2])) for venv in venvs]
    finally:
        for venv in venvs:
            venv.close()
    # the status bar is drawn only when asked
    assert np.abs(obs[0][0, 160:].astype(int) - obs[2][0, 160:]).mean() > 10
    # the tokenizer's view of a real frame is its decode(encode(frame)), also for the episode's last frame
    with torch.no_grad():
        expect = tiny.tokenizer.decode(tiny.tokenizer.encode(torch.from_numpy(obs[0]).permute(0, 3, 1, 2)))
    assert np.array_equal(obs[1], expect.permute(0, 2, 3, 1).numpy())
    (_, _, d0, i0), (_, _, d1, i1) = steps[:2]
    assert d0[0] and d1[0]
    with torch.no_grad():
        last = torch.from_numpy(i0[0]["terminal_observation"][None]).permute(0, 3, 1, 2)
        expect = tiny.tokenizer.decode(tiny.tokenizer.encode(last)).permute(0, 2, 3, 1).numpy()[0]
    assert np.array_equal(i1[0]["terminal_observation"], expect)

    # a dream and a real game set up unlike the model's recording are refused, saying how to fix it
    class Carded:
        card = {"game_kwargs": {"render_hud": True}}

    wrappers.check_game(Carded(), {"render_hud": True})
    with pytest.raises(ValueError, match="pass --hud"):
        wrappers.check_game(Carded(), {})
    with pytest.raises(ValueError, match="drop --hud"):
        wrappers.check_game(tiny, {"render_hud": True})


def test_latent_view_is_the_same_quantised_latent_in_both_worlds(tiny):
    latent = Wrapping(obs_size=None, frame_stack=1, action_set="take_cover", observe="latent")
    book = tiny.tokenizer.codes(torch.arange(tiny.tokenizer.vocab_size)[None])[0].numpy()  # (V, E)
    grid = (tiny.tokenizer.rows, tiny.tokenizer.cols)
    with pytest.raises(ValueError, match="model="):
        wrappers.make_real_venv("take_cover", 1, latent, max_steps=3)
    with pytest.raises(ValueError, match="observe"):
        Wrapping(observe="tokens")

    # the dream: its image tokens looked up in the codebook, no pixels decoded
    dream = wrappers.make_dream_venv(tiny, 2, latent, max_episode_steps=3, seed=0)
    tokens = wrappers.make_dream_venv(tiny, 2, replace_observe(latent), max_episode_steps=3, seed=0,
                                      obs_mode="tokens")
    try:
        assert dream.observation_space.shape == (*grid, book.shape[1])
        pairs = [(dream.reset(), tokens.reset())]
        for _ in range(4):  # past an episode end: terminal observations are mapped too
            pairs.append((dream.step(np.array([1, 2])), tokens.step(np.array([1, 2]))))
    finally:
        dream.close()
        tokens.close()
    for got, raw in [pairs[0]] + [(a[0], b[0]) for a, b in pairs[1:]]:
        assert got.dtype == np.float32 and np.array_equal(got, book[raw].reshape(2, *grid, -1))
    (_, _, done, info), (_, _, _, raw_info) = pairs[3]
    assert done.all()
    assert np.array_equal(info[0]["terminal_observation"], book[raw_info[0]["terminal_observation"]].reshape(*grid, -1))

    # the real game: its frames encoded by the same tokenizer
    real = wrappers.make_real_venv("take_cover", 1, latent, max_steps=3, seed=5, model=tiny)
    frames = wrappers.make_real_venv("take_cover", 1, wrappers.RAW, max_steps=3, seed=5)
    try:
        got, raw = real.reset(), frames.reset()
    finally:
        real.close()
        frames.close()
    with torch.no_grad():
        expect = tiny.tokenizer.codes(tiny.tokenizer.encode(torch.from_numpy(raw).permute(0, 3, 1, 2))).numpy()
    assert np.array_equal(got, expect.reshape(1, *grid, -1))


def test_train_ppo_on_the_latent_with_dream_settings(tmp_path):
    out = tmp_path / "latent"
    argv = ["--world", "dream", "--observe", "latent", "--action-set", "take_cover", "--scenario", "take_cover",
            "--temperature", "1.1", "--decoding", "diagonal", "--refresh-every", "2", "--n-steps", "16",
            "--steps", "32", "--eval-every", "0", "--features-dim", "32", "--pi-layers", "0",
            "--action-repeat", "2", "--action-history", "3", "--dream-shards", "2", "--out", str(out), *TINY_RUN]
    res = train_sb3.train(argv)
    assert res["timesteps"] == 32 and res["real"]["episodes"] == 2 and res["dream"]["episodes"] == 2
    cfg = res["config"]
    assert cfg["dream_shards"] == 2  # the training dreams ran in two child processes
    assert (cfg["observe"], cfg["temperature"], cfg["decoding"], cfg["refresh_every"]) == ("latent", 1.1, "diagonal", 2)
    assert runs.wrapping_from_config(cfg).action_repeat == 2  # evaluations hold the actions as training did
    policy = PPO.load(out / "final.zip", device="cpu")
    assert policy.policy.__class__.__name__ == "ActorCriticPolicy"  # MlpPolicy: no CNN over a 6x10 grid
    pi, vf = policy.policy.mlp_extractor.policy_net, policy.policy.mlp_extractor.value_net
    assert len(pi) == 0 and len(vf) == 4  # --pi-layers 0: a linear policy; the value keeps its 2 hidden layers
    # rows x cols x frame_stack x codebook dim, then the last 3 decisions one-hot over take_cover's 3 presets
    assert policy.observation_space.shape == (6 * 10 * 2 * 8 + 3 * 3,)
    assert runs.wrapping_from_config(cfg).action_history == 3
    with pytest.raises(SystemExit):  # another dream is another run
        train_sb3.train([a if a != "1.1" else "0.7" for a in argv] + ["--steps", "48"])


class _Counter(gym.Env):
    """Reward = the step's number within the episode (1, 2, ...), ends after ``length`` steps; obs = that number;
    the actions it got are logged."""

    observation_space = spaces.Box(0, 100, (1,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, length, log):
        self.length, self.log, self.t = length, log, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.log.append(int(action))
        return np.array([self.t], np.float32), float(self.t), self.t == self.length, False, {}


def test_action_repeat_holds_actions_sums_rewards_and_keeps_returns_exact():
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    logs = [[], []]
    venv = wrappers.VecActionRepeat(VecMonitor(DummyVecEnv([lambda i=i: _Counter((5, 9)[i], logs[i])
                                                             for i in range(2)])), 3)
    venv.reset()
    obs, rew, dones, infos = venv.step(np.array([1, 2]))
    assert logs == [[1, 1, 1], [2, 2, 2]] and list(rew) == [6, 6] and not dones.any() and list(obs[:, 0]) == [3, 3]
    obs, rew, dones, infos = venv.step(np.array([0, 0]))  # env 0 ends at its 2nd sub-step (step 5)
    assert list(rew) == [4 + 5, 4 + 5 + 6] and list(dones) == [True, False]
    assert infos[0]["terminal_observation"][0] == 5 and infos[0]["episode"]["r"] == 15 and infos[0]["episode"]["l"] == 5
    assert obs[0, 0] == 1  # the new episode played the repeat's last step; its reward is not in the agent's 9...
    obs, rew, dones, infos = venv.step(np.array([2, 2]))
    assert list(rew) == [2 + 3 + 4, 7 + 8 + 9] and list(dones) == [False, True] and infos[1]["episode"]["l"] == 9
    obs, rew, dones, infos = venv.step(np.array([1, 1]))  # it ends at the first sub-step (its step 5)
    assert rew[0] == 5 and dones[0] and infos[0]["episode"]["r"] == 15  # ...but its return, counted below, is exact
    with pytest.raises(ValueError, match="action_repeat must be an int >= 1"):
        Wrapping(action_repeat=0)


def test_action_repeat_in_the_real_game_and_the_random_baseline(tmp_path):
    held = Wrapping(obs_size=(36, 60), frame_stack=2, action_set="take_cover", action_repeat=2)
    venv = wrappers.make_real_venv("take_cover", 1, held, max_steps=6, seed=3)
    try:
        venv.reset()
        dones = [venv.step(np.array([1]))[2][0] for _ in range(3)]
        assert dones == [False, False, True]  # 3 decisions = the 6 steps of the episode cap
    finally:
        venv.close()
    out = evaluate.main(["--policy", "random", "--action-set", "take_cover", "--action-repeat", "3", "--scenario",
                         "take_cover", "--worlds", "real", "--episodes", "2", "--max-steps", "12", "--num-envs", "2"])
    assert out["real"]["episodes"] == 2 and out["real"]["mean_length"] == 12  # lengths in steps of the game
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", "runs/x", "--action-repeat", "2", "--worlds", "real", "--episodes", "1"])


def test_action_history_appends_the_agents_last_decisions_and_forgets_them_at_an_episode_end():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = wrappers.VecActionHistory(DummyVecEnv([lambda i=i: _Counter((2, 5)[i], []) for i in range(2)]), 2)
    assert venv.observation_space.shape == (1 + 2 * 3,)
    obs = venv.reset()
    assert np.array_equal(obs, np.zeros((2, 7), np.float32))  # nothing decided yet
    obs, _, dones, _ = venv.step(np.array([2, 0]))
    assert np.array_equal(obs[0], [1, 0, 0, 1, 0, 0, 0]) and np.array_equal(obs[1], [1, 1, 0, 0, 0, 0, 0])
    obs, _, dones, infos = venv.step(np.array([1, 1]))  # env 0 ends: its history goes with its last observation
    assert list(dones) == [True, False]
    assert np.array_equal(infos[0]["terminal_observation"], [2, 0, 1, 0, 0, 0, 1])  # newest first
    assert np.array_equal(obs[0], [0, 0, 0, 0, 0, 0, 0])  # the new episode starts with no history
    assert np.array_equal(obs[1], [2, 0, 1, 0, 1, 0, 0])
    with pytest.raises(ValueError, match="observe='latent'"):
        Wrapping(action_history=4)  # pixels: a CNN's image has nowhere to append to
    with pytest.raises(ValueError, match="action_history must be an int >= 0"):
        Wrapping(observe="latent", action_history=-1)


def test_a_recording_agent_holds_its_decisions_as_in_training():
    from agents.collect import AgentActor

    class Counting:  # a preset-index policy that logs the observations it was shown and picks left, right, ...
        def __init__(self):
            self.seen = []

        def predict(self, obs, deterministic=True):
            self.seen.append(obs.copy())
            return np.array([1 + len(self.seen) % 2]), None

    agent = Counting()
    held = Wrapping(obs_size=None, frame_stack=2, rescale=False, action_set="take_cover", action_repeat=3)
    actor = AgentActor(agent, held, None, deterministic=True)
    frames = [np.full((180, 300, 3), t, np.uint8) for t in range(7)]
    sticks = [actor.act(f)[controller.ACTION_NAMES.index("left_stick_x")] for f in frames]
    assert sticks == [1, 1, 1, -1, -1, -1, 1]  # a decision every 3rd frame, held in between
    assert len(agent.seen) == 3 and [int(o[0, 0, 0, -1]) for o in agent.seen] == [0, 3, 6]  # it saw frames 0, 3, 6
    assert int(agent.seen[2][0, 0, 0, 0]) == 3  # stacked as in training: the decisions' frames, 3 steps apart


def test_random_presets_baseline_and_a_latent_policy_from_the_command_line(tmp_path):
    out = evaluate.main(["--policy", "random", "--action-set", "take_cover", "--scenario", "take_cover",
                         "--worlds", "real", "--episodes", "3", "--max-steps", "12", "--num-envs", "3",
                         "--out", str(tmp_path / "random.json")])
    assert out["real"]["episodes"] == 3 and json.loads((tmp_path / "random.json").read_text()) == out
    agent = RandomAgent(seed=0, action_set="take_cover")
    assert agent.space.n == 3 and agent.wrapping.action_set == "take_cover"
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", "random", "--action-set", "no_such_set", "--worlds", "real", "--episodes", "1"])


def test_pacer_crosses_and_turns_on_schedule_and_refuses_what_it_cannot_do(capsys):
    from agents.evaluate import PaceAgent

    pacer = PaceAgent(4, "take_cover")  # presets none / left / right: left 1, right 2
    starts = [[True, True]] + [[False, False]] * 6 + [[False, True]] + [[False, False]] * 2
    acts = [pacer.predict(np.zeros((2, 1)), episode_start=np.array(s))[0].tolist() for s in starts]
    assert [a[0] for a in acts] == [1, 1, 2, 2, 2, 2, 1, 1, 1, 1]  # a half leg (it starts mid-room), then legs of 4
    assert [a[1] for a in acts[7:]] == [2, 2, 1]  # env 1's next episode: from its start, the first leg the other way
    assert pacer.wrapping.action_set == "take_cover" and pacer.wrapping.action_repeat == 1
    for bad, msg in [((0, "take_cover"), "at least 1"), ((3, None), "needs --action-set"),
                     ((3, "defend_the_center"), "expected 'left' and 'right'")]:
        with pytest.raises(ValueError, match=msg):
            PaceAgent(*bad)
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", "pace:x", "--action-set", "take_cover", "--worlds", "real", "--episodes", "1"])
    assert "whole number of steps" in capsys.readouterr().err
    out = evaluate.main(["--policy", "pace:3", "--action-set", "take_cover", "--scenario", "take_cover",
                         "--worlds", "real", "--episodes", "2", "--max-steps", "8", "--num-envs", "2"])
    assert out["real"]["episodes"] == 2 and out["real"]["mean_length"] == 8



def test_cycle_plays_its_rhythm_from_each_episode_start_and_refuses_unknown_presets(capsys):
    from agents.evaluate import CycleAgent

    cycle = CycleAgent("fire*3,turn_right*2", "defend_the_center")  # turn_left 0, turn_right 1, fire 2
    starts = [[True, True]] + [[False, False]] * 5 + [[False, True]] + [[False, False]]
    acts = [cycle.predict(np.zeros((2, 1)), episode_start=np.array(s))[0].tolist() for s in starts]
    assert [a[0] for a in acts] == [2, 2, 2, 1, 1, 2, 2, 2]
    assert [a[1] for a in acts[5:]] == [2, 2, 2]  # env 1 began a new episode at step 6: its rhythm starts again
    assert CycleAgent("turn_left", "defend_the_center").pattern.tolist() == [0]
    for bad, msg in [(("fire*3", None), "needs --action-set"), (("shoot*2", "defend_the_center"), "PRESET"),
                     (("fire*0", "defend_the_center"), "PRESET"), (("fire*x", "defend_the_center"), "PRESET")]:
        with pytest.raises(ValueError, match=msg):
            CycleAgent(*bad)
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", "cycle:left*2", "--action-set", "defend_the_center", "--worlds", "real"])
    assert "turn_right" in capsys.readouterr().err  # the set's presets, named in the error
    out = evaluate.main(["--policy", "cycle:fire,turn_right", "--action-set", "defend_the_center",
                         "--scenario", "defend_the_center", "--worlds", "real", "--episodes", "2", "--max-steps", "8",
                         "--num-envs", "2"])
    assert out["real"]["episodes"] == 2 and out["real"]["mean_length"] <= 8

def test_evaluating_in_a_dream_with_real_frames_retrieved(tmp_path, capsys, monkeypatch):
    # --retrieval-bank: every K dream steps the frame is swapped for the nearest real frame of a bank.
    bank = str(REPO / "wham_gym/assets/default/prompts")
    built = []
    real = wrappers.retrieval_reinjection
    monkeypatch.setattr(evaluate, "retrieval_reinjection", lambda *a, **k: built.append((a[1:], k)) or real(*a, **k))
    out = evaluate.main(["--policy", "random", "--model", "tiny", "--worlds", "dream", "--episodes", "2",
                         "--max-steps", "4", "--num-envs", "2", "--retrieval-bank", bank, "--retrieval-frames", "24",
                         "--reinject-every", "2"])
    assert out["dream"]["episodes"] == 2 and out["dream"]["mean_length"] == 4
    assert built == [(([bank], 24, 2), {"seed": 0})]  # the same bank whatever the evaluation's seed
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", "random", "--worlds", "real", "--episodes", "1", "--retrieval-bank", bank])
    assert "has no dream" in capsys.readouterr().err


def replace_observe(wrapping):
    """The same wrapping, seeing what the env hands over (here: the dream's image tokens)."""
    from dataclasses import replace

    return replace(wrapping, observe="pixels")


def test_train_refuses_a_dream_whose_game_looks_different(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_sb3.train(["--world", "dream", "--hud", "--steps", "8", "--out", str(tmp_path / "x"), *TINY_RUN])
    assert "drop --hud" in capsys.readouterr().err


def test_confidence_interval_and_rank_correlation_on_constructed_cases():
    lo, hi = evaluate.ci95([1.0, 3.0] * 50)  # mean 2, sample std ~1.005, n 100
    assert lo == pytest.approx(2 - 1.96 * np.std([1.0, 3.0] * 50, ddof=1) / 10) and hi == pytest.approx(4 - lo)
    assert evaluate.ci95([5.0]) == [-np.inf, np.inf]
    assert evaluate.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert evaluate.rank_correlation([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    assert evaluate.rank_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert evaluate.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1])
    with pytest.raises(ValueError, match="same length"):
        evaluate.rank_correlation([1, 2], [1])


def test_collect_records_what_the_agent_does_in_the_game(tmp_path):
    """The iterative loop's data: agents.collect plays a trained agent through the recorder, and the agent sees
    and does exactly what it would in an evaluation (same wrappers, same game seeds, same actions)."""
    from agents import collect
    from wham_gym import load_model
    from wham_gym.action_sets import action_set_for
    from wham_gym.data.episodes import read_episode
    from wham_gym.games.recorder import episode_seeds

    run = tmp_path / "agent"
    train_sb3.train(["--world", "real", "--observe", "latent", "--action-set", "take_cover", "--scenario",
                     "take_cover", "--n-steps", "16", "--steps", "32", "--eval-every", "0", "--features-dim", "32",
                     "--out", str(run), *TINY_RUN])
    out = tmp_path / "recording"
    manifest = collect.main(["--policy", str(run), "--episodes", "2", "--max-steps", "12", "--seed", "5",
                             "--stochastic", "--out", str(out), "--no-progress"])
    assert manifest["total_episodes"] == 2 and manifest["policy"] == "agent:agent:sampled"
    assert manifest["scenario"] == "take_cover"

    agent, wrapping, cfg = evaluate.load_policy(str(run), device="cpu")
    venv = wrappers.make_real_venv("take_cover", 1, wrapping, max_steps=12, model=load_model("tiny"))
    take_cover, every = action_set_for("take_cover"), []
    for index in range(2):
        episode = read_episode(out / f"episode_{index:06d}.npz")
        game_seed, policy_seed = episode_seeds(5, index)
        venv.seed(game_seed)
        torch.manual_seed(policy_seed)  # the agent's sampling, as collect seeds it per episode
        obs, chosen = venv.reset(), []
        for _ in range(len(episode.wham_actions)):
            action, _ = agent.predict(obs, deterministic=False)
            chosen.append(int(action[0]))
            obs, _, done, _ = venv.step(action)
            if done[0]:
                break
        assert len(chosen) == len(episode.wham_actions)
        expected = controller.to_wham(take_cover.to_controller(np.array(chosen)))
        np.testing.assert_array_equal(episode.wham_actions, expected)
        every += chosen
    venv.close()
    assert len(set(every)) > 1  # the agent's own choices, not one constant action


def test_drawn_ends_reach_training_and_evaluation_dreams(tiny):
    """--dream-ends drawn is a dream setting: the training dreams and the evaluation dreams of a run both end
    where the world model draws its end frame."""
    import copy

    from wham_gym.rewards import EndFrameTermination

    model = copy.copy(tiny)
    model.card = {**(tiny.card or {}), "recipe": {**((tiny.card or {}).get("recipe") or {}), "end_frame": "black"}}
    settings = runs.dream_settings({"dream_ends": "drawn"})
    assert settings["ends"] == "drawn" and "ends" not in runs.dream_settings({"dream_ends": "sampled"})
    for venv in (wrappers.make_dream_venv(model, 2, SMALL, max_episode_steps=5, **settings),
                 Evaluator(model, num_envs=2, dream_kwargs=settings).venv("dream", SMALL, 2)):
        assert isinstance(_vector_env(venv).signals.termination_fn, EndFrameTermination)
        venv.close()


def test_compile_reaches_training_and_evaluation_dreams(tiny):
    """--compile is a dream setting of speed only: the training and evaluation dreams' engines compile, and a run
    without it passes nothing (its identity does not change)."""
    settings = runs.dream_settings({"compile": True})
    assert settings["compile"] is True and "compile" not in runs.dream_settings({"compile": False})
    for venv in (wrappers.make_dream_venv(tiny, 2, SMALL, max_episode_steps=5, **settings),
                 Evaluator(tiny, num_envs=2, dream_kwargs=settings).venv("dream", SMALL, 2)):
        assert _vector_env(venv).engine.compile
        venv.close()
    assert "compile" not in runs.IDENTITY


def test_risk_ends_reach_training_and_evaluation_dreams(tiny):
    """--dream-ends risk --end-risk S,C is a dream setting: training and evaluation dreams end by
    EndRiskTermination with the run's sharpness and center."""
    import copy

    from wham_gym.rewards import EndRiskTermination

    model = copy.copy(tiny)
    model.card = {**(tiny.card or {}), "recipe": {**((tiny.card or {}).get("recipe") or {}), "end_frame": "black"}}
    settings = runs.dream_settings({"dream_ends": "risk", "end_risk": [3.0, 0.2]})
    assert settings["ends"] == "risk" and settings["end_risk"] == (3.0, 0.2)
    assert "end_risk" not in runs.dream_settings({"dream_ends": "drawn"})
    for venv in (wrappers.make_dream_venv(model, 2, SMALL, max_episode_steps=5, **settings),
                 Evaluator(model, num_envs=2, dream_kwargs=settings).venv("dream", SMALL, 2)):
        term = _vector_env(venv).signals.termination_fn
        assert isinstance(term, EndRiskTermination) and (term.sharpness, term.center) == (3.0, 0.2)
        venv.close()
    # The default (--dream-ends sampled: the model's termination) follows the ends a card recommends, as the shipped
    # take_cover model's does; an explicit --dream-ends wins over the card.
    model.card = {**model.card, "ends": {"kind": "risk", "sharpness": 6.0, "center": 0.05}}
    default = runs.dream_settings({"dream_ends": "sampled"})
    for venv, expect in ((wrappers.make_dream_venv(model, 2, SMALL, max_episode_steps=5, **default), (6.0, 0.05)),
                         (wrappers.make_dream_venv(model, 2, SMALL, max_episode_steps=5, **settings), (3.0, 0.2))):
        term = _vector_env(venv).signals.termination_fn
        assert isinstance(term, EndRiskTermination) and (term.sharpness, term.center) == expect
        venv.close()


def test_an_ensemble_of_dreams_splits_the_envs_across_its_models(tmp_path, tiny):
    import copy

    from wham_gym.action_sets import action_set_for

    other = copy.deepcopy(tiny)  # same tokenizer, another GPT: as `train all --from-model` makes
    with torch.no_grad():
        for p in other.gpt.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latent = Wrapping(obs_size=None, frame_stack=1, action_set="take_cover", observe="latent")
    venv = wrappers.make_dream_venv(tiny, 3, latent, max_episode_steps=3, seed=0, ensemble=[other])
    try:
        assert venv.num_envs == 3 and wrappers.ensemble_split(3, 2) == [2, 1]
        assert [m is tiny for m in venv.get_attr("model")] == [True, True, False]
        assert [m is other for m in venv.get_attr("model", indices=[2, 0])] == [True, False]
        obs = venv.reset()
        assert obs.shape[0] == 3 and len(venv.unwrapped.reset_infos) == 3
        sent = [[], []]
        for k, part in enumerate(venv.unwrapped.parts):  # what each model is asked to do
            part.step_async = lambda a, k=k, f=part.step_async: (sent[k].append(np.array(a)), f(a))[1]
        ended = 0
        for _ in range(4):  # past the episode cap: every env ends once, the infos in the envs' order
            obs, rew, done, infos = venv.step(np.array([1, 2, 0]))
            assert obs.shape[0] == rew.shape[0] == done.shape[0] == len(infos) == 3
            ended += int(done.sum())
            for i in np.flatnonzero(done):
                assert infos[i]["terminal_observation"].shape == obs.shape[1:]
        assert ended >= 3
        take_cover = action_set_for("take_cover")
        assert all(np.array_equal(a, take_cover.to_controller(np.array([1, 2]))) for a in sent[0])
        assert all(np.array_equal(a, take_cover.to_controller(np.array([0]))) for a in sent[1]) and len(sent[1]) == 4
    finally:
        venv.close()

    redrawn = copy.deepcopy(tiny)  # another tokenizer: the agent would see two different worlds
    with torch.no_grad():
        next(redrawn.tokenizer.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="share one tokenizer"):
        wrappers.make_dream_venv(tiny, 2, latent, ensemble=[redrawn])
    with pytest.raises(ValueError, match="at least one env each"):
        wrappers.make_dream_venv(tiny, 1, latent, ensemble=[other])

    out = tmp_path / "ens"
    result = train_sb3.train(["--ensemble", "tiny", "--scenario", "take_cover", "--action-set", "take_cover",
                              "--observe", "latent", "--steps", "32", "--n-steps", "8", "--eval-every", "0",
                              "--eval-worlds", "dream", "--out", str(out), *TINY_RUN])
    assert result["timesteps"] == 32 and runs.read_json(out / "config.json")["ensemble"] == ["tiny"]
    for bad in (["--world", "real", "--ensemble", "tiny"], ["--ensemble", "tiny", "tiny", "--num-envs", "2"]):
        with pytest.raises(SystemExit):
            train_sb3.train([*TINY_RUN, *bad, "--out", str(tmp_path / "bad")])


def test_compare_held_actions_and_dream_only_arguments(tmp_path, monkeypatch):
    # The take_cover table's protocol: decisions held K steps in every row (the random baseline too), the frames
    # row given real_frames / K decisions, and the dream rows alone their prompts (the game rows refuse them).
    prompts = str(REPO / "wham_gym/assets/default/prompts")
    argv = ["--steps", "32", "--name", "held", "--model", "tiny", "--scenario", "take_cover",
            "--action-set", "take_cover", "--action-repeat", "2", "--rows", "random,ppo-real-frames,ppo-dream",
            "--real-frames", "64", "--num-envs", "2", "--max-episode-steps", "8", "--episodes", "2",
            "--dream-episodes", "1", "--eval-every", "0", "--eval-episodes", "1", "--eval-envs", "2",
            "--frame-stack", "1", "--threads", "1", "--inline", "--train-args", "--n-steps 16 --observe latent",
            "--dream-args", f"--dream-starts {prompts}", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--results-md", str(tmp_path / "RESULTS.md")]
    made = []
    monkeypatch.setattr(compare, "RandomAgent", lambda **kw: made.append(kw) or evaluate.RandomAgent(**kw))
    res = compare.main(argv)
    assert made and all(kw["action_repeat"] == 2 for kw in made)
    cfg = {row: runs.read_json(tmp_path / "runs" / "held" / row / "config.json")
           for row in ("ppo-real-frames", "ppo-dream")}
    assert cfg["ppo-real-frames"]["action_repeat"] == cfg["ppo-dream"]["action_repeat"] == 2
    assert cfg["ppo-dream"]["dream_starts"] == [prompts] and cfg["ppo-real-frames"]["dream_starts"] is None
    frames = res["rows"]["ppo-real-frames"]
    assert frames["env_steps"] == 32 and frames["real_frames"] == 64  # 64 frames = 32 decisions held 2 steps
    assert res["rows"]["ppo-dream"]["real_frames"] == 64 and res["rows"]["ppo-dream"]["env_steps"] == 32
    text = (tmp_path / "RESULTS.md").read_text()
    assert "held for 2 steps of the world" in text and "Dream rows' further arguments: `--dream-starts" in text


def test_compare_sac_arguments_reach_the_sac_rows_only_and_win():
    # The SAC row shares --train-args with the PPO rows (observation, reward scale) but needs its own optimiser
    # settings: --sac-args come after --train-args, so train_sb3 keeps the SAC row's value of a flag both set.
    args = compare.build_parser().parse_args(
        ["--steps", "64", "--eval-every", "32", "--dream-episodes", "2", "--dream-eval-episodes", "1",
         "--sac", "--temperatures", "0.9,1.3", "--train-args", "--learning-rate 5e-4 --n-steps 32",
         "--sac-args", "--learning-rate 3e-4 --gradient-steps 2"])
    parse = train_sb3.build_parser().parse_args
    sac = parse(compare.train_argv(args, "sac-dream-t1.3", "out"))
    ppo = parse(compare.train_argv(args, "ppo-dream-t1.3", "out"))
    real = parse(compare.train_argv(args, "ppo-real", "out"))
    assert (sac.algo, sac.learning_rate, sac.gradient_steps) == ("sac", 3e-4, 2)
    assert (ppo.algo, ppo.learning_rate, ppo.gradient_steps) == ("ppo", 5e-4, real.gradient_steps)
    assert real.learning_rate == 5e-4 and ppo.n_steps == sac.n_steps == 32
    assert compare.is_sac_row("sac-dream-t1.3") and not compare.is_sac_row("ppo-dream-t1.3")
    assert not compare.is_sac_row("random")


@pytest.mark.parametrize("flag", ["--dream-args", "--sac-args", "--train-args"])
def test_compare_refuses_extra_arguments_that_change_what_a_row_is(flag, capsys):
    # --dream-args "--temperature 0.8" would silently retrain every ppo-dream-t<T> row at 0.8 under its own name.
    with pytest.raises(SystemExit):
        compare.main(["--steps", "64", "--rows", "ppo-dream-t1.3", f"{flag}=--seed 1 --temperature=0.8"])
    assert "--temperature=0.8" in capsys.readouterr().err
