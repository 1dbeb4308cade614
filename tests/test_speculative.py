"""Speculative decoding (DreamEngine(decoding="speculative")): the same tokens as exact decoding, in fewer passes.

Every token is drawn by inverse CDF from its own pre-assigned uniform, so a speculative step must give
exact decoding's tokens token for token (not only in distribution), and its NLL / entropy up to float
rounding, whatever the drafts are: good drafts only save passes.
"""

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.engine import DECODINGS, DreamEngine
from wham_gym.prompts import default_prompt_bank

from test_engine import _HostSyncs, random_actions, random_prompt

SETTINGS = {
    "argmax": dict(deterministic=True),
    "t0.9": dict(temperature=0.9),
    "topk5": dict(temperature=1.3, top_k=5),
    "topp0.8": dict(temperature=0.7, top_p=0.8),
}


@pytest.fixture(scope="module")
def take_cover():
    """The shipped take_cover model (trained: its frames change little step to step) and real prompts from its card."""
    model = load_model("take_cover")
    prompts = default_prompt_bank(model).sample(np.random.default_rng(0), 3, model.config.seq_len - 1)
    return model, prompts


def _rollout(model, decoding, prompts, seeds, actions, predict, drafts=None, **kwargs):
    """Steps of an engine whose slot b starts from prompts[b]; ``drafts(step)`` replaces the engine's draft."""
    eng = DreamEngine(model, len(prompts), decoding=decoding, **kwargs)
    for b, (imgs, acts) in enumerate(prompts):
        eng.reset([b], tokens=imgs[None], actions=acts[None] if len(acts) else None, seeds=[seeds[b]])
    if drafts is not None:
        step = iter(range(len(actions)))
        eng._draft = lambda: drafts(next(step))
    results, passes, accepted = [], [], []
    for a, p in zip(actions, predict):
        results.append(eng.step(a, decode=False, predict_actions=p))
        passes.append(eng.last_passes)
        accepted.append(None if eng.last_accepted is None else eng.last_accepted.clone())
    return eng, results, passes, accepted


def _assert_same(exact, spec):
    for x, y in zip(exact, spec):
        assert torch.equal(x.tokens, y.tokens)
        assert (x.predicted_actions is None) == (y.predicted_actions is None)
        if x.predicted_actions is not None:
            assert torch.equal(x.predicted_actions, y.predicted_actions)
        torch.testing.assert_close(x.nll, y.nll, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.entropy, y.entropy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_speculative_gives_exact_tokens_with_drafts_of_every_quality(model64, name):
    # Slot 0 drafts the exact frame (all accepted: the fewest passes), slot 1 the exact frame with every
    # 7th token wrong (rejections mid-block), slot 2 the exact frame's first half, then the previous
    # frame (the engine's own draft; a random model rarely repeats it). The slots advance by different
    # amounts per pass; every token must still be exact decoding's.
    sampling = SETTINGS[name]
    rng = np.random.default_rng(0)
    prompts = [random_prompt(model64, P, rng) for P in (1, 4, 10)]  # 10 > window: the engine keeps 9
    seeds, steps = [11, 22, 33], 4
    actions = [random_actions(rng, 3) for _ in range(steps)]
    predict = [False, True, False, True]
    _, exact, passes, _ = _rollout(model64, "exact", prompts, seeds, actions, predict, **sampling)
    assert passes == [60] * steps

    newest = [torch.stack([p[0][-1] for p in prompts])] + [r.tokens for r in exact]

    def drafts(step):
        d = exact[step].tokens.clone()
        d[1, 3::7] = (d[1, 3::7] + 1) % model64.config.image_vocab_size
        d[2, 30:] = newest[step][2, 30:]
        return d

    eng, spec, passes, accepted = _rollout(model64, "speculative", prompts, seeds, actions, predict, drafts,
                                           verify_block=8, **sampling)
    _assert_same(exact, spec)
    tpi = model64.config.tokens_per_image
    fewest = -(-(tpi - 1) // 8)  # passes after the prefill for 59 tokens, 8 a pass
    for n, acc in zip(passes, accepted):
        assert acc[0] == tpi - 1 - fewest  # an exact draft: every draft accepted, 7 + 1 drawn a pass
        assert acc[1] < acc[0] and acc[2] < acc[1]  # different amounts per slot
        assert 1 + fewest <= n < tpi  # fewer passes than exact decoding's (the slowest slot sets the count)
    assert torch.equal(eng.last_drafted[0], eng.last_accepted[0]) and (eng.last_drafted > eng.last_accepted)[1:].all()


@pytest.mark.parametrize("verify_block", [1, 2, 24])
def test_speculative_block_sizes(model64, verify_block):
    # 1: no drafts, one token per pass (exact decoding's passes); 24: blocks run past the cache's end
    # (positions there go to its padding position) without touching a real token.
    rng = np.random.default_rng(1)
    prompts = [random_prompt(model64, P, rng) for P in (10, 10)]
    actions = [random_actions(rng, 2) for _ in range(3)]
    predict = [True, False, True]
    _, exact, _, _ = _rollout(model64, "exact", prompts, [1, 2], actions, predict, temperature=1.0)
    _, spec, passes, _ = _rollout(model64, "speculative", prompts, [1, 2], actions, predict,
                                  verify_block=verify_block, temperature=1.0)
    _assert_same(exact, spec)
    if verify_block == 1:
        assert passes == [model64.config.tokens_per_image] * 3


def test_speculative_with_refresh_mode_and_resets(model64):
    # refresh_every > 1 keeps the cache across steps: the positions rejected drafts wrote must never be
    # read, there or after a reset mid-rollout; the policy pass (the model acts) stays sequential.
    rng = np.random.default_rng(2)
    prompts = [random_prompt(model64, P, rng) for P in (2, 6, 9)]
    actions = [random_actions(rng, 3) for _ in range(6)]
    predict = [False, True, False, False, True, False]
    runs = {}
    for decoding in ("exact", "speculative"):
        eng = DreamEngine(model64, 3, decoding=decoding, refresh_every=3, temperature=0.9, seed=5, verify_block=6)
        for b, (imgs, acts) in enumerate(prompts):
            eng.reset([b], tokens=imgs[None], actions=acts[None])
        out = []
        for i, (a, p) in enumerate(zip(actions, predict)):
            if i == 3:
                eng.reset([1], tokens=prompts[0][0][None], actions=prompts[0][1][None], seeds=[99])
            out.append(eng.step(a, decode=False, predict_actions=p))
        out.append(eng.step(None, decode=False))  # the model acts
        runs[decoding] = out
    _assert_same(runs["exact"], runs["speculative"])


@pytest.mark.parametrize("name", ["argmax", "t0.9", "topp0.8"])
def test_speculation_happens_on_a_trained_model(take_cover, name):
    # The shipped take_cover model from real prompts of its card: the previous frame is a good draft,
    # so a step takes fewer passes than its 60 tokens, and the tokens are still exact decoding's.
    model, prompts = take_cover
    frames = np.stack([p.frames for p in prompts])
    acts = np.stack([p.actions for p in prompts])
    left = np.zeros((3, 16), np.float32)
    left[:, 14] = [-1.0, 0.0, 1.0]  # left stick x: the take_cover presets (left, still, right)
    runs = {}
    for decoding in ("exact", "speculative"):
        eng = DreamEngine(model, 3, decoding=decoding, seed=3, verify_block=8, **SETTINGS[name])
        eng.reset(None, frames=frames, actions=acts)
        out, passes, drafted, accepted = [], [], 0, 0
        for _ in range(3):
            out.append(eng.step(left, decode=False))
            passes.append(eng.last_passes)
            if decoding == "speculative":
                drafted += int(eng.last_drafted.sum())
                accepted += int(eng.last_accepted.sum())
        runs[decoding] = out, passes, drafted, accepted
    _assert_same(runs["exact"][0], runs["speculative"][0])
    _, passes, drafted, accepted = runs["speculative"]
    # Exact decoding takes 60 passes a step. Measured on the shipped model (tc-w9, whose GPT was trained to weigh
    # the tokens that change): 125 / 146 / 143 passes over 3 steps and 30 / 24 / 25 % of drafts accepted (argmax,
    # t 0.9, top-p 0.8 at 0.7); tc-w6 before it 106-142 passes, 25-35 %; the first shipped model, trained on held
    # strafes only, accepted 44-72 %.
    assert sum(passes) < 0.9 * 60 * len(passes), passes
    assert accepted > 0.2 * drafted, (accepted, drafted)


def test_options_are_checked(model64):
    with pytest.raises(ValueError, match="decoding: expected one of exact, diagonal, speculative, got 'parallel'"):
        DreamEngine(model64, 1, decoding="parallel")
    assert DECODINGS == ("exact", "diagonal", "speculative")
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="verify_block .* must be an int >= 1"):
            DreamEngine(model64, 1, decoding="speculative", verify_block=bad)


def test_speculative_syncs_the_host_once_per_pass_after_the_first_possible_end():
    # The prefill's sizing sync, then one per pass from the first pass after which every slot could
    # have its frame (ceil(59 / 8) = 8 passes): whether they all have.
    model = load_model("tiny")
    eng = DreamEngine(model, 3, decoding="speculative", verify_block=8)
    eng.reset(None, frames=np.zeros((3, 1, 180, 300, 3), np.uint8))
    a = torch.zeros(3, 16)
    eng.step(a)
    for kwargs in (dict(), dict(predict_actions=True)):
        with _HostSyncs() as syncs:
            eng.step(a, checked=True, **kwargs)
        verify = eng.last_passes - 1
        assert syncs.calls == ["tolist"] + ["__int__"] * (verify - 8 + 1), kwargs


def test_the_option_reaches_the_env_and_the_command_lines(model64):
    # Everything that takes decoding= takes "speculative": the vector env (same observations as exact
    # decoding for the same seed), `wham-gym dream` / `bench` and agents.train_sb3.
    from agents.train_sb3 import build_parser as sb3_parser
    from wham_gym.commands.main import build_parser
    from wham_gym.env import WHAMVectorEnv

    obs = {}
    for decoding in ("exact", "speculative"):
        env = WHAMVectorEnv(2, model64, obs_mode="tokens", decoding=decoding, max_episode_steps=10)
        assert env.engine.decoding == decoding
        first, _ = env.reset(seed=4)
        obs[decoding] = [first] + [env.step(np.zeros((2, 16), np.float32))[0] for _ in range(2)]
        env.close()
    assert all(np.array_equal(a, b) for a, b in zip(obs["exact"], obs["speculative"]))
    assert build_parser().parse_args(["dream", "--decoding", "speculative"]).decoding == "speculative"
    assert build_parser().parse_args(["bench", "--decoding", "speculative"]).decoding == "speculative"
    assert sb3_parser().parse_args(["--decoding", "speculative"]).decoding == "speculative"
