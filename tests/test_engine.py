"""DreamEngine: exactness against the plain reference procedure, slot independence, semantics, errors."""

import numpy as np
import pytest
import torch

from wham_gym import controller, load_model
from wham_gym.engine import DreamEngine
from wham_gym.model.vocab import action_values
from wham_gym.sampling import slot_seed

from reference import reference_rollout


def random_prompt(model, P, rng):
    tpi = model.config.tokens_per_image
    imgs = torch.from_numpy(rng.integers(0, model.config.image_vocab_size, (P, tpi)))
    acts = random_actions(rng, P - 1)
    return imgs, acts


def random_actions(rng, n):
    a = rng.uniform(-1, 1, (n, 16)).astype(np.float32)
    a[:, :12] = rng.random((n, 12)) < 0.3
    return torch.from_numpy(a)


def action_ids(model, actions):
    return model.action_ids(actions)


SETTINGS = [
    dict(deterministic=True, min_tokens_to_keep=4),  # WHAM's argmax whatever min_tokens_to_keep (§8.3, addendum)
    dict(temperature=0.9),
    dict(temperature=1.3, top_k=5),
    dict(temperature=0.7, top_p=0.8),
]


@pytest.mark.parametrize("sampling", SETTINGS, ids=["argmax-keep4", "t0.9", "topk5", "topp0.8"])
def test_engine_equals_reference_procedure(model64, sampling):
    rng = np.random.default_rng(0)
    N, steps = 3, 1  # one step, slot 1 reset, two more: slots 0 and 2 step three times on their caches
    prompt_lens = [1, 4, 10]  # 10 > window: the engine keeps the last 9 like the reference
    eng = DreamEngine(model64, N, seed=7, **sampling)
    prompts = [random_prompt(model64, P, rng) for P in prompt_lens]
    seeds = [11, 22, 33]
    for b, (imgs, acts) in enumerate(prompts):
        eng.reset([b], tokens=imgs[None], actions=acts[None] if len(acts) else None, seeds=[seeds[b]])
    actions = [random_actions(rng, N) for _ in range(steps + 2)]
    got = [eng.step(a, decode=False).tokens for a in actions[:steps]]

    # Reset slot 1 mid-rollout; the others carry on.
    imgs2, acts2 = random_prompt(model64, 2, rng)
    eng.reset([1], tokens=imgs2[None], actions=acts2[None], seeds=[44])
    got2 = [eng.step(a, decode=False).tokens for a in actions[steps:]]

    for b in range(N):
        imgs, acts = prompts[b]
        per_step = [action_ids(model64, a[b]) for a in actions]
        ref, _ = reference_rollout(model64, imgs, action_ids(model64, acts) if len(acts) else [],
                                   per_step[:steps] if b == 1 else per_step, seeds[b], sampling)
        mine = [t[b].tolist() for t in got] + ([] if b == 1 else [t[b].tolist() for t in got2])
        assert mine == ref, f"slot {b} diverged from the reference"
    ref1, _ = reference_rollout(model64, imgs2, action_ids(model64, acts2), [action_ids(model64, a[1]) for a in actions[steps:]],
                                44, sampling)
    assert [t[1].tolist() for t in got2] == ref1


def test_predicted_actions_equal_reference(model64):
    rng = np.random.default_rng(1)
    eng = DreamEngine(model64, 3, temperature=1.0)
    imgs, acts = random_prompt(model64, 3, rng)
    eng.reset(None, tokens=imgs[None].repeat(3, 1, 1), actions=acts[None].repeat(3, 1, 1), seeds=[1, 2, 3])
    a = random_actions(rng, 3)
    res = eng.step(a, decode=False, predict_actions=True)
    for b in range(3):
        ref_img, ref_act = reference_rollout(model64, imgs, action_ids(model64, acts), [action_ids(model64, a[b])],
                                             b + 1, dict(temperature=1.0), predict_actions=True)
        assert res.tokens[b].tolist() == ref_img[0]
        expected = controller.from_wham(action_values(torch.tensor(ref_act[0])))
        assert torch.equal(res.predicted_actions[b], expected)


def test_slot_independent_of_batch(model64):
    rng = np.random.default_rng(2)
    imgs, acts = random_prompt(model64, 5, rng)
    actions = [random_actions(rng, 4) for _ in range(3)]
    big = DreamEngine(model64, 4, temperature=1.0, seed=123)
    big.reset(None, tokens=imgs[None].repeat(4, 1, 1), actions=acts[None].repeat(4, 1, 1))
    big_out = [big.step(a, decode=False).tokens for a in actions]
    k = 2
    one = DreamEngine(model64, 1, temperature=1.0)
    one.reset(None, tokens=imgs[None], actions=acts[None], seeds=[slot_seed(123, k)])
    one_out = [one.step(a[k : k + 1], decode=False).tokens for a in actions]
    assert all(torch.equal(x[k], y[0]) for x, y in zip(big_out, one_out))
    assert not all(torch.equal(x[0], x[k]) for x in big_out)  # different seeds, different dreams


def test_refresh_mode_equals_exact_while_window_fits(model64):
    rng = np.random.default_rng(3)
    imgs, acts = random_prompt(model64, 1, rng)
    actions = [random_actions(rng, 2) for _ in range(5)]
    outs = []
    for k in (1, 3):
        eng = DreamEngine(model64, 2, temperature=1.0, refresh_every=k)
        eng.reset(None, tokens=imgs[None].repeat(2, 1, 1), seeds=[5, 6])
        outs.append([eng.step(a, decode=False).tokens for a in actions])
    for x, y in zip(*outs):
        assert torch.equal(x, y)


def test_refresh_mode_differs_once_window_truncates(model64):
    rng = np.random.default_rng(4)
    imgs, acts = random_prompt(model64, 10, rng)
    a = random_actions(rng, 1)
    res = []
    for k in (1, 4):
        eng = DreamEngine(model64, 1, deterministic=True, refresh_every=k)
        eng.reset(None, tokens=imgs[None], actions=acts[None])
        res.append(eng.step(a, decode=False))
    assert eng.cache_len.item() == (9 - 4 + 1) * model64.config.tokens_per_step + model64.config.tokens_per_image - 1


def test_behaviour_policy_takes_predicted_action(model64):
    rng = np.random.default_rng(5)
    imgs, acts = random_prompt(model64, 3, rng)
    eng = DreamEngine(model64, 2, temperature=1.0)
    eng.reset(None, tokens=imgs[None].repeat(2, 1, 1), actions=acts[None].repeat(2, 1, 1), seeds=[1, 2])
    policy = eng.predict_actions()
    assert policy.shape == (2, 16)
    assert set(policy[:, :12].unique().tolist()) <= {0.0, 1.0}
    assert torch.isin(policy[:, 12:], torch.tensor(controller.STICK_BIN_MIDDLES, dtype=torch.float32)).all()
    assert torch.equal(eng.predict_actions(), policy)  # kept, not resampled

    # A world-model engine given the policy's action dreams the same frame.
    wm = DreamEngine(model64, 2, temperature=1.0)
    wm.reset(None, tokens=imgs[None].repeat(2, 1, 1), actions=acts[None].repeat(2, 1, 1), seeds=[1, 2])
    wm.predict_actions()  # consume the same draws
    full = eng.step(None, decode=False)
    given = wm.step(policy, decode=False, predict_actions=True)
    assert torch.equal(full.tokens, given.tokens)
    assert torch.equal(full.predicted_actions, given.predicted_actions)
    assert torch.equal(eng.context_tokens(0)[1][-1], model64.action_ids(policy[0]))


def test_reset_replace_and_context(model64):
    rng = np.random.default_rng(6)
    eng = DreamEngine(model64, 3, deterministic=True)
    imgs, acts = random_prompt(model64, 4, rng)
    full_acts = torch.cat([acts, random_actions(rng, 1)])  # P entries: the last is ignored
    eng.reset([0, 2], tokens=imgs[None].repeat(2, 1, 1), actions=full_acts[None].repeat(2, 1, 1))
    ctx_img, ctx_act = eng.context_tokens(0)
    assert torch.equal(ctx_img, imgs) and torch.equal(ctx_act, model64.action_ids(acts))
    with pytest.raises(RuntimeError, match="no context"):
        eng.step(random_actions(rng, 3))
    eng.reset([1], tokens=imgs[None, -1:])
    before = eng.context_tokens(2)
    new = torch.from_numpy(rng.integers(0, model64.config.image_vocab_size, (1, model64.config.tokens_per_image)))
    eng.replace_frames([0], tokens=new)
    assert torch.equal(eng.context_tokens(0)[0][-1], new[0])
    assert all(torch.equal(x, y) for x, y in zip(eng.context_tokens(2), before))  # others untouched
    res = eng.step(random_actions(rng, 3), decode=False)
    assert eng.context_tokens(0)[0].shape[0] == 5 and eng.context_tokens(1)[0].shape[0] == 2
    assert torch.equal(eng.context_tokens(0)[0][-1], res.tokens[0])


def test_frames_decode_and_uncertainty():
    model = load_model("tiny")
    rng = np.random.default_rng(7)
    eng = DreamEngine(model, 2, seed=0)
    frames = rng.integers(0, 256, (2, 2, 180, 300, 3), dtype=np.uint8)
    eng.reset(None, frames=frames, actions=random_actions(rng, 2)[:, None].numpy())
    res = eng.step(random_actions(rng, 2))
    assert res.frames.shape == (2, 180, 300, 3) and res.frames.dtype == torch.uint8
    assert res.tokens.shape == (2, model.config.tokens_per_image)
    assert torch.equal(res.frames, model.decode_tokens(res.tokens))
    assert (res.nll > 0).all() and (res.entropy > 0).all()
    assert (res.entropy <= np.log(model.config.image_vocab_size) + 1e-4).all()
    # Sharper sampling never raises the model's own per-token NLL expectation; with a peaked model NLL is small.
    eng2 = DreamEngine(model, 1, deterministic=True)
    eng2.reset(None, frames=frames[:1, :1])
    assert eng2.step(random_actions(rng, 1)).nll.shape == (1,)


def test_uncertainty_equals_a_full_forward_in_float64(model64):
    """A step's NLL and entropy are the means, over the new frame's image tokens, of the model's own distribution
    over each token's valid range: here recomputed from one plain causal forward over the window and the new frame,
    in float64 (the engine computes them in float32 per token)."""
    rng = np.random.default_rng(3)
    eng = DreamEngine(model64, 2, seed=5, temperature=0.9)
    for b in range(2):
        imgs, acts = random_prompt(model64, 3, rng)
        eng.reset([b], tokens=imgs[None], actions=acts[None])
    res = eng.step(random_actions(rng, 2), decode=False)
    vocab, tpi = model64.vocab, model64.config.tokens_per_image
    lo, hi = vocab.range_low.tolist(), vocab.range_high.tolist()
    for b in range(2):
        imgs, acts = eng.context_tokens(b)
        assert torch.equal(imgs[-1], res.tokens[b])
        ids = torch.cat([torch.cat([f, a + vocab.action_offset]) for f, a in zip(imgs[:-1], acts)] + [imgs[-1]])
        with torch.no_grad():
            logits = model64.gpt(ids[None])[0].double()
        start = len(ids) - tpi  # logits at position start + g - 1 predict image token g
        nll, ent = [], []
        for g in range(tpi):
            logp = logits[start + g - 1, lo[g]:hi[g] + 1].log_softmax(-1)
            nll.append(-logp[int(imgs[-1][g]) - lo[g]])
            ent.append(-(logp.exp() * logp).sum())
        torch.testing.assert_close(res.nll[b].double(), torch.stack(nll).mean(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res.entropy[b].double(), torch.stack(ent).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.full((2, 16), np.nan, np.float32), "non-finite"),
    (np.zeros((2, 15), np.float32), "shape"),
    (np.zeros((3, 16), np.float32), "shape"),
])
def test_bad_actions(bad, match):
    eng = DreamEngine("tiny", 2)
    eng.reset(None, tokens=torch.ones(2, 1, 60, dtype=torch.long))
    with pytest.raises(ValueError, match=match):
        eng.step(bad)


def test_bad_construction_and_prompts():
    with pytest.raises(ValueError, match="num_envs"):
        DreamEngine("tiny", 0)
    with pytest.raises(ValueError, match="top_k"):
        DreamEngine("tiny", 1, top_k=0)
    with pytest.raises(ValueError, match="both"):
        DreamEngine("tiny", 1, top_k=3, top_p=0.5)
    eng = DreamEngine("tiny", 2)
    with pytest.raises(ValueError, match="1 to 10 frames"):
        eng.reset(None, tokens=torch.ones(2, 11, 60, dtype=torch.long), actions=torch.zeros(2, 10, 16))
    with pytest.raises(ValueError, match="frames"):
        eng.reset(None, frames=np.zeros((2, 1, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        eng.reset(None, tokens=torch.full((2, 1, 60), 64, dtype=torch.long))
    with pytest.raises(ValueError, match="actions"):
        eng.reset(None, tokens=torch.ones(2, 3, 60, dtype=torch.long))


def test_engines_sharing_a_model_do_not_disturb_each_other(model64):
    rng = np.random.default_rng(8)
    imgs, acts = random_prompt(model64, 3, rng)
    a = random_actions(rng, 3)
    solo = DreamEngine(model64, 3, temperature=1.0)
    solo.reset(None, tokens=imgs[None].repeat(3, 1, 1), actions=acts[None].repeat(3, 1, 1), seeds=[1, 2, 3])
    expected = solo.step(a, decode=False).tokens
    first = DreamEngine(model64, 3, temperature=1.0)
    first.reset(None, tokens=imgs[None].repeat(3, 1, 1), actions=acts[None].repeat(3, 1, 1), seeds=[1, 2, 3])
    other = DreamEngine(model64, 1, temperature=1.0)  # built after, different N, same model
    other.reset(None, tokens=imgs[None, :1])
    other.step(a[:1], decode=False)
    assert torch.equal(first.step(a, decode=False).tokens, expected)


def test_kv_cache_size_formula_and_largest_n():
    from wham_gym.engine import kv_cache_bytes, max_envs
    from wham_gym.model.config import preset

    cfg = preset("wham-1.6b")
    per_slot = 24 * 2 * 5560 * 2304 * 2  # n_layer x (K, V) x block_size x n_embd x bf16 bytes
    assert kv_cache_bytes(cfg, 3, torch.bfloat16) == 3 * per_slot
    assert max_envs(cfg, 80 * 2**30, torch.bfloat16, headroom=1.0) == 80 * 2**30 // per_slot  # 69 on an 80 GB card
    eng = DreamEngine(load_model("tiny"), 2)
    assert sum(c.k.numel() + c.v.numel() for c in eng.caches) * 4 == kv_cache_bytes(eng.config, 2, torch.float32)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_full_windows_take_the_causal_prefill_and_stay_exact(model64, compile):
    # Every slot holds a whole window: the prefill runs as plain causal attention (no mask); compiled, as one
    # compiled call of one shape, and each image token after a frame's first as one compiled pass-and-draw.
    torch._dynamo.reset()
    rng = np.random.default_rng(3)
    N, sampling = 2, dict(temperature=0.9)
    eng = DreamEngine(model64, N, seed=5, compile=compile, **sampling)
    calls = []
    if compile:
        for name in ("_compiled_prefill", "_compiled_token"):
            fn = getattr(eng, name)
            setattr(eng, name, lambda *a, fn=fn, name=name: calls.append(name) or fn(*a))
    prompts = [random_prompt(model64, 10, rng) for _ in range(N)]
    eng.reset(None, tokens=torch.stack([p[0] for p in prompts]), actions=torch.stack([p[1] for p in prompts]),
              seeds=[1, 2])
    actions = [random_actions(rng, N) for _ in range(2)]
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = [eng.step(a, decode=False).tokens for a in actions]
    assert eng._uniform  # the path this test is about
    if compile:  # per step: one prefill, then a pass-and-draw for each image token but the first
        tpi = model64.config.tokens_per_image
        assert calls == (["_compiled_prefill"] + ["_compiled_token"] * (tpi - 1)) * len(actions)
    for b in range(N):
        ref, _ = reference_rollout(model64, prompts[b][0], action_ids(model64, prompts[b][1]),
                                   [action_ids(model64, a[b]) for a in actions], [1, 2][b], sampling)
        assert [t[b].tolist() for t in got] == ref


# ---------------------------------------------------------------- diagonal decoding
def _model_with_grid(rows, cols, seed=0):
    from wham_gym.model import build_model
    from wham_gym.model.config import ViTTokenizerConfig, make_config

    tok = ViTTokenizerConfig(width=30 * cols, height=30 * rows, patch_size=30, transf_dim=32, embedding_dim=8,
                             num_layers=1, head_size=16, vocab_size=64)
    m = build_model(make_config(tok, n_layer=2, n_head=2, n_embd=32), seed=seed).double()
    with torch.no_grad():
        for p in m.gpt.parameters():
            p.mul_(4.0)
    return m


@pytest.mark.parametrize("rows, cols", [(1, 6), (5, 1)])
def test_diagonal_decoding_is_raster_decoding_on_a_line(rows, cols):
    # With one row (or one column) every anti-diagonal holds one token and each token's raster
    # predecessor is already known: diagonal decoding must then equal exact decoding token for token.
    model = _model_with_grid(rows, cols)
    rng = np.random.default_rng(0)
    imgs, acts = random_prompt(model, 4, rng)
    runs = {}
    for decoding in ("exact", "diagonal"):
        eng = DreamEngine(model, 2, seed=3, temperature=0.9, decoding=decoding)
        eng.reset(None, tokens=imgs[None].repeat(2, 1, 1), actions=acts[None].repeat(2, 1, 1))
        steps = [random_actions(np.random.default_rng(1), 2) for _ in range(3)]
        runs[decoding] = [(r.tokens, r.nll, r.predicted_actions) for r in
                          (eng.step(a, decode=False, predict_actions=True) for a in steps)]
    for (t1, n1, p1), (t2, n2, p2) in zip(runs["exact"], runs["diagonal"]):
        assert torch.equal(t1, t2) and torch.equal(p1, p2)
        assert torch.allclose(n1, n2)


def test_diagonal_decoding_on_a_grid_is_valid_seeded_and_slot_independent(model64):
    rng = np.random.default_rng(2)
    prompts = [random_prompt(model64, P, rng) for P in (3, 9, 5)]
    actions = [random_actions(rng, 3) for _ in range(3)]

    def run(slots, seed_of):
        eng = DreamEngine(model64, len(slots), decoding="diagonal", temperature=1.0)
        for j, b in enumerate(slots):
            imgs, acts = prompts[b]
            eng.reset([j], tokens=imgs[None], actions=acts[None], seeds=[seed_of[b]])
        return [eng.step(a[slots], decode=False).tokens for a in actions]

    seeds = {0: 5, 1: 6, 2: 7}
    together = run([0, 1, 2], seeds)
    alone = run([1], seeds)
    assert all(torch.equal(t[1], a[0]) for t, a in zip(together, alone))  # a slot ignores its neighbours
    assert all(torch.equal(t, u) for t, u in zip(together, run([0, 1, 2], seeds)))  # seeded: reproducible
    lo, hi = model64.vocab.range_low, model64.vocab.range_high
    for t in together:
        assert (t[:, 0] >= lo[0]).all() and (t >= 0).all() and (t <= hi[1]).all()  # each in its valid range
    exact = DreamEngine(model64, 3, temperature=1.0)  # on a 6x10 grid it is an approximation: it differs
    for b, (imgs, acts) in enumerate(prompts):
        exact.reset([b], tokens=imgs[None], actions=acts[None], seeds=[seeds[b]])
    assert not torch.equal(exact.step(actions[0], decode=False).tokens, together[0])


def test_decoding_option_is_checked(model64):
    with pytest.raises(ValueError, match="decoding.*exact.*diagonal"):
        DreamEngine(model64, 1, decoding="parallel")
    with pytest.raises(ValueError, match="compile: expected True or False"):
        DreamEngine(model64, 1, compile="yes")


def test_compiled_decode_pass_gives_eager_tokens_with_one_compilation(model64):
    # compile=True decodes against the whole cache under a preallocated mask: one shape for every pass,
    # whatever the slots' window lengths, so it compiles once; its tokens are eager decoding's (which the
    # reference test above holds to WHAM's procedure), for image and predicted-action tokens alike.
    torch._dynamo.reset()
    rng = np.random.default_rng(3)
    prompts = [random_prompt(model64, P, rng) for P in (1, 4, 10)]
    actions = [random_actions(rng, 3) for _ in range(3)]
    later = random_prompt(model64, 2, rng)
    runs = {}
    for compiled in (False, True, "again"):  # a second compiled engine reuses the compiled code on its own cache
        eng = DreamEngine(model64, 3, seed=5, temperature=1.1, compile=bool(compiled))
        for b, (imgs, acts) in enumerate(prompts):
            eng.reset([b], tokens=imgs[None], actions=acts[None] if len(acts) else None)
        with torch._dynamo.config.patch(error_on_recompile=True):
            got = [eng.step(actions[0], decode=False, predict_actions=True)]
            eng.reset([1], tokens=later[0][None], actions=later[1][None])  # slot 1 starts over mid-rollout
            got += [eng.step(a, decode=False, predict_actions=True) for a in actions[1:]]
        runs[compiled] = [(r.tokens.tolist(), r.predicted_actions.tolist()) for r in got]
    assert runs[True] == runs[False] and runs["again"] == runs[False]


class _HostSyncs(torch.overrides.TorchFunctionMode):
    """Counts tensor calls that wait for the device and copy to the host (on a GPU, each stalls the stream)."""

    SYNCS = {"__bool__", "item", "tolist", "cpu", "numpy", "__int__", "__float__", "__index__", "nonzero"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("decoding", ["exact", "diagonal"])
def test_a_step_syncs_the_host_once(decoding):
    # The documented one: sizing the prefill (a tolist of three numbers). Validation is the caller's
    # (checked=True, as the env and run() do); the engine's public step adds one for its own check.
    model = load_model("tiny")
    eng = DreamEngine(model, 3, decoding=decoding)
    eng.reset(None, frames=np.zeros((3, 1, 180, 300, 3), np.uint8))
    a = torch.zeros(3, 16)
    eng.step(a)
    for kwargs in (dict(), dict(predict_actions=True), dict(decode=False)):
        with _HostSyncs() as syncs:
            eng.step(a, checked=True, **kwargs)
        assert syncs.calls == ["tolist"], kwargs
    eng.step(a, checked=True, predict_actions=True)
    with _HostSyncs() as syncs:
        eng.step(None)  # the model acts, taking the action it predicted last step: no policy pass
    assert syncs.calls == ["tolist"]
    with _HostSyncs() as syncs:
        eng.step(a)
    assert sorted(syncs.calls) == ["__bool__", "tolist"]  # + the public step's finite-check of the actions


def test_a_step_builds_no_autograd_graph():
    # Dreaming is inference: a step must not record operations for backward (memory and time).
    eng = DreamEngine(load_model("tiny"), 2)
    eng.reset(None, frames=np.zeros((2, 1, 180, 300, 3), np.uint8))
    out = eng.step(torch.zeros(2, 16), predict_actions=True)
    assert not (out.nll.requires_grad or out.entropy.requires_grad or out.frames.requires_grad)


def test_watched_first_token_reports_its_probability_and_a_ban_removes_it(model64):
    """watch_first_token: the probability each slot's new frame had of starting with the watched token, equal to
    a plain forward over the whole context (no cache); watching alone changes no draw; banned, the token is never
    drawn first, and an argmax slot whose best token it was draws its second best."""
    rng = np.random.default_rng(5)
    N, P = 6, 3
    prompts = [random_prompt(model64, P, rng) for _ in range(N)]
    imgs = torch.stack([p[0] for p in prompts])
    acts = torch.stack([p[1] for p in prompts])
    step_acts = random_actions(rng, N)
    lo, hi = model64.vocab.range_low[0].item(), model64.vocab.range_high[0].item()

    def run(watch=None, ban=False, **sampling):
        eng = DreamEngine(model64, N, seed=11, **sampling)
        eng.reset(tokens=imgs, actions=acts)
        if watch is not None:
            eng.watch_first_token(watch, ban=ban)
        r = eng.step(step_acts, decode=False)
        return r.tokens, r.first_token_prob

    plain, none = run()
    assert none is None
    w = int(plain[0, 0])
    watched, p = run(watch=w)
    assert torch.equal(watched, plain)
    # The reference: logits for the new frame's first token from one causal forward over the interleaved context.
    all_acts = torch.cat([acts, step_acts[:, None]], 1)
    seq = model64.vocab.interleave(imgs, model64.action_ids(all_acts.reshape(-1, 16)).reshape(N, P, 16))
    with torch.no_grad():
        logits = model64.logits(seq)[:, -1].double() / 0.9
    ref = torch.softmax(logits[:, lo:hi + 1], -1)[:, w - lo]
    assert p.dtype == torch.float64 and torch.allclose(p, ref, atol=1e-6), (p, ref)
    assert 0 < float(p[0]) <= 1

    banned, p_banned = run(watch=w, ban=True)
    assert torch.allclose(p_banned, p) and not (banned[:, 0] == w).any()

    best, _ = run(deterministic=True)
    w0 = int(best[0, 0])
    second, _ = run(watch=w0, ban=True, deterministic=True)
    ranked = logits[0, lo:hi + 1].argsort(descending=True) + lo
    assert int(ranked[0]) == w0 and int(second[0, 0]) == int(ranked[1])

    eng = DreamEngine(model64, 1)
    with pytest.raises(ValueError, match="image token id"):
        eng.watch_first_token(hi + 1)
