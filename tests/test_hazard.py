"""A termination hazard's calibration to the dream: the expected-length formula, the fit, and the whole chain
from a recording's manifest to the offset a reloaded model samples with."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.env import WHAMVectorEnv
from wham_gym.model.checkpoint import save_model
from wham_gym.model.reward_model import RewardModel, RewardModelConfig
from wham_gym.rewards import TokenRewardModel
from wham_gym.train.hazard import calibrate_hazard, expected_length, fit_offset, write_hazard_offset


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    pass


def logit(p):
    return math.log(p / (1 - p))


def test_expected_length_is_exact_for_known_hazards():
    # A constant hazard h: a geometric length, mean 1/h, whatever the horizon.
    for h, horizon in ((0.1, 3), (0.02, 40)):
        assert expected_length(np.full((horizon, 2), logit(h))) == pytest.approx(1 / h)
    # h = 0.5 at the first step, then 0.2 (the tail extends the last step's hazard): E[L] = 0.5 * 1 + 0.5 * (1 + 5).
    logits = np.array([[logit(0.5)], [logit(0.2)]])
    assert expected_length(logits, tail=1) == pytest.approx(3.5)
    # An offset shifts every step's logit.
    assert expected_length(logits, offset=-1.0, tail=1) == pytest.approx(expected_length(logits - 1.0, tail=1))
    assert expected_length(logits, offset=-1.0, tail=1) > 3.5  # a lower hazard: longer episodes
    assert expected_length(np.full((5, 1), 0.0), offset=logit(0.25)) == pytest.approx(4.0)


def test_fit_offset_inverts_the_expected_length():
    assert fit_offset(np.zeros((30, 3)), 10.0) == pytest.approx(logit(0.1), abs=1e-6)
    rising = np.linspace(-5, -2, 200)[:, None] + np.array([[0.0, 0.5]])  # two dreams, hazards rising in time
    b = fit_offset(rising, 40.0)
    assert expected_length(rising, b) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="no offset"):
        fit_offset(np.zeros((5, 1)), 0.5)  # shorter than one step


def test_calibrating_a_model_sets_the_offset_it_samples_with(tiny, tmp_path):
    c = tiny.config
    net = RewardModel(RewardModelConfig(c.image_vocab_size, c.tokens_per_image, termination="hazard"))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.termination.bias.fill_(logit(0.05))  # ends every 20 steps on average, on real frames and dreamt alike
    tiny_h = load_model("tiny")
    tiny_h.reward_model = net.eval()
    model_dir = save_model(tiny_h, tmp_path / "m")
    data = tmp_path / "rec"
    data.mkdir()  # a recording's manifest: its policy and episode lengths (mean 12.5 steps)
    (data / "manifest.json").write_text(json.dumps({"policy": "jitter", "episodes": [{"frames": 10}, {"frames": 15}]}))

    report = calibrate_hazard(load_model(model_dir), data, num_envs=2, steps=4, temperature=1.2, progress=False)
    assert report["policy"] == "jitter" and report["recorded_mean_length"] == 12.5 and report["temperature"] == 1.2
    assert report["dream_mean_length_before"] == pytest.approx(20.0)
    assert report["offset"] == pytest.approx(logit(1 / 12.5) - logit(0.05), abs=1e-6)
    write_hazard_offset(model_dir, report)

    loaded = load_model(model_dir)
    assert loaded.reward_model.config.hazard_offset == pytest.approx(report["offset"])
    assert loaded.card["hazard_calibration"]["recorded_mean_length"] == 12.5
    assert loaded.reward_model.config.hazard_temperature == 1.2
    # The offset holds at the temperature it was fitted for: an env dreaming at another one is told so.
    with pytest.warns(UserWarning, match="calibrated for dreams at temperature 1.2, this env dreams at 0.9"):
        WHAMVectorEnv(1, loaded, temperature=0.9).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WHAMVectorEnv(1, loaded, temperature=1.2).close()
    learned = TokenRewardModel(loaded.reward_model)
    ctx = type("Ctx", (), {})()  # just what predict reads
    ctx.prev_tokens = ctx.tokens = torch.zeros(3, c.tokens_per_image, dtype=torch.long)
    ctx.actions = torch.zeros(3, 16)
    assert torch.allclose(learned.predict(ctx)[1], torch.full((3,), 1 / 12.5), atol=1e-5)

    with pytest.raises(ValueError, match="no hazard reward model"):
        calibrate_hazard(tiny, data, num_envs=2, steps=2, progress=False)
    (data / "manifest.json").write_text(json.dumps({"policy": "explore", "episodes": [{"frames": 10}]}))
    with pytest.raises(ValueError, match="policy 'explore' looks at the game"):
        calibrate_hazard(loaded, data, num_envs=2, steps=2, progress=False)
    (data / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest.json"):
        calibrate_hazard(loaded, data, num_envs=2, steps=2, progress=False)


def test_drawn_end_frames_end_the_step_where_the_world_model_drew_one(tiny):
    """EndFrameTermination: a step ends where at least `share` of the new frame's tokens are the end frame's (the
    encoding of a black frame), and a model that never learned end frames is refused with the reason."""
    import copy

    from wham_gym.rewards import EndFrameTermination, StepContext

    with pytest.raises(ValueError, match="never learned to draw an end frame"):
        EndFrameTermination(tiny)
    model = copy.copy(tiny)
    model.card = {**(tiny.card or {}), "recipe": {**((tiny.card or {}).get("recipe") or {}), "end_frame": "black"}}
    ends = EndFrameTermination(model)
    c = model.config
    black = model.encode_frames(np.zeros((1, c.frame_height, c.frame_width, 3), np.uint8)).reshape(-1)
    assert torch.equal(ends.end_tokens, black)
    scene = model.encode_frames(np.full((1, c.frame_height, c.frame_width, 3), 200, np.uint8)).reshape(-1)
    assert not torch.equal(scene, black)
    n = len(black)
    half = scene.clone()
    half[: (n + 1) // 2] = black[: (n + 1) // 2]  # at least half the end frame
    most = black.clone()
    most[: n // 4] = scene[: n // 4]  # three quarters
    tokens = torch.stack([black, half, most, scene])
    ctx = StepContext(tokens=tokens, prev_tokens=torch.stack([scene] * 4), frames=None,
                      actions=torch.zeros(4, 16), steps=torch.ones(4, dtype=torch.long), nll=torch.zeros(4),
                      entropy=torch.zeros(4))
    ended = ends(ctx)
    assert ended.dtype == torch.bool and ended.tolist() == [True, True, True, False]
    assert EndFrameTermination(model, share=1.0)(ctx).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="share"):
        EndFrameTermination(model, share=0)


def _with_end_frames(tiny):
    import copy

    model = copy.copy(tiny)
    model.card = {**(tiny.card or {}), "recipe": {**((tiny.card or {}).get("recipe") or {}), "end_frame": "black"}}
    return model


def test_end_risk_sharpens_the_world_models_end_probability(tiny):
    """EndRiskTermination: q = sigmoid(sharpness (logit p - logit center)), q = p at (1, 0.5), the step's uniform
    decides; it watches the end frame's first token, refuses models without end frames and a context without p."""
    from wham_gym.rewards import EndFrameTermination, EndRiskTermination, StepContext

    with pytest.raises(ValueError, match="never learned to draw an end frame"):
        EndRiskTermination(tiny)
    model = _with_end_frames(tiny)
    term = EndRiskTermination(model)
    assert term.first_token == int(EndFrameTermination(model).end_tokens[0]) and term.ban_first_token
    p = torch.tensor([1e-4, 0.01, 0.2, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(term.probability(p), p)
    sharp = EndRiskTermination(model, sharpness=3.0, center=0.2)
    q = sharp.probability(p)
    assert math.isclose(float(q[2]), 0.5)
    assert torch.all(q[1:] > q[:-1])  # the GPT's ranking of danger is kept
    assert q[0] < p[0] and q[1] < p[1] and q[3] > p[3] and q[4] > p[4]  # below the center less, above it more
    expect = 1 / (1 + ((1 - p) / p * 0.2 / 0.8) ** 3)
    assert torch.allclose(q, expect)

    n = len(p)
    tokens = torch.zeros(n, model.config.tokens_per_image, dtype=torch.long)
    ctx = StepContext(tokens=tokens, prev_tokens=tokens, frames=None, actions=torch.zeros(n, 16),
                      steps=torch.ones(n, dtype=torch.long), nll=torch.zeros(n), entropy=torch.zeros(n),
                      uniform=torch.full((n,), 0.45, dtype=torch.float64), first_token_prob=p)
    assert sharp(ctx).tolist() == (q > 0.45).tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="first-token probability"):
        sharp(StepContext(tokens=tokens, prev_tokens=tokens, frames=None, actions=torch.zeros(n, 16),
                          steps=torch.ones(n, dtype=torch.long), nll=torch.zeros(n), entropy=torch.zeros(n)))
    for bad in (dict(sharpness=0), dict(center=1.0), dict(center=0)):
        with pytest.raises(ValueError):
            EndRiskTermination(model, **bad)


def test_env_has_its_engine_watch_what_the_termination_reads(tiny):
    """A WHAMVectorEnv ended by EndRiskTermination: its engine watches and bans the end frame's first token, the
    termination sees that probability each step, and replacing the termination stops the watch."""
    from wham_gym.rewards import EndRiskTermination, NeverTerminate

    model = _with_end_frames(tiny)
    seen = []

    class Spy(EndRiskTermination):
        def __call__(self, ctx):
            seen.append(ctx.first_token_prob.clone())
            return super().__call__(ctx)

    term = Spy(model, sharpness=2.0, center=0.3)
    env = WHAMVectorEnv(3, model, obs_mode="tokens", termination_fn=term, max_episode_steps=20)
    env.reset(seed=0)
    for _ in range(4):
        obs, _, _, _, _ = env.step(np.zeros((3, 16), np.float32))
        assert not (torch.as_tensor(obs)[:, 0] == term.first_token).any()  # banned: never drawn first
    assert env.engine.watched == (term.first_token, True)
    assert len(seen) == 4 and all(s.shape == (3,) and bool(((s >= 0) & (s <= 1)).all()) for s in seen)
    env.termination_fn = NeverTerminate()
    env.step(np.zeros((3, 16), np.float32))
    assert env.engine.watched == (None, False)
    env.close()


def test_a_card_that_recommends_ends_sets_the_envs_default_termination(tiny):
    """card["ends"] (the shipped take_cover model's): a WHAMVectorEnv built without termination_fn ends its dreams
    by that termination; an explicit termination_fn wins; a bad card is refused with the fix; a temperature other
    than the fitted one warns."""
    from wham_gym.rewards import EndFrameTermination, EndRiskTermination, NeverTerminate, card_termination

    model = _with_end_frames(tiny)
    assert card_termination(model) is None
    model.card = {**model.card, "ends": {"kind": "risk", "sharpness": 6.0, "center": 0.05, "temperature": 0.9}}
    term = card_termination(model)
    assert isinstance(term, EndRiskTermination) and (term.sharpness, term.center) == (6.0, 0.05)
    env = WHAMVectorEnv(2, model, obs_mode="tokens", temperature=0.9)
    assert isinstance(env.termination_fn, EndRiskTermination) and env.termination_fn.sharpness == 6.0
    env.reset(seed=0)
    env.step(np.zeros((2, 16), np.float32))
    assert env.engine.watched == (term.first_token, True)
    env.close()
    explicit = NeverTerminate()
    env = WHAMVectorEnv(2, model, obs_mode="tokens", temperature=0.9, termination_fn=explicit)
    assert env.termination_fn is explicit
    env.close()
    with pytest.warns(UserWarning, match="fitted .* temperature 0.9"):
        WHAMVectorEnv(2, model, obs_mode="tokens", temperature=1.3).close()
    model.card = {**model.card, "ends": {"kind": "drawn"}}
    assert isinstance(card_termination(model), EndFrameTermination)
    model.card = {**model.card, "ends": {"kind": "hazard"}}
    with pytest.raises(ValueError, match="expected .*risk.* or .*drawn"):
        WHAMVectorEnv(2, model, obs_mode="tokens")


def test_end_risk_benchmark_reads_real_transitions_as_a_dream_does(tiny, tmp_path):
    """benchmarks/end_risk.py --data: the GPT's end probability on a recording's transitions, teacher-forced, is the
    probability a dream prompted with the same frames and actions reports for that step (first_token_prob), and
    the step that ended the episode is the one marked."""
    import importlib.util
    from pathlib import Path

    from wham_gym import controller
    from wham_gym.data.episodes import Episode, write_episode
    from wham_gym.engine import DreamEngine
    from wham_gym.rewards import EndRiskTermination

    spec = importlib.util.spec_from_file_location("end_risk", Path(__file__).parents[1] / "benchmarks" / "end_risk.py")
    end_risk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(end_risk)
    model = _with_end_frames(tiny)
    rng = np.random.default_rng(3)
    w = model.config.seq_len - 1  # the context frames a transition is read with
    T = w + 3
    images = rng.integers(40, 200, (T, 3, 180, 300), dtype=np.uint8)
    ctrl = np.zeros((T, 16), np.float32)
    ctrl[:, :12] = rng.integers(0, 2, (T, 12))
    ctrl[:, 12:] = rng.integers(-1, 2, (T, 4))  # values the WHAM bins hold exactly
    term = np.zeros(T, bool)
    term[-1] = True
    path = tmp_path / "episode_000000.npz"
    ys = np.full(T, 384.0, np.float32)  # mid-room (take_cover's runs 16-752), the last frame at the far wall
    ys[-1] = 752.0
    write_episode(path, Episode(images=images, wham_actions=controller.to_wham(ctrl).astype(np.float32),
                                rewards=np.full(T, 3.5, np.float32), terminated=term,
                                truncated=np.zeros(T, bool), scenario="take_cover", seed=0,
                                game_variables=np.stack([np.zeros(T, np.float32), ys], 1),
                                game_variable_names=("position_x", "position_y")))
    p, ended = end_risk.real_end_probs(model, [str(path)], tmp_path / "cache", temperature=0.9)
    assert p.shape == ended.shape == (T - w + 1,) and ended.tolist() == [False] * (T - w) + [True]
    first = EndRiskTermination(model).first_token
    tokens = model.encode_frames(images.transpose(0, 2, 3, 1)).long()
    for t in (w - 1, T - 1):
        eng = DreamEngine(model, 1, temperature=0.9)
        eng.reset(tokens=tokens[t - w + 1:t + 1][None], actions=torch.from_numpy(ctrl[t - w + 1:t])[None])
        eng.watch_first_token(first)
        got = eng.step(torch.from_numpy(ctrl[t:t + 1]), decode=False).first_token_prob
        assert math.isclose(float(got[0]), float(p[t - w + 1]), rel_tol=1e-4), (t, float(got[0]), p[t - w + 1])
    # --all-episodes --risk: every episode of a recording the model never saw, and the risk ends' q on it
    import shutil

    (tmp_path / "rec").mkdir()
    shutil.copy(path, tmp_path / "rec" / path.name)
    res = end_risk.score_real(model, [str(tmp_path / "rec")], 0.9, [0.2], all_episodes=True, risk=(3.0, 0.2))
    q = EndRiskTermination(model, 3.0, 0.2).probability(torch.from_numpy(p)).numpy()
    assert res["episodes"] == 1 and res["transitions"] == len(p)
    assert math.isclose(res["risk"]["mean_q"], float(q.mean()), rel_tol=1e-5)
    assert math.isclose(res["risk"]["game_ends_per_step"], 1 / len(p))
    assert res["risk"]["game_length"] == pytest.approx(len(p))
    # --by-wall: the player's position at each scored transition, and q / the game's ends split by it
    y = end_risk.transition_positions(model, [str(path)])
    assert np.array_equal(y, ys[w - 1:])  # the frame each scored action was taken at
    split = end_risk.by_wall(q, ended, y, 16.0, 752.0, margin=50.0)
    assert (split["wall"]["steps"], split["middle"]["steps"]) == (1, len(p) - 1)
    assert split["wall"]["game_ends_per_step"] == 1 and split["middle"]["game_ends_per_step"] == 0
    assert split["wall"]["mean_q"] == pytest.approx(float(q[-1]))
    assert split["middle"]["mean_q"] == pytest.approx(float(q[:-1].mean()))
    bare = Episode(images=images, wham_actions=controller.to_wham(ctrl).astype(np.float32))  # no game variables
    write_episode(tmp_path / "bare.npz", bare)
    with pytest.raises(ValueError, match="position_y"):
        end_risk.transition_positions(model, [str(tmp_path / "bare.npz")])


def test_fit_end_risk_recovers_the_sharpness_and_center_the_ends_were_drawn_with(tiny):
    from wham_gym.rewards import EndRiskTermination, fit_end_risk

    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-rng.normal(-4.0, 1.5, 200_000)))  # a spread of GPT end probabilities, mostly small
    model = _with_end_frames(tiny)
    for sharpness, center in [(0.7, 0.72), (3.0, 0.2)]:
        q = EndRiskTermination(model, sharpness, center).probability(torch.from_numpy(p)).numpy()
        ended = rng.random(len(p)) < q  # the ends a dream with these risk ends would draw on these steps
        s, c = fit_end_risk(p, ended)
        assert s == pytest.approx(sharpness, rel=0.05) and c == pytest.approx(center, abs=0.03)
    with pytest.raises(ValueError, match="both ended and continued"):
        fit_end_risk(p[:10], np.zeros(10, bool))
    with pytest.raises(ValueError, match="do not rise with p"):
        fit_end_risk(p, rng.random(len(p)) < 0.5 * (1 - p))  # ends falling with p: no risk form fits
    with pytest.raises(ValueError, match="one shape"):
        fit_end_risk(p[:5], np.zeros(4, bool))


def test_frame_hazard_is_found_or_explained(tiny):
    from wham_gym.model.reward_model import frame_hazard

    with pytest.raises(ValueError, match="expected a frame-only hazard"):
        frame_hazard(tiny)
    net = RewardModel(RewardModelConfig(image_vocab_size=16, tokens_per_image=4, termination="hazard",
                                        reads_action=False))

    class Holder:  # what frame_hazard reads of a model
        reward_model, card = net, {"name": "m"}

    assert frame_hazard(Holder()) is net
    Holder.reward_model = RewardModel(RewardModelConfig(image_vocab_size=16, tokens_per_image=4, termination="hazard"))
    with pytest.raises(ValueError, match="m: expected a frame-only hazard.*reads_action True"):
        frame_hazard(Holder())
