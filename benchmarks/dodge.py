"""Does a dodge save the player, in the game and in the dream? The one thing a take_cover agent must learn.

The game's episodes under a blind policy (still by default; fixed seeds) end in a death at step L. For each, the
game is replayed from its seed with the same actions up to step K = L - b (ViZDoom is deterministic under the
same seed and actions; the replay's own death at L is checked), then each branch holds one preset (none / left /
right) for the next H steps. The dream takes over at the same step K (the game's last frames and actions as its
prompt) and plays the same branches, several samples each, its death read as the env reads it: the hazard on
every dreamt frame with the model's dream offset, so P(alive after h steps) = prod (1 - q_k); and, for a model
trained with end frames, the deaths the world model draws itself (its end frame, sampled by the decoding).

A world model an agent can learn to dodge in gives a still player the game's death and a strafing one the
game's escape. One that kills everyone alike (or no one) teaches nothing about dodging, whatever its episode
lengths say.

With ``--risk S,C``, the dreams are ended by :class:`~wham_gym.rewards.EndRiskTermination` instead: the engine
bans the end frame (so nothing is drawn) and reports the GPT's probability of it every step, and survival is
computed for each (sharpness, center) asked, from the same dreams.

    python benchmarks/dodge.py --model runs/tc-w4/model --before 2,4,6 --out benchmarks/results/dodge_w4.json
    python benchmarks/dodge.py --model runs/tc-w4/model --before 1,2,4 --risk "1,0.5;6,0.05" --out ...

With ``--agent RUN`` (a PPO run of ``agents.train_sb3 --observe latent``), the agent itself acts from each branch
point too, in the game and in the dream: whether it dodges where the game needs it to, and whether the dream
agrees.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import wham_gym  # noqa: F401  (registers the envs)
from wham_gym.action_sets import action_set_for
from wham_gym.atomic import atomic_write
from wham_gym.env import WHAMVectorEnv
from wham_gym.games.explore import make_policy
from wham_gym.model import load_model
from wham_gym.model.reward_model import frame_hazard
from wham_gym.rewards import EndFrameTermination, NeverTerminate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_risk import Recorder, alive_after, first_token_prob  # noqa: E402  (benchmarks/end_risk.py)

BRANCHES = ("none", "left", "right")


def play(game, seed: int, actions: list[np.ndarray], extra: np.ndarray | None = None, extra_steps: int = 0):
    """Replay ``actions`` from ``seed``, then hold ``extra`` ``extra_steps`` times: (frames seen, steps lived)."""
    o, _ = game.reset(seed=seed)
    frames, lived = [o], 0
    plan = list(actions) + [extra] * extra_steps
    for a in plan:
        o, _, term, trunc, _ = game.step(a)
        if term or trunc:
            return frames, lived + (0 if term else 1), bool(term)
        lived += 1
        frames.append(o)
    return frames, lived, False


def end_signals(model, game, presets, deaths, before: int = 12) -> dict:
    """What each termination reads on the game's own frames as a death comes: the frame-only hazard (raw, and with
    the dream offset) and the GPT's probability that the next frame is its end frame given the last frames and the
    action taken (each preset), at the frame d steps before the death's step (d = 0: the last frame)."""
    net, vocab = model.reward_model, model.vocab
    end = EndFrameTermination(model).end_tokens
    window = model.config.seq_len - 1  # context frames before the one predicted
    temperature = 0.9
    rows = {"hazard_raw": [[] for _ in range(before)], "hazard_dream": [[] for _ in range(before)],
            **{f"gpt_end_{name}": [[] for _ in range(before)] for name in BRANCHES}}
    for seed, actions in deaths:
        frames, _, _ = play(game, seed, actions[:-1])  # the frames up to the last one before the death
        frames = np.stack(frames)
        L = len(frames)
        with torch.no_grad():
            tokens = model.encode_frames(frames).long()
            p = net.hazard(tokens.reshape(L, -1)).numpy()
            q = net.hazard(tokens.reshape(L, -1), dream=True).numpy()
        for d in range(min(before, L - window + 1)):
            t = L - 1 - d  # the frame the fatal step (d = 0) or an earlier one was taken at
            rows["hazard_raw"][d].append(float(p[t]))
            rows["hazard_dream"][d].append(float(q[t]))
            ctx = tokens[t - window + 1:t + 1][None]  # (1, window, N)
            for name in BRANCHES:
                acts = np.concatenate([np.stack(actions[t - window + 1:t]), presets.vector(name)[None]])
                ids = vocab.interleave(ctx, model.action_ids(acts[None]))  # its first token: the end frame's
                rows[f"gpt_end_{name}"][d].append(float(first_token_prob(model, ids, int(end[0]), temperature)[0]))
    return {k: [float(np.mean(v)) if v else None for v in per_d] for k, per_d in rows.items()}


class AgentView:
    """What a PPO agent of ``agents.train_sb3 --observe latent`` sees: the last ``frame_stack`` frames' quantised
    latents stacked on the channel axis, oldest first (SB3's VecFrameStack, channels last)."""

    def __init__(self, run: str, model):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: agents/
        from agents.evaluate import load_policy

        self.policy, wrapping, cfg = load_policy(run, device="cpu")
        if wrapping.observe != "latent":
            raise SystemExit(f"--agent {run}: expected a run trained with --observe latent, got {wrapping.observe!r}")
        self.frames, self.model = wrapping.frame_stack, model

    @torch.no_grad()
    def codes(self, tokens: torch.Tensor) -> np.ndarray:
        """(n, tokens_per_image) image tokens -> (n, *grid, D): the quantised latent the agent sees of each frame."""
        tok = self.model.tokenizer
        return tok.codes(tokens.long()).float().numpy().reshape(len(tokens), *tok.grid, -1)

    def predict(self, codes: list[np.ndarray]) -> np.ndarray:
        """The last ``frames`` frames' codes, oldest first -> (n,) preset indices (argmax)."""
        return self.policy.predict(np.concatenate(codes[-self.frames:], -1), deterministic=True)[0]

    def act(self, history: list[torch.Tensor]) -> np.ndarray:
        """history: per step, (n, tokens_per_image) image tokens, newest last -> (n,) preset indices (argmax)."""
        return self.predict([self.codes(t) for t in history[-self.frames:]])


class AgentActor:
    """The agent playing a whole game episode (``--policy agent``): its own deaths are then the branch points.
    Frames before the first are zero latents, as SB3's VecFrameStack pads at a reset."""

    def __init__(self, view: AgentView, presets):
        self.view, self.presets, self.seen = view, presets, []

    @torch.no_grad()
    def act(self, frame: np.ndarray) -> np.ndarray:
        code = self.view.codes(self.view.model.encode_frames(frame[None]).reshape(1, -1))
        self.seen = ((self.seen or [np.zeros_like(code)] * (self.view.frames - 1)) + [code])[-self.view.frames:]
        return self.presets.vector(int(self.view.predict(self.seen)[0]))


def agent_branch(model, game, presets, agent, cases, b: int, H: int, samples: int, temperature: float, risks):
    """The agent acting from step K = L - b of each death, in the game and in ``samples`` dreams per case: the
    game's steps lived after K, and the dream's P(alive b steps later) and steps lived (drawn ends, or each risk)."""
    game_lived, prompts, history = [], [], []
    for seed, actions in cases:
        K = len(actions) - b
        o, _ = game.reset(seed=seed)
        frames = [o]
        for a in actions[:K]:
            o, *_ = game.step(a)
            frames.append(o)
        seen = [model.encode_frames(f[None]).reshape(1, -1) for f in frames[-agent.frames:]]
        history.append(seen)
        prompts.append((np.stack(frames), np.stack(actions[:K])))
        lived = 0
        for _ in range(H):
            o, _, term, trunc, _ = game.step(presets.vector(int(agent.act(seen)[0])))
            if term:
                break
            lived += 1
            if trunc:
                break
            seen = seen[1:] + [model.encode_frames(o[None]).reshape(1, -1)]
        game_lived.append(lived)
    n = len(cases) * samples
    recorder = Recorder(model) if risks else None
    env = WHAMVectorEnv(n, model, obs_mode="tokens", termination_fn=recorder or NeverTerminate(),
                        max_episode_steps=H + 1, temperature=temperature)
    window = env.prompt_frames
    order = [c for c in range(len(cases)) for _ in range(samples)]
    pf = np.stack([prompts[c][0][-window:] for c in order])
    pa = np.stack([prompts[c][1][len(prompts[c][1]) - window + 1:] for c in order])
    obs, _ = env.reset(seed=b, options={"prompt": (pf, pa)})
    seen = [torch.cat([history[c][i] for c in order]) for i in range(len(history[0]))]
    ends = EndFrameTermination(model)
    drawn_alive, drawn_lived, drawn_at_b = np.ones(n, bool), np.zeros(n), None
    for k in range(H):
        obs, *_ = env.step(np.stack([presets.vector(int(i)) for i in agent.act(seen)]))
        tokens = torch.as_tensor(obs).long().reshape(n, -1)
        seen = seen[1:] + [tokens]
        drawn_alive &= ~ends.drawn(tokens).numpy()
        drawn_lived += drawn_alive
        if k == b - 1:
            drawn_at_b = drawn_alive.copy()
    env.close()
    g = np.array(game_lived)
    row = {"game_survives_b": float(np.mean(g >= b)), "game_steps_lived": float(np.mean(g))}
    if risks:
        p = np.stack(recorder.p, 1)
        for s, c in risks:
            alive = alive_after(model, p, s, c)
            row[f"risk {s},{c}"] = {"survives_b": float(alive[:, b - 1].mean()), "steps_lived": float(alive.sum(1).mean())}
    else:
        row["drawn"] = {"survives_b": float(drawn_at_b.mean()), "steps_lived": float(drawn_lived.mean())}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model whose reward model is a frame-only hazard")
    ap.add_argument("--policy", default="still",
                    help="the blind policy whose deaths are branched from, or 'agent': the --agent run's own deaths")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--before", default="2,4,6", help="branch b steps before each death (comma list)")
    ap.add_argument("--horizon", type=int, default=10, help="steps after the death's step that still count")
    ap.add_argument("--samples", type=int, default=2, help="dreams per episode and branch")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--risk", default=None, metavar="S,C[;S,C...]",
                    help="end the dreams by EndRiskTermination instead of drawn end frames: the engine bans the end "
                         "frame and reports its probability, and survival is computed for each (sharpness, center)")
    ap.add_argument("--agent", default=None, metavar="RUN",
                    help="also let a PPO run of agents.train_sb3 (--observe latent) act from each branch point, in "
                         "the game and in the dream: does it dodge where the game needs it to, in either world?")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    risks = [tuple(float(x) for x in pair.split(",")) for pair in args.risk.split(";")] if args.risk else []
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    net = frame_hazard(model)
    card = model.card or {}
    presets = action_set_for(card.get("action_set") or "take_cover")
    offset = float(net.config.hazard_offset)
    cap = 600
    game = gym.make("wham_gym/Doom-v0", scenario=card.get("scenario") or "take_cover", max_steps=cap,
                    **(card.get("game_kwargs") or {}))
    if args.policy == "agent" and not args.agent:
        raise SystemExit("--policy agent branches from the --agent run's own deaths: give --agent RUN")
    view = AgentView(args.agent, model) if args.agent else None
    deaths = []  # (seed, actions up to the death)
    try:
        for i in range(args.episodes):
            seed = 10_000 + i
            actor = AgentActor(view, presets) if args.policy == "agent" else make_policy(args.policy, seed=seed)
            o, _ = game.reset(seed=seed)
            actions = []
            for _ in range(cap):
                actions.append(actor.act(o))
                o, _, term, trunc, _ = game.step(actions[-1])
                if term or trunc:
                    break
            if term:
                deaths.append((seed, actions))
        report = {"model": args.model, "policy": args.policy, "date": date.today().isoformat(),
                  "torch": torch.__version__, "temperature": args.temperature,
                  "hazard_offset": float(net.config.hazard_offset),
                  "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
                  "deaths": len(deaths), "episodes": args.episodes, "by_before": {}}
        report["end_signals_by_steps_before_death"] = signals = end_signals(model, game, presets, deaths)
        for k, v in signals.items():
            print(f"{k:14s}", " ".join(f"{x:.3f}" for x in v if x is not None))
        window = None
        for b in (int(x) for x in args.before.split(",")):
            H = b + args.horizon
            cases = [(s, a) for s, a in deaths if len(a) - b >= 3]  # room for a prompt before the branch
            game_alive = {name: [] for name in BRANCHES}  # steps lived after K, per case
            replayed = 0
            prompts = []
            for seed, actions in cases:
                K = len(actions) - b
                for name in BRANCHES:
                    frames, lived, _ = play(game, seed, actions[:K], presets.vector(name), H)
                    game_alive[name].append(lived - K)
                    if name == "none" and args.policy == "still":
                        replayed += int(lived == len(actions) - 1)  # dies on the same step as the original
                if len(frames) < K + 1:
                    raise SystemExit(f"seed {seed}: the replay died before step {K}; the game is not deterministic here")
                prompts.append((np.stack(frames[:K + 1]), np.stack(actions[:K])))
            # The dream: every case x branch x sample in one batch, from the game's frames up to step K.
            n = len(cases) * len(BRANCHES) * args.samples
            recorder = Recorder(model) if risks else None  # bans the end frame: no drawn ends then
            env = WHAMVectorEnv(n, model, obs_mode="tokens", termination_fn=recorder or NeverTerminate(),
                                max_episode_steps=H + 1, temperature=args.temperature)
            window = env.prompt_frames
            order = [(c, name) for c in range(len(cases)) for name in BRANCHES for _ in range(args.samples)]
            pf = np.stack([prompts[c][0][-window:] for c, _ in order])
            pa = np.stack([prompts[c][1][len(prompts[c][1]) - window + 1:] for c, _ in order])
            obs, _ = env.reset(seed=b, options={"prompt": (pf, pa)})
            act = np.stack([presets.vector(name) for _, name in order])
            alive = np.ones(n)
            expected = np.zeros(n)  # expected steps lived after K, capped at H
            drawn_alive = np.ones(n, bool)  # not yet drawn the end frame (the world model's own death, sampled)
            drawn_lived = np.zeros(n)
            ends = EndFrameTermination(model)
            alive_at_b = drawn_at_b = None
            for k in range(H):
                # The step taken at frame k ends the episode with the hazard read on that frame (the env's rule;
                # the first is the game's own frame at K, the same for every branch).
                alive *= 1 - net.hazard(torch.as_tensor(obs).long().reshape(n, -1), dream=True).numpy()
                expected += alive
                obs, *_ = env.step(act)
                drawn_alive &= ~ends.drawn(torch.as_tensor(obs).long().reshape(n, -1)).numpy()
                drawn_lived += drawn_alive
                if k == b - 1:
                    alive_at_b, drawn_at_b = alive.copy(), drawn_alive.copy()
            env.close()
            risk_alive = {}  # (sharpness, center) -> (n,) P(alive b steps after K), and expected steps lived
            if risks:
                p = np.stack(recorder.p, 1)  # (n, H): the step k's end probability
                for s, c in risks:
                    alive_k = alive_after(model, p, s, c)
                    risk_alive[(s, c)] = (alive_k[:, b - 1], alive_k.sum(1))
            row = {"cases": len(cases), "horizon": H, "branches": {}}
            if args.policy == "still":
                row["game_replay_dies_on_the_same_step"] = replayed / max(len(cases), 1)
            for name in BRANCHES:
                g = np.array(game_alive[name])
                sel = np.array([nm == name for _, nm in order])
                row["branches"][name] = {
                    "game_survives_b": float(np.mean(g >= b)), "game_steps_lived": float(np.mean(g)),
                    "dream_survives_b": float(np.mean(alive_at_b[sel])),
                    "dream_steps_lived": float(np.mean(expected[sel])),
                    "drawn_survives_b": float(np.mean(drawn_at_b[sel])),
                    "drawn_steps_lived": float(np.mean(drawn_lived[sel])),
                }
                if risks:  # drawn ends are banned in these dreams: the risk's survival replaces them
                    del row["branches"][name]["drawn_survives_b"], row["branches"][name]["drawn_steps_lived"]
                    row["branches"][name]["risk"] = {
                        f"{s},{c}": {"survives_b": float(np.mean(a_b[sel])), "steps_lived": float(np.mean(lived[sel]))}
                        for (s, c), (a_b, lived) in risk_alive.items()}
            if args.agent:
                row["agent"] = agent_branch(model, game, presets, view, cases, b, H,
                                            args.samples, args.temperature, risks)
                print(f"  agent: {json.dumps(row['agent'])}")
            report["by_before"][str(b)] = row
            print(f"b={b} ({len(cases)} deaths, H={H})" + "".join(
                f"\n  {name:5s}: survive b steps game {r['game_survives_b']:.2f} dream {r['dream_survives_b']:.2f};"
                f" steps lived game {r['game_steps_lived']:.1f} dream {r['dream_steps_lived']:.1f};" + (
                    "".join(f" risk {k}: survive {v['survives_b']:.2f}, lived {v['steps_lived']:.1f};"
                            for k, v in r["risk"].items()) if risks else
                    f" drawn ends: survive {r['drawn_survives_b']:.2f}, lived {r['drawn_steps_lived']:.1f}")
                for name, r in row["branches"].items()))
    finally:
        game.close()
    report["prompt_frames"] = window
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
