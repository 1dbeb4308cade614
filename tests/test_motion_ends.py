"""Risk ends with a memory of motion: the position probe, the displacement a dream's termination tracks, the
three-parameter fit, a card that ships them, and benchmarks/end_motion.py's reading of real transitions."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.env import WHAMVectorEnv
from wham_gym.model.checkpoint import save_model
from wham_gym.position import PROBE_FILE, PositionProbe, fit_position_probe
from wham_gym.rewards import (EndRiskTermination, Motion, MotionTermination, StepContext, fit_end_risk_motion,
                              fit_motion_ends)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def _with_end_frames(tiny):
    import copy

    model = copy.copy(tiny)
    model.card = {**(tiny.card or {}), "recipe": {**((tiny.card or {}).get("recipe") or {}), "end_frame": "black"}}
    return model


def _end_motion():
    """benchmarks/end_motion.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("end_motion",
                                                  Path(__file__).parents[1] / "benchmarks" / "end_motion.py")
    em = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(em)
    return em


def _ctx(prev_tokens, steps, p=None):
    n = len(prev_tokens)
    return StepContext(tokens=prev_tokens, prev_tokens=prev_tokens, frames=None, actions=torch.zeros(n, 16),
                       steps=torch.as_tensor(steps, dtype=torch.long), nll=torch.zeros(n), entropy=torch.zeros(n),
                       uniform=torch.full((n,), 0.5, dtype=torch.float64), first_token_prob=p)


def _slot0_probe(slots, vocab, unit=10.0):
    """A probe reading slot 0's codebook index times ``unit`` (the other slots count for nothing)."""
    w = torch.zeros(slots, vocab)
    w[0] = torch.arange(vocab) * unit
    return PositionProbe(w, 0.0)


def test_position_probe_recovers_a_linear_reading_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    slots, vocab, m = 6, 16, 6000
    table = rng.normal(0, 20, (slots, vocab))
    tokens = rng.integers(0, vocab, (m, slots))
    y = table[np.arange(slots), tokens].sum(1) + 300 + rng.normal(0, 1.0, m)
    probe = fit_position_probe(tokens[:5000], y[:5000], vocab, steps=800)
    got = probe(torch.from_numpy(tokens[5000:])).numpy()
    rmse = float(np.sqrt(np.mean((got - y[5000:]) ** 2)))
    assert rmse < 3.0, rmse  # the noise is 1.0; y itself spreads ~50
    assert y.std() > 40
    probe.save(tmp_path / PROBE_FILE)
    back = PositionProbe.load(tmp_path / PROBE_FILE)
    t = torch.from_numpy(tokens)
    assert back.variable == "position_y" and torch.equal(back(t), probe(t))
    with pytest.raises(ValueError, match=r"expected \(N, 6\) image tokens"):
        probe(torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 16\)"):
        fit_position_probe(tokens + 1, y, vocab)
    with pytest.raises(ValueError, match="values"):
        fit_position_probe(tokens, y[:-1], vocab)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="expected a position probe"):
        PositionProbe.load(tmp_path / "other.safetensors")


def test_motion_tracks_the_displacement_over_its_lag_and_restarts_with_each_episode():
    probe = _slot0_probe(4, 8)
    motion = Motion(probe, lag=3, scale=50.0, weight=-2.0)
    # slot 0 walks 0, 1, 2, ... (x10 map units); slot 1 stands at 5 and starts a new episode at step 4
    seen = []
    for k in range(7):
        tokens = torch.tensor([[k, 0, 0, 0], [5 if k < 4 else k - 4 + 1, 0, 0, 0]])
        steps = [k + 1, k + 1 if k < 4 else k - 3]
        seen.append(motion.track(_ctx(tokens, steps)).tolist())
    walked = [abs(k - max(k - 3, 0)) * 10.0 for k in range(7)]
    assert [s[0] for s in seen] == walked  # 0, 10, 20, 30, 30, 30, 30
    assert [s[1] for s in seen] == [0, 0, 0, 0, 0, 10, 20]  # still, then a fresh history from its first frame
    with pytest.raises(ValueError, match="lag"):
        Motion(probe, lag=0)
    with pytest.raises(ValueError, match="scale"):
        Motion(probe, scale=0)


def test_motion_with_a_speed_limit_skips_jumps_and_reads_recordings_as_it_reads_dreams(tiny, tmp_path):
    probe = _slot0_probe(4, 64)
    readings = [0, 1, 2, 20, 21, 22, 3, 4, 5]  # slot 0's index (x10 map units): a jump of 180 there and back
    limited, plain = Motion(probe, lag=3, max_step=50.0), Motion(probe, lag=3)
    seen = {"limited": [], "plain": []}
    for k, r in enumerate(readings):
        ctx = _ctx(torch.tensor([[r, 0, 0, 0]]), [k + 1])
        seen["limited"].append(limited.track(ctx).item()), seen["plain"].append(plain.track(ctx).item())
    # the odometer: 0, 10, 20, (jump skipped) 20, 30, 40, (jump back skipped) 40, 50, 60
    assert seen["limited"] == [0, 10, 20, 20, 20, 20, 20, 20, 20]
    assert seen["plain"] == [0, 10, 20, 200, 200, 200, 170, 170, 170]  # the jump read as 170-200 units walked
    y = np.array(readings, np.float64) * 10
    assert np.array_equal(limited.displacements(y), seen["limited"])  # the fits read recordings the same way
    assert np.array_equal(plain.displacements(y), seen["plain"])
    # a new episode starts a fresh track from its first reading, the jump to it not counted
    assert limited.track(_ctx(torch.tensor([[40, 0, 0, 0]]), [1])).item() == 0
    assert limited.track(_ctx(torch.tensor([[41, 0, 0, 0]]), [2])).item() == 10
    with pytest.raises(ValueError, match="max_step"):
        Motion(probe, max_step=0)
    with pytest.raises(ValueError, match=r"one episode's readings \(T,\)"):
        limited.displacements(np.zeros((2, 3)))

    # the card carries the limit to the env's termination, and a card without one keeps the plain track
    from wham_gym.rewards import card_termination

    model = _with_end_frames(tiny)
    save_model(model, tmp_path / "m")
    probe.save(tmp_path / "m" / PROBE_FILE)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    ends = {"kind": "motion", "bias": -3.0, "motion": Motion(probe, 15, 50.0, -1.5, 120.0).card(PROBE_FILE)}
    card["ends_options"] = {"odometer": ends, "plain": {**ends, "motion": Motion(probe, 15, 50.0, -1.5).card(
        PROBE_FILE)}}
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "m")
    assert card_termination(loaded, "odometer").motion.max_step == 120.0
    assert card_termination(loaded, "plain").motion.max_step is None


def test_end_risk_with_motion_makes_a_moving_player_safer(tiny):
    model = _with_end_frames(tiny)
    slots = model.config.tokens_per_image
    motion = Motion(_slot0_probe(slots, 64), lag=2, scale=50.0, weight=-1.5)
    term = EndRiskTermination(model, 0.7, 0.3, motion)
    p = torch.full((2,), 0.05, dtype=torch.float64)
    with pytest.raises(ValueError, match="motion term: pass moved"):
        term.probability(p)
    q = term.probability(p, torch.tensor([0.0, 200.0], dtype=torch.float64))
    base = EndRiskTermination(model, 0.7, 0.3).probability(p)
    assert math.isclose(float(q[0]), float(base[0]))  # not moved: the p-only risk
    expect = 1 / (1 + math.exp(-(0.7 * (math.log(0.05 / 0.95) - math.log(0.3 / 0.7)) - 1.5 * math.log1p(4.0))))
    assert math.isclose(float(q[1]), expect, rel_tol=1e-9)
    # through __call__: slot 0 walks 20 map units a step, slot 1 stands; after the lag the walker is safer
    for k in range(3):
        tokens = torch.zeros(2, slots, dtype=torch.long)
        tokens[0, 0] = 2 * k
        term(_ctx(tokens, [k + 1, k + 1], p))
    h = motion._history
    assert h[:, -1].tolist() == [40.0, 0.0] and (h[:, -1] - h[:, 0]).tolist() == [40.0, 0.0]  # over the lag of 2
    assert motion.track(_ctx(tokens, [4, 4])).tolist() == [20.0, 0.0]  # the walker stopped: 40 - 20


def test_fit_end_risk_motion_recovers_the_three_numbers_the_ends_were_drawn_with():
    rng = np.random.default_rng(1)
    m = 300_000
    p = 1 / (1 + np.exp(-rng.normal(-4.0, 1.5, m)))
    moved = rng.uniform(0, 400, m)
    a, b, w = 0.5, -0.4, -1.5
    q = 1 / (1 + np.exp(-(a * np.log(p / (1 - p)) + b + w * np.log1p(moved / 50))))
    ended = rng.random(m) < q
    s, c, weight = fit_end_risk_motion(p, ended, moved, 50.0)
    assert s == pytest.approx(a, rel=0.08) and weight == pytest.approx(w, rel=0.08)
    assert c == pytest.approx(1 / (1 + math.exp(b / a)), abs=0.05)
    with pytest.raises(ValueError, match="moved"):
        fit_end_risk_motion(p, ended, -moved, 50.0)
    with pytest.raises(ValueError, match="moved"):
        fit_end_risk_motion(p, ended, moved[:-1], 50.0)


def test_motion_termination_ignores_the_gpts_end_probability_and_its_fit_recovers_its_two_numbers(tiny):
    model = _with_end_frames(tiny)
    motion = Motion(_slot0_probe(model.config.tokens_per_image, 64), lag=2, scale=50.0, weight=-1.5)
    term = MotionTermination(model, -3.0, motion)
    assert term.ban_first_token and term.first_token == EndRiskTermination(model).first_token  # the env bans it
    moved = torch.tensor([0.0, 200.0], dtype=torch.float64)
    low, high = torch.full((2,), 1e-4, dtype=torch.float64), torch.full((2,), 0.9, dtype=torch.float64)
    q = term.probability(low, moved)
    assert torch.equal(q, term.probability(high, moved))  # the dream's fireballs do not count
    assert q.tolist() == pytest.approx([1 / (1 + math.exp(3.0)), 1 / (1 + math.exp(3.0 + 1.5 * math.log1p(4.0)))])
    with pytest.raises(ValueError, match="pass moved"):
        term.probability(low)
    with pytest.raises(ValueError, match="Motion term"):
        MotionTermination(model, -3.0, None)
    with pytest.raises(ValueError, match="bias"):
        MotionTermination(model, float("nan"), motion)

    rng = np.random.default_rng(2)
    m = 300_000
    moved = rng.uniform(0, 400, m)
    ended = rng.random(m) < 1 / (1 + np.exp(-(-3.0 - 1.5 * np.log1p(moved / 50))))
    bias, weight = fit_motion_ends(ended, moved, 50.0)
    assert bias == pytest.approx(-3.0, abs=0.1) and weight == pytest.approx(-1.5, rel=0.08)
    with pytest.raises(ValueError, match="moved"):
        fit_motion_ends(ended, moved[:-1])


def test_a_card_with_motion_only_ends_gives_the_env_a_motion_termination(tiny, tmp_path):
    model = _with_end_frames(tiny)
    save_model(model, tmp_path / "m")
    _slot0_probe(model.config.tokens_per_image, 64).save(tmp_path / "m" / PROBE_FILE)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["ends"] = {"kind": "motion", "bias": -3.1, "temperature": 0.9,
                    "motion": {"probe": PROBE_FILE, "lag": 15, "scale": 50.0, "weight": -1.5}}
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    env = WHAMVectorEnv(2, load_model(tmp_path / "m"), obs_mode="tokens")
    term = env.termination_fn
    assert isinstance(term, MotionTermination) and (term.bias, term.motion.lag, term.motion.weight) == (-3.1, 15, -1.5)
    env.reset(seed=0)
    env.step(np.zeros((2, 16), np.float32))
    assert term.motion._history.shape == (2, 16)
    env.close()
    del card["ends"]["motion"]
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="needs its 'motion' term"):
        WHAMVectorEnv(1, load_model(tmp_path / "m"), obs_mode="tokens")


def test_a_card_with_motion_ends_gives_the_env_a_termination_that_reads_its_probe(tiny, tmp_path):
    model = _with_end_frames(tiny)
    slots = model.config.tokens_per_image
    save_model(model, tmp_path / "m")
    probe = _slot0_probe(slots, 64, unit=3.0)
    probe.save(tmp_path / "m" / PROBE_FILE)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["ends"] = {"kind": "risk", "sharpness": 0.7, "center": 0.4, "temperature": 0.9,
                    "motion": {"probe": PROBE_FILE, "lag": 5, "scale": 50.0, "weight": -1.2}}
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "m")
    env = WHAMVectorEnv(3, loaded, obs_mode="tokens", temperature=0.9)
    term = env.termination_fn
    assert isinstance(term, EndRiskTermination) and term.motion is not None
    assert (term.motion.lag, term.motion.weight) == (5, -1.2) and torch.equal(term.motion.probe.weight, probe.weight)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros((3, 16), np.float32))
    assert term.motion._history.shape == (3, 6)
    env.close()
    (tmp_path / "m" / PROBE_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        WHAMVectorEnv(1, load_model(tmp_path / "m"), obs_mode="tokens")


def test_a_card_offers_named_ends_that_the_env_and_the_agents_select_by_name(tiny, tmp_path):
    from agents.evaluate import Evaluator
    from agents.runs import dream_settings
    from agents.train_sb3 import build_parser
    from agents.wrappers import Wrapping, make_dream_venv

    model = _with_end_frames(tiny)
    save_model(model, tmp_path / "m")
    _slot0_probe(model.config.tokens_per_image, 64).save(tmp_path / "m" / PROBE_FILE)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["ends"] = {"kind": "risk", "sharpness": 0.7, "center": 0.4, "temperature": 0.9,
                    "motion": {"probe": PROBE_FILE, "lag": 5, "scale": 50.0, "weight": -1.2}}
    card["ends_options"] = {"motion-only": {"kind": "motion", "bias": -2.5, "temperature": 0.9,
                                            "motion": {"probe": PROBE_FILE, "lag": 7, "scale": 50.0, "weight": -0.8}}}
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "m")
    assert isinstance(WHAMVectorEnv(1, loaded, obs_mode="tokens").termination_fn, EndRiskTermination)  # the default
    term = WHAMVectorEnv(1, loaded, obs_mode="tokens", ends="motion-only").termination_fn
    assert isinstance(term, MotionTermination) and (term.bias, term.motion.lag, term.motion.weight) == (-2.5, 7, -0.8)
    with pytest.raises(ValueError, match="offers no such ends.*'motion-only'"):
        WHAMVectorEnv(1, loaded, obs_mode="tokens", ends="motion")
    with pytest.raises(ValueError, match="pass one of them"):
        WHAMVectorEnv(1, loaded, obs_mode="tokens", ends="motion-only", termination_fn=term)
    with pytest.warns(UserWarning, match="motion-only --option motion-only"):  # the refit keeps kind and name
        WHAMVectorEnv(1, loaded, obs_mode="tokens", ends="motion-only", temperature=1.15)
    # end_motion.py --write-card ... --option NAME adds an alternative and keeps the default
    em = _end_motion()
    added = em.with_ends(card, {"kind": "drawn"}, "drawn")
    assert added["ends"] == card["ends"] and set(added["ends_options"]) == {"motion-only", "drawn"}
    assert em.with_ends(card, {"kind": "drawn"})["ends"] == {"kind": "drawn"}

    # the agents reach it as --dream-ends card:NAME, in training and evaluation dreams alike
    settings = dream_settings({"dream_ends": "card:motion-only"})
    for venv in (make_dream_venv(loaded, 2, Wrapping(), **settings),
                 Evaluator(loaded, num_envs=2, dream_kwargs=settings).venv("dream", Wrapping(), 2)):
        assert isinstance(venv.unwrapped.venv.termination_fn, MotionTermination)
        venv.close()
    assert build_parser().parse_args(["--dream-ends", "card:motion-only"]).dream_ends == "card:motion-only"
    for bad in ("card:", "motion-only"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--dream-ends", bad])


def test_the_shipped_take_cover_card_offers_its_motion_only_ends():
    model = load_model("take_cover")
    term = WHAMVectorEnv(1, model, obs_mode="tokens", ends="motion-only").termination_fn
    option = model.card["ends_options"]["motion-only"]
    assert isinstance(term, MotionTermination) and term.bias == option["bias"] and term.motion.lag == 15
    assert term.motion.max_step is None
    assert not isinstance(WHAMVectorEnv(1, model, obs_mode="tokens").termination_fn, MotionTermination)
    # the odometer's ends, the README recipe's, read by the same shipped probe
    term = WHAMVectorEnv(1, model, obs_mode="tokens", ends="motion-odometer").termination_fn
    option = model.card["ends_options"]["motion-odometer"]
    assert isinstance(term, MotionTermination) and term.bias == option["bias"] and term.motion.max_step == 120.0
    assert option["motion"]["probe"] == PROBE_FILE


def test_end_motion_reads_each_transitions_displacement_in_real_end_probs_order(tiny, tmp_path):
    from wham_gym import controller
    from wham_gym.data.episodes import Episode, write_episode

    em = _end_motion()
    model = _with_end_frames(tiny)
    rng = np.random.default_rng(3)
    w = model.config.seq_len - 1
    T = w + 6
    images = rng.integers(40, 200, (T, 3, 180, 300), dtype=np.uint8)
    ctrl = np.zeros((T, 16), np.float32)
    term = np.zeros(T, bool)
    term[-1] = True
    ys = np.linspace(100, 600, T).astype(np.float32)
    path = tmp_path / "episode_000000.npz"
    write_episode(path, Episode(images=images, wham_actions=controller.to_wham(ctrl).astype(np.float32),
                                rewards=np.ones(T, np.float32), terminated=term, truncated=np.zeros(T, bool),
                                scenario="take_cover", seed=0, game_variables=np.stack([np.zeros(T), ys], 1),
                                game_variable_names=("position_x", "position_y")))
    eps = em.frames_and_positions(model, [str(path)], tmp_path / "cache")
    assert len(eps) == 1 and len(eps[0][0]) == T and np.array_equal(eps[0][1], ys)
    p, ended = em.real_end_probs(model, [str(path)], tmp_path / "cache", temperature=0.9)
    probe = _slot0_probe(model.config.tokens_per_image, int(model.tokenizer.vocab_size))
    moved = em.transition_moved(model, Motion(probe, lag=3), eps)
    est = probe(torch.from_numpy(eps[0][0].astype(np.int64))).double().numpy()
    assert moved.shape == p.shape
    t = np.arange(w - 1, T)
    assert np.allclose(moved, np.abs(est[t] - est[np.maximum(t - 3, 0)]))
    limited = em.transition_moved(model, Motion(probe, lag=3, max_step=1.0), eps)  # every step a jump: no motion
    assert limited.shape == p.shape and not limited.any()
    shares = em.jump_shares([np.array([0.0, 100.0, 100.0, 300.0]), np.array([0.0, 130.0])])
    assert shares == {"80": 3 / 4, "120": 2 / 4, "150": 1 / 4, "200": 0.0}
    bare = tmp_path / "bare.npz"
    write_episode(bare, Episode(images=images, wham_actions=controller.to_wham(ctrl).astype(np.float32)))
    with pytest.raises(ValueError, match="position_y"):
        em.frames_and_positions(model, [str(bare)], tmp_path / "cache")


def test_hit_lag_scan_finds_the_lag_over_which_standing_gets_a_player_hit(tmp_path):
    """benchmarks/end_motion.py's lag scan: hits that come exactly when the player stood still over the last 3 steps
    are ranked perfectly at lag 3 and worse at lag 1."""
    from wham_gym.data.episodes import Episode, write_episode

    em = _end_motion()
    rng = np.random.default_rng(5)
    T = 400
    step = rng.choice([0.0, 35.0], T, p=[0.6, 0.4])  # still or a strafing step
    y = np.cumsum(step)
    stood3 = np.r_[np.zeros(3, bool), np.abs(y[3:] - y[:-3]) == 0]
    damage = np.cumsum(np.r_[0.0, stood3[:-1].astype(float)])  # hit on the step after standing 3 steps
    gv = np.stack([y, damage], 1).astype(np.float32)
    path = tmp_path / "episode_000000.npz"
    write_episode(path, Episode(images=np.zeros((T, 3, 180, 300), np.uint8),
                                wham_actions=np.zeros((T, 16), np.float32), game_variables=gv,
                                game_variable_names=("position_y", "damage_taken")))
    scan = em.hit_lag_scan([str(path)], [1, 3])
    assert scan["3"] == pytest.approx(1.0) and scan["1"] < 0.9, scan


def test_ends_fitted_at_another_temperature_warn_with_the_right_refit():
    import warnings

    from wham_gym.env import _check_ends_temperature

    motion = {"probe": "position.safetensors", "lag": 15, "scale": 50.0, "weight": -1.5}
    cases = [({"kind": "motion", "bias": -3.1, "motion": motion, "temperature": 0.9}, "--write-card motion-only"),
             ({"sharpness": 0.5, "center": 0.7, "motion": motion, "temperature": 0.9}, "end_motion.py"),
             ({"sharpness": 3.0, "center": 0.2, "temperature": 0.9}, "end_risk.py")]
    for ends, fix in cases:
        with pytest.warns(UserWarning, match="dreams at 1.15") as caught:
            _check_ends_temperature(ends, 1.15)
        assert fix in str(caught[0].message) and "--temperature 1.15" in str(caught[0].message)
        assert "hotter: more often" in str(caught[0].message)
    with pytest.warns(UserWarning, match="colder: less often"):  # the direction follows the temperatures
        _check_ends_temperature(cases[0][0], 0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_ends_temperature(cases[0][0], 0.9)  # fitted at this temperature: silent


def test_ends_in_expectation_never_end_a_dream_and_charge_each_step_its_end_probability(tiny):
    from wham_gym.rewards import ExpectedEnds

    model = _with_end_frames(tiny)
    probe = _slot0_probe(model.config.tokens_per_image, int(model.tokenizer.vocab_size))
    term = MotionTermination(model, -1.0, Motion(probe, lag=2, scale=50.0, weight=-0.5))

    def ones(ctx):
        return torch.ones(ctx.num_envs)

    ones.needs_frames = False
    env = WHAMVectorEnv(3, model, obs_mode="tokens", termination_fn=term, reward_fn=ones, expected_ends=4.0)
    assert isinstance(env.termination_fn, ExpectedEnds)
    mine = Motion(probe, lag=2)  # the same track, read here off the observations (the frames acted at)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for k in range(6):
        moved = mine.track(_ctx(torch.as_tensor(np.asarray(obs)), [k + 1] * 3))
        q = torch.sigmoid(-1.0 - 0.5 * torch.log1p(moved / 50.0))
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(0, 1, (3, 16)).astype(np.float32))
        assert not np.asarray(terminated).any() and not np.asarray(truncated).any()
        np.testing.assert_allclose(reward, (1 - 4.0 * q).numpy(), rtol=1e-5)
    assert env.engine.watched == (term.first_token, True)  # the end token stays banned: no death frame drawn
    env.close()
    with pytest.raises(ValueError, match="risk or motion termination"):
        WHAMVectorEnv(1, model, obs_mode="tokens", reward_fn=ones, expected_ends=4.0)  # tiny's own: no such ends
    with pytest.raises(ValueError, match="horizon"):
        ExpectedEnds(term, ones, 0.0)
