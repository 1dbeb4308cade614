"""Training: losses fall, resume continues identically, the recipe yields a model the envs accept."""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wham_gym import load_model
from wham_gym.model import build_model
from wham_gym.model.config import ViTTokenizerConfig, make_config
from wham_gym.train.data import split_sources, tokenize_episodes
from wham_gym.train.recipe import Recipe, load_recipe, run_recipe
from wham_gym.train.reward import class_weights
from wham_gym.train.tokenizer import hard_pixel_l1, tokenizer_loss, train_tokenizer
from wham_gym.train.trainer import TrainConfig, latest_checkpoint
from wham_gym.train.world_model import lm_loss, sequences, train_world_model
from wham_gym.train.data import WindowSampler

TOK = ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=32, embedding_dim=8, num_layers=1,
                         head_size=16, vocab_size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    pytest.importorskip("vizdoom")
    from wham_gym.games.recorder import record

    out = tmp_path_factory.mktemp("episodes")
    record(scenario="defend_the_center", episodes=4, policy="explore", out=str(out), workers=1, max_steps=24,
           seed=3, env_kwargs={"render_hud": True}, progress=False)
    return out


def tiny_model():
    return build_model(make_config(TOK, n_layer=1, n_head=2, n_embd=32, seq_len=4, name="t"))


def cfg(steps, **kw):
    return TrainConfig(steps=steps, warmup_steps=1, checkpoint_every=max(1, steps // 2), validate_every=steps, **kw)


def test_tokenizer_loss_falls(dataset, tmp_path):
    from wham_gym.train.data import frame_bank

    train_src, _ = split_sources(dataset)
    frames = torch.from_numpy(frame_bank(train_src, 16))
    torch.manual_seed(0)
    before = tokenizer_loss(__import__("wham_gym.model.vit_vqgan", fromlist=["x"]).ViTVQGAN(TOK), frames)[0].item()
    tok, result = train_tokenizer(dataset, tmp_path / "tok", TOK, cfg(25, batch_size=8, lr=3e-3), max_frames=64,
                                  progress=False)
    after = tokenizer_loss(tok, frames)[0].item()
    assert after < 0.7 * before
    assert {"val_psnr", "val_ssim", "val_codes_used"} <= set(result)


def test_hard_pixel_term_reads_each_images_worst_pixels():
    x = torch.zeros(2, 3, 10, 20)
    recon = x.clone()
    recon[0, :, 0, :2] = 1.0  # image 0: 2 of 200 pixels off by 1 in every channel
    recon[1, 0, 5, 5] = 3.0  # image 1: one pixel off by 3 in one channel (1 over channels)
    # 1 % of 200 = the 2 worst pixels of each image: (1, 1) and (1, 0)
    assert hard_pixel_l1(recon, x, 0.01).item() == pytest.approx(3 / 4)
    assert hard_pixel_l1(recon, x, 0.02).item() == pytest.approx(3 / 8)  # 4 an image: exact pixels count too
    assert hard_pixel_l1(x, x, 0.5).item() == 0.0
    with pytest.raises(ValueError, match=r"hard_pixel_fraction: expected a share of the pixels in \(0, 1\]"):
        hard_pixel_l1(recon, x, 2.0)


def test_hard_pixel_term_adds_to_the_tokenizer_loss():
    from wham_gym.model.vit_vqgan import ViTVQGAN

    torch.manual_seed(0)
    tok = ViTVQGAN(TOK)
    images = torch.randint(0, 256, (2, 3, 180, 300), dtype=torch.uint8)
    plain, m0, *_ = tokenizer_loss(tok, images)
    weighted, m1, *_ = tokenizer_loss(tok, images, hard_pixels=(2.0, 0.02))
    assert "hard" not in m0 and m1["hard"] > m1["recon"] ** 0.5  # the worst 2 % are worse than the mean
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * m1["hard"], rel=1e-5)
    from wham_gym.train.recipe import Recipe

    assert Recipe.from_card({"recipe": {"hard_pixel_weight": 1.0}}).hard_pixel_weight == 1.0  # a card keeps it


def test_window_sampler_draws_its_end_share_from_windows_ending_in_an_end_frame():
    """WindowSampler(end_share): round(n * share) windows of each batch end in an ended episode's end frame; the
    rest stay uniform; bad shares and data without end frames are refused."""
    from wham_gym.train.data import TokenEpisode

    def episode(T, ended, mark):
        tokens = np.full((T, 6), mark, np.int32)
        tokens[:, 0] = np.arange(T)  # the step index, to find where a window starts
        if ended:
            tokens[-1] = 999  # the end frame
        return TokenEpisode(tokens=tokens, action_ids=np.zeros((T, 16), np.int8), rewards=np.zeros(T, np.float32),
                            terminated=np.zeros(T, bool), source=f"e{mark}", ended=ended)

    eps = [episode(40, False, 1), episode(12, True, 2), episode(30, False, 3), episode(9, True, 4)]
    sampler = WindowSampler(eps, 4, end_share=0.25)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(50):
        imgs, acts = sampler.sample(rng, 8)
        assert imgs.shape == (8, 4, 6) and acts.shape == (8, 4, 16)
        last_is_end = (imgs[:, -1] == 999).all(1)
        assert last_is_end[-2:].all()  # two of eight: the end windows, the episode's last 4 steps
        assert np.array_equal(imgs[-2:, 0, 0], np.where(imgs[-2:, 0, 1] == 2, 8, 5))
        ends += int(last_is_end[:-2].sum())
    assert ends < 50 * 6 * 0.1  # uniform windows end at an end frame seldom (2 of 72 windows here)
    uniform = WindowSampler(eps, 4)
    assert not (uniform.sample(np.random.default_rng(0), 8)[0][:, -1] == 999).all(1)[-2:].all()
    with pytest.raises(ValueError, match="end_share"):
        WindowSampler(eps, 4, end_share=1.0)
    with pytest.raises(ValueError, match="no episode ends in an end frame"):
        WindowSampler([eps[0], eps[2]], 4, end_share=0.1)


def test_world_model_loss_falls_and_resume_is_identical(dataset, tmp_path):
    model = tiny_model()
    train_src, _ = split_sources(dataset)
    sampler = WindowSampler(tokenize_episodes(model, train_src, tmp_path / "cache", progress=False), 4)
    ids = sequences(model, *sampler.gather(np.arange(4)), "cpu")
    before = lm_loss(model, ids)[0].item()
    c = cfg(12, batch_size=2, lr=3e-3)
    train_world_model(model, dataset, tmp_path / "a", c, progress=False, cache_dir=tmp_path / "cache")
    assert lm_loss(model, ids)[0].item() < 0.8 * before

    # Interrupted after 6 steps, then resumed: the same weights as the uninterrupted run.
    resumed = tiny_model()
    train_world_model(resumed, dataset, tmp_path / "b", c, progress=False, cache_dir=tmp_path / "cache", stop_after=6)
    assert latest_checkpoint(tmp_path / "b").name == "ckpt-00000006"
    fresh = tiny_model()  # a new process would start from scratch weights, then load the checkpoint
    train_world_model(fresh, dataset, tmp_path / "b", c, progress=False, cache_dir=tmp_path / "cache")
    for (name, p), q in zip(model.gpt.named_parameters(), fresh.gpt.parameters()):
        assert torch.equal(p, q), name


def test_changed_tokens_weigh_as_asked_and_validation_stays_plain():
    torch.manual_seed(0)
    model = tiny_model()
    tpi, tps, V = model.config.tokens_per_image, model.config.tokens_per_step, TOK.vocab_size
    imgs = torch.randint(0, V, (2, 4, tpi))
    imgs[:, 1:, tpi // 2:] = imgs[:, :1, tpi // 2:]  # the bottom half copies the first frame: unchanged tokens
    acts = torch.randint(0, 2, (2, 4, 16))
    ids = model.vocab.interleave(imgs, acts)
    with torch.no_grad():
        logp = torch.log_softmax(model.gpt(ids[:, :-1]).float(), -1)
        plain, _ = lm_loss(model, ids)
        weighted, _ = lm_loss(model, ids, changed_weight=3.0)
    # By hand: target index t (ids[t + 1]) is image token j of step s; it changed if step s > 0 and
    # imgs[s, j] != imgs[s - 1, j]; everything else (actions, step 0's image) weighs 1.
    num = den = 0.0
    for b in range(2):
        for t in range(ids.shape[1] - 1):
            s, j = divmod(t + 1, tps)
            w = 3.0 if j < tpi and s > 0 and imgs[b, s, j] != imgs[b, s - 1, j] else 1.0
            num += w * -logp[b, t, ids[b, t + 1]].item()
            den += w
    assert weighted.item() == pytest.approx(num / den, rel=1e-5)
    assert plain.item() == pytest.approx(-logp.gather(-1, ids[:, 1:, None]).mean().item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)
    with pytest.raises(ValueError, match="changed_token_weight"):
        train_world_model(model, [], "unused", cfg(1), changed_token_weight=0)


def test_class_weights_balance_classes():
    values, w = class_weights(np.array([0, 0, 0, 1, 0, 0, -1, 0], np.float32))
    assert values.tolist() == [-1, 0, 1]
    for v in values:
        assert np.isclose(w[np.array([0, 0, 0, 1, 0, 0, -1, 0]) == v].sum(), 8 / 3)


@pytest.mark.parametrize("termination", ["end_frame", "hazard"])
def test_recipe_writes_a_model_the_env_accepts(dataset, tmp_path, termination):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    recipe = Recipe(name="tiny-doom", tokenizer=TOK, n_layer=1, n_head=2, n_embd=32, seq_len=4, max_frames=64,
                    tokenizer_train=cfg(4, batch_size=4), world_model_train=cfg(4, batch_size=2),
                    reward_train=cfg(4, batch_size=32), termination=termination,
                    hazard_calibration_envs=2, hazard_calibration_steps=3)
    if termination == "hazard":  # the recording's policy (explore) looks at the game: no calibration, and why
        with pytest.warns(UserWarning, match="not calibrated to dreams: the recording's policy 'explore' looks"):
            out = run_recipe(dataset, tmp_path / "run", tmp_path / "model", recipe, progress=False)
    else:
        out = run_recipe(dataset, tmp_path / "run", tmp_path / "model", recipe, progress=False)
    model = load_model(out)
    assert model.reward_model is not None and model.reward_model.config.termination == termination
    assert model.reward_model.config.hazard_offset == 0 and "hazard_calibration" not in model.card
    assert model.card["name"] == "tiny-doom" and "world_model" in model.card["metrics"]
    # the game as it was recorded, so tools play the game the model learned: scenario and status bar
    assert model.card["scenario"] == "defend_the_center" and model.card["game_kwargs"] == {"render_hud": True}
    from wham_gym.prompts import make_prompt_bank

    bank = make_prompt_bank(None, model)  # the held-out snippets shipped inside the model directory
    assert model.card["prompts"] == "prompts" and len(bank) >= 1
    assert bank.sample(np.random.default_rng(0), 1, 3)[0].frames.std() > 0  # real frames, not the gray fallback
    env = gym.make("wham_gym/WHAM-v0", model=out).unwrapped
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert isinstance(reward, float)


def test_assemble_ships_an_interim_model_from_checkpoints(dataset, tmp_path):
    from wham_gym.train.recipe import assemble

    recipe = Recipe(name="tiny-doom", tokenizer=TOK, n_layer=1, n_head=2, n_embd=32, seq_len=4, max_frames=64,
                    tokenizer_train=cfg(2, batch_size=4), world_model_train=cfg(4, batch_size=2),
                    reward_train=cfg(2, batch_size=32))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        assemble(tmp_path / "run", tmp_path / "m0", recipe)
    tok, _ = train_tokenizer(dataset, tmp_path / "run" / "tokenizer", TOK, recipe.tokenizer_train, max_frames=64,
                             progress=False)
    model = tiny_model()
    model.tokenizer.load_state_dict(tok.state_dict())
    train_world_model(model, dataset, tmp_path / "run" / "world_model", recipe.world_model_train, progress=False,
                      stop_after=2)  # interrupted mid-run
    out = assemble(tmp_path / "run", tmp_path / "m1", recipe, data=dataset)
    loaded = load_model(out)
    assert loaded.card["steps"] == {"tokenizer": 2, "world_model": 2} and loaded.reward_model is None
    ids = torch.randint(0, 32, (1, 40))
    assert torch.equal(loaded.logits(ids), model.logits(ids))

    # A hazard reward model: its own (smaller) config travels with its checkpoint into the model directory.
    from wham_gym.train.reward import HAZARD_SIZE, train_reward_model

    rm, _ = train_reward_model(model, dataset, tmp_path / "run" / "reward", recipe.reward_train, progress=False,
                               termination="hazard")
    loaded = load_model(assemble(tmp_path / "run", tmp_path / "m2", recipe, data=dataset))
    c = loaded.reward_model.config
    assert (c.termination, c.token_dim, c.hidden) == ("hazard", HAZARD_SIZE["token_dim"], HAZARD_SIZE["hidden"])
    prev, act = torch.randint(0, 32, (3, 60)), torch.randint(0, 8, (3, 16))
    assert torch.equal(loaded.reward_model(prev, act, prev)[1], rm.eval()(prev, act, prev)[1])
    # The hazard has a body of its own: the reward's features no longer move its probability.
    assert c.separate_termination and loaded.reward_model.termination_body is not None
    with torch.no_grad():
        before = loaded.reward_model(prev, act, prev)
        for q in loaded.reward_model.body.parameters():
            q.add_(1.0)
        after = loaded.reward_model(prev, act, prev)
    assert torch.equal(after[1], before[1]) and not torch.equal(after[0], before[0])
    # Its probability on real frames, as the benchmarks read it (raw, no dream offset).
    assert torch.equal(loaded.reward_model.hazard(prev, act), torch.sigmoid(after[1].double()))
    with pytest.raises(ValueError, match="reads the action; pass action_ids"):
        loaded.reward_model.hazard(prev)
    # An action-blind hazard (Recipe.termination_reads_action=False): the setting travels too.
    train_reward_model(model, dataset, tmp_path / "run2" / "reward", recipe.reward_train, progress=False,
                       termination="hazard", reads_action=False)
    (tmp_path / "run2" / "tokenizer").symlink_to(tmp_path / "run" / "tokenizer")
    (tmp_path / "run2" / "world_model").symlink_to(tmp_path / "run" / "world_model")
    blind = load_model(assemble(tmp_path / "run2", tmp_path / "m3", recipe, data=dataset)).reward_model
    assert blind.config.reads_action is False
    assert torch.equal(blind(prev, act, prev)[1], blind(prev, (act + 1) % 8, prev)[1])
    assert torch.equal(blind.hazard(prev), torch.sigmoid(blind(prev, act, prev)[1].double()))  # no action needed
    from wham_gym.model.reward_model import RewardModel, RewardModelConfig

    with pytest.raises(ValueError, match="'end_frame', not a hazard"):
        RewardModel(RewardModelConfig(32, 60)).hazard(prev)


def test_a_weak_hazard_is_named_with_its_numbers(dataset, tmp_path, monkeypatch):
    from wham_gym.train import reward
    from wham_gym.train.reward import weak_hazard

    # take_cover c4's hazard after 400 steps (its card's held-out metrics): 3 % below the base rate's cross-entropy.
    m = {"term_xent": 0.0579, "term_xent_base": 0.0597, "term_mean_p": 0.0235, "term_rate": 0.0108}
    why = weak_hazard(m, 400)
    assert "0.0579 is 3 % below a constant rate's 0.0597" in why and "now 400" in why and "0.0235" in why
    assert weak_hazard({**m, "term_xent": 0.0473}, 1500) is None  # after 1,500 steps: 21 % below
    assert weak_hazard({**m, "term_xent": 0.0537}, 1500) is None  # exactly the margin (10 %) passes
    assert weak_hazard({"term_xent": 0.05}, 10) is None  # no base rate (no end held out): nothing to judge
    # Training a hazard ends with that check on its held-out episodes (this tiny recording holds out no end, so
    # its metrics are replaced by the card's); an end-frame classifier is not checked.
    model = load_model("tiny")
    monkeypatch.setattr(reward, "evaluate_reward_model", lambda *a, **k: m)
    with pytest.warns(UserWarning, match=r"hazard learned little: .* train it longer \(the recipe's reward_train.steps, now 2\)"):
        reward.train_reward_model(model, dataset, tmp_path / "h", cfg(2, batch_size=32), progress=False,
                                  termination="hazard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward.train_reward_model(model, dataset, tmp_path / "e", cfg(2, batch_size=32), progress=False)


def test_silent_codes_are_restarted_within_a_few_checks():
    from wham_gym.model.vit_vqgan import ViTVQGAN
    from wham_gym.train.tokenizer import CodeUsage

    torch.manual_seed(0)
    tok = ViTVQGAN(TOK)
    latents = torch.nn.functional.normalize(torch.randn(4, 60, TOK.embedding_dim), dim=-1)
    live = torch.arange(16).repeat(8)  # codes 16..31 are never chosen
    fresh, slow = CodeUsage(TOK.vocab_size, decay=0.95, threshold=0.03), CodeUsage(TOK.vocab_size)
    before = tok.vq_vae._embedding.weight.clone()
    restarted = {"fresh": 0, "slow": 0}
    for step in range(1, 151):
        for name, usage in (("fresh", fresh), ("slow", slow)):
            usage.update(live)
            if step % 50 == 0:
                restarted[name] += usage.restart(tok, latents, np.random.default_rng(step))
    assert restarted["fresh"] >= 16 and restarted["slow"] == 0  # the default waits ~700 steps
    moved = (tok.vq_vae._embedding.weight - before).abs().sum(dim=1) > 0
    assert moved[16:].all() and not moved[:16].any()


def test_a_card_records_the_recipe_that_reproduces_it():
    import json
    from dataclasses import asdict
    from importlib import resources

    card = json.loads((resources.files("wham_gym") / "assets" / "default" / "card.json").read_text())
    recipe = Recipe.from_card(card)
    assert (recipe.code_decay, recipe.code_threshold) == (0.99, 0.001)
    # The shipped card predates the hard-pixel term: it reads as off, which is how that tokenizer was trained.
    assert json.loads(json.dumps(asdict(recipe))) == {"hard_pixel_weight": 0.0, "hard_pixel_fraction": 0.02,
                                                      "changed_token_weight": 1.0, "end_window_share": 0.0,
                                                      "termination": "end_frame", "termination_reads_action": True,
                                                      "hazard_calibration_envs": 16,
                                                      "hazard_calibration_steps": 250, **card["recipe"]}
    with pytest.raises(ValueError, match="does not know"):
        Recipe.from_card({"recipe": {**card["recipe"], "flux_capacitor": 1}})
    with pytest.raises(ValueError, match="no recipe"):
        Recipe.from_card({"name": "official"})


def test_the_benchmark_recipe_cards_load_as_the_results_describe_them():
    """benchmarks/recipes/*.json reproduce the measured take_cover variants (`train all --recipe CARD`): they must
    keep loading as the version changes, and say what benchmarks/RESULTS.md says they are."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes"
    cards = {p.stem: load_recipe(str(p)) for p in sorted(folder.glob("*.json"))}
    assert set(cards) == {"take_cover_c4", "take_cover_c4_t600", "take_cover_c4_still", "take_cover_c4_changed4",
                          "take_cover_c4_changed4_ends", "take_cover_c4_changed4_agent",
                          "take_cover_c4_changed4_agent2"}
    for r in cards.values():
        assert (r.seq_len, r.termination, r.end_frame, r.tokenizer.patch_size) == (4, "hazard", "black", 30)
        assert r.model_config().tokens_per_image == 60
    sharp, plain = cards["take_cover_c4"], cards["take_cover_c4_t600"]
    assert (sharp.hard_pixel_weight, sharp.tokenizer_train.steps) == (1.0, 2000)
    assert (plain.hard_pixel_weight, plain.tokenizer_train.steps) == (0.0, 600)
    # The variant whose hazard ranks blind policies as the game does on its frames: blind, trained 1,500 steps.
    still = cards["take_cover_c4_still"]
    assert (still.termination_reads_action, still.reward_train.steps, still.world_model_train.steps) == (False, 1500, 5500)
    # The same, its GPT's loss weighing the image tokens that change from the last step 4x from the first step.
    changed = cards["take_cover_c4_changed4"]
    assert changed.changed_token_weight == 4 and still.changed_token_weight == 1
    assert dataclasses.replace(changed, name=still.name, changed_token_weight=1.0) == still
    # tc-w4 resumed to 8,000 GPT steps with an eighth of each batch from windows that end in a death.
    ends = cards["take_cover_c4_changed4_ends"]
    assert (ends.end_window_share, ends.world_model_train.steps) == (0.125, 8000)
    assert dataclasses.replace(ends, name=changed.name, end_window_share=0.0,
                               world_model_train=changed.world_model_train) == changed
    # tc-w4 resumed to 7,500 GPT steps on its data plus the real play of an agent trained in its dream (one turn
    # of the iterative loop): the recipe is tc-w4's but for the steps.
    agent = cards["take_cover_c4_changed4_agent"]
    assert agent.world_model_train.steps == 7500
    assert dataclasses.replace(agent, name=changed.name, world_model_train=changed.world_model_train) == changed
    # The loop's second turn: tc-w6 resumed to 9,500 steps with the play of the agent trained in its dream added.
    agent2 = cards["take_cover_c4_changed4_agent2"]
    assert agent2.world_model_train.steps == 9500
    assert dataclasses.replace(agent2, name=changed.name, world_model_train=changed.world_model_train) == changed


@pytest.fixture(scope="module")
def ending_episodes(tmp_path_factory):
    """Three episodes in the recorder's file format: two end in death (terminated), one in a timeout."""
    from wham_gym import controller
    from wham_gym.data.episodes import Episode, write_episode

    out = tmp_path_factory.mktemp("ending")
    rng = np.random.default_rng(0)
    for i, (T, dies) in enumerate([(7, True), (5, False), (6, True)]):
        term = np.zeros(T, bool)
        term[-1] = dies
        write_episode(out / f"episode_{i:06d}.npz", Episode(
            images=rng.integers(40, 200, (T, 3, 180, 300), dtype=np.uint8),
            wham_actions=controller.to_wham(rng.uniform(-1, 1, (T, 16)).astype(np.float32)).astype(np.float32),
            rewards=np.full(T, 3.5, np.float32), terminated=term, truncated=~term & (np.arange(T) == T - 1),
            scenario="take_cover", seed=i))
    return sorted(str(p) for p in out.iterdir())


def test_end_frames_make_episode_ends_visible(ending_episodes, tmp_path):
    from wham_gym import controller
    from wham_gym.model.vocab import action_tokens
    from wham_gym.train.data import frame_bank
    from wham_gym.train.reward import transitions

    model = tiny_model()
    plain = tokenize_episodes(model, ending_episodes, tmp_path, progress=False)
    ended = tokenize_episodes(model, ending_episodes, tmp_path, progress=False, end_frame="black")  # same cache dir
    black = model.tokenizer.encode(torch.zeros(1, 3, 180, 300, dtype=torch.uint8)).numpy()[0]
    neutral = action_tokens(torch.from_numpy(controller.to_wham(np.zeros(16, np.float32))[None])).numpy()[0]
    for p, e, dies in zip(plain, ended, (True, False, True)):
        assert not p.ended and e.ended == dies
        T = len(p.tokens)
        assert len(e.tokens) == T + dies and np.array_equal(e.tokens[:T], p.tokens)
        if dies:  # one more step: the black frame, a neutral action, no reward, not itself an end
            assert np.array_equal(e.tokens[-1], black) and np.array_equal(e.action_ids[-1], neutral)
            assert e.rewards[-1] == 0 and e.terminated.tolist() == [False] * (T - 1) + [True, False]

    # The reward model's transitions: as many as recorded steps; a death's next frame is the end frame.
    tp, te = transitions(plain), transitions(ended)
    assert len(te["reward"]) == len(tp["reward"]) == 18
    deaths = np.flatnonzero(te["term"])
    assert deaths.tolist() == [6, 17]
    assert all(np.array_equal(te["next"][i], black) for i in deaths)
    assert not any(np.array_equal(te["prev"][i], black) for i in range(18))  # no transition starts at an end
    assert np.array_equal(te["next"][:6], tp["next"][:6])

    # The tokenizer's frame bank holds the end frames too (one per death), when asked.
    bank = frame_bank(ending_episodes, 100, end_frame="black")
    assert len(bank) == 20 and int((bank.reshape(20, -1).max(1) == 0).sum()) == 2
    assert len(frame_bank(ending_episodes, 100)) == 18
    with pytest.raises(ValueError, match="end_frame"):
        tokenize_episodes(model, ending_episodes, tmp_path, progress=False, end_frame="red")


def test_termination_and_reward_metrics_on_a_constructed_case():
    from wham_gym.train.reward import evaluate_reward_model

    class Judge:  # predicts from the "next" frame's first token: 0 = an end, 7 = a reward of 1
        def __call__(self, prev, act, nxt):
            return (nxt[:, 0] == 7).float(), torch.where(nxt[:, 0] == 0, 20.0, -20.0)  # reward, termination logit

    first = np.array([0, 0, 5, 0, 7, 7, 5, 0, 5, 5])  # predicted ends at 0, 1, 3, 7; rewards at 4, 5
    data = {"prev": np.ones((10, 2), np.int64), "act": np.zeros((10, 16), np.int64),
            "next": np.stack([first, first], 1),
            "term": np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0], np.float32),  # true ends at 0, 3, 6
            "reward": np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 2], np.float32)}  # true rewards at 4, 9
    m = evaluate_reward_model(Judge(), data, "cpu", batch=4)  # batches that split the data
    assert m["term_precision"] == pytest.approx(2 / 4) and m["term_recall"] == pytest.approx(2 / 3)
    assert m["reward_precision"] == pytest.approx(1 / 2) and m["reward_recall"] == pytest.approx(1 / 2)
    assert m["reward_mae"] == pytest.approx((1 + 2) / 10)


def test_probability_metrics_on_a_constructed_case():
    from wham_gym.train.reward import probability_metrics

    p = np.array([0.9, 0.1, 0.5, 0.5])
    truth = np.array([True, False, True, False])
    m = probability_metrics(p, truth)
    # AUC over the 4 (end, non-end) pairs: 0.9 > 0.1, 0.9 > 0.5, 0.5 > 0.1, and a tie counting half.
    assert m["term_auc"] == pytest.approx(3.5 / 4)
    assert m["term_xent"] == pytest.approx(-(np.log(0.9) + np.log(0.9) + np.log(0.5) + np.log(0.5)) / 4)
    assert m["term_xent_base"] == pytest.approx(np.log(2)) and m["term_rate"] == 0.5 and m["term_mean_p"] == 0.5
    assert probability_metrics(np.array([0.2, 0.3]), np.array([False, False])).keys() == {
        "term_xent", "term_mean_p", "term_rate"}  # no AUC without both classes


def test_several_recordings_of_one_game_train_one_model(tmp_path):
    import json

    from wham_gym.commands.main import build_parser
    from wham_gym.train.recipe import _recorded_game_kwargs, _recorded_scenario

    def recording(name, scenario, hud):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"scenario": scenario, "policy": name,
                                                          "env_kwargs": {"render_hud": hud, "frame_skip": [4, 3]}}))
        return str(folder)

    strafe, jitter = recording("strafe", "take_cover", True), recording("jitter", "take_cover", True)
    assert _recorded_scenario([strafe, jitter]) == "take_cover"  # the policies differ; the game is one
    assert _recorded_game_kwargs([strafe, jitter]) == {"render_hud": True}
    with pytest.raises(ValueError, match="disagree on 'env_kwargs'"):
        _recorded_scenario([strafe, recording("bare", "take_cover", False)])
    with pytest.raises(ValueError, match="disagree on 'scenario'"):
        _recorded_scenario([strafe, recording("dtc", "defend_the_center", True)])
    args = build_parser().parse_args(["train", "world-model", "--data", strafe, jitter, "--run-dir", "r"])
    assert args.data == [strafe, jitter]


def test_a_run_started_from_a_trained_model_continues_it(dataset, tmp_path, capsys):
    """`wham-gym train all --from-model M`: with the card's recipe nothing retrains and the weights come back
    as they were; `--more-steps N` trains the GPT N steps more from them and leaves the other stages alone."""
    from wham_gym.commands.main import main

    recipe = Recipe(name="tiny-doom", tokenizer=TOK, n_layer=1, n_head=2, n_embd=32, seq_len=4, max_frames=64,
                    tokenizer_train=cfg(2, batch_size=4), world_model_train=cfg(4, batch_size=2),
                    reward_train=cfg(2, batch_size=32))
    first = load_model(run_recipe(dataset, tmp_path / "run", tmp_path / "m0", recipe, progress=False))

    def state(m):
        return {**{f"tok.{k}": v for k, v in m.tokenizer.state_dict().items()},
                **{f"gpt.{k}": v for k, v in m.gpt.state_dict().items()},
                **{f"rm.{k}": v for k, v in m.reward_model.state_dict().items()}}

    base = ["train", "all", "--data", str(dataset), "--from-model", str(tmp_path / "m0"), "--no-progress",
            "--device", "cpu"]
    assert main(base + ["--run-dir", str(tmp_path / "same"), "--out", str(tmp_path / "m1")]) == 0
    assert "tokenizer at step 2, world_model at step 4, reward at step 2" in capsys.readouterr().out
    same = load_model(tmp_path / "m1")
    assert same.card["steps"] == {"tokenizer": 2, "world_model": 4, "reward": 2}
    a, b = state(first), state(same)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert main(base + ["--run-dir", str(tmp_path / "more"), "--out", str(tmp_path / "m2"), "--more-steps", "2"]) == 0
    more = load_model(tmp_path / "m2")
    assert more.card["steps"] == {"tokenizer": 2, "world_model": 6, "reward": 2}
    c = state(more)
    changed = {k for k in a if not torch.equal(a[k], c[k])}
    assert changed and all(k.startswith("gpt.") for k in changed)  # only the GPT trained on

    # A run that has checkpoints of its own is left as it is (a rerun resumes, it does not start over).
    from wham_gym.train.recipe import seed_run_dir

    assert seed_run_dir(tmp_path / "m0", tmp_path / "more", load_recipe(str(tmp_path / "m0"))) == {}
    with pytest.raises(SystemExit, match="--from-model: expected a shipped model"):
        main(base[:4] + ["--from-model", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "x"),
                         "--out", str(tmp_path / "m3")])
