"""Fit EndRiskTermination's sharpness and center to the game's episode lengths under blind policies.

A dream whose engine bans the end frame's first token and reports its probability p every step
(``DreamEngine.watch_first_token``) is the world model's dream *given the episode goes on*: its frames do not
depend on how the end is later decided. So one set of dreams per blind policy (still, jitter, strafe) gives,
for any (sharpness, center), the expected episode length E[L] = sum_t prod_{k<t} (1 - q_k), with
q = sigmoid(sharpness * (logit p - logit center)) (:class:`~wham_gym.rewards.EndRiskTermination`). The game's
lengths under the same policies are played here too; the fit minimises the squared log ratio of the two
over the policies, and the table shows how each setting ranks them.

    python benchmarks/end_risk.py --model runs/tc-w4/model --out benchmarks/results/end_risk_w4.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from take_cover import game_lengths  # noqa: E402  (benchmarks/take_cover.py: the game's side, shared)

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.env import WHAMVectorEnv  # noqa: E402
from wham_gym.games.explore import make_policy  # noqa: E402
from wham_gym.model import load_model  # noqa: E402
from wham_gym.rewards import EndRiskTermination, fit_end_risk, parse_end_risk  # noqa: E402
from wham_gym.train.reward import probability_metrics  # noqa: E402


class Recorder(EndRiskTermination):
    """Ends nothing; keeps each step's end probability p (the engine watches and bans the end token for it)."""

    def __init__(self, model):
        super().__init__(model)
        self.p: list[np.ndarray] = []

    def __call__(self, ctx):
        self.p.append(ctx.first_token_prob.numpy(force=True))
        return torch.zeros(ctx.num_envs, dtype=torch.bool, device=ctx.tokens.device)


def dream_end_probs(model, policies: list[str], per_policy: int, horizon: int, seed: int, temperature: float,
                    decoding: str = "exact", recorder: Recorder | None = None):
    """(len(policies) * per_policy, horizon) end probabilities of dreams that never end, policy-major.
    ``recorder``: a :class:`Recorder` that keeps more per step (its ``p`` is what is returned)."""
    rec = recorder if recorder is not None else Recorder(model)
    n = len(policies) * per_policy
    env = WHAMVectorEnv(n, model, obs_mode="tokens", termination_fn=rec, max_episode_steps=horizon + 1,
                        temperature=temperature, decoding=decoding)
    actors = [make_policy(name, seed=seed + i) for name in policies for i in range(per_policy)]
    env.reset(seed=seed)
    for _ in tqdm(range(horizon), desc="dream steps", leave=False):
        env.step(np.stack([a.act(None) for a in actors]))
    env.close()
    return np.stack(rec.p, 1)


@torch.no_grad()
def first_token_prob(model, ids: torch.Tensor, token: int, temperature: float) -> torch.Tensor:
    """(B, T) WHAM ids ending with a step's action -> (B,) float64: the probability that the next frame starts with
    ``token``, among the ids the engine may draw there (WHAM never starts a frame with codebook index 0), at the
    dream's temperature: what ``DreamEngine.watch_first_token`` reports."""
    lo, hi = int(model.vocab.range_low[0]), int(model.vocab.range_high[0])
    logits = model.logits(ids)[:, -1, lo:hi + 1].double() / temperature
    return torch.softmax(logits, -1)[:, token - lo]


@torch.no_grad()
def real_end_probs(model, sources: list[str], cache, temperature: float, batch: int = 64):
    """The GPT's end probability on recorded transitions, teacher-forced: for every action taken at a frame with a
    full context behind it, P(the next frame starts with the end frame's first token | the last frames, the
    actions), as a dream at ``temperature`` reads it. -> (p, ended): (M,) float, (M,) bool (that step ended the
    episode)."""
    from wham_gym.train.data import tokenize_episodes

    first = EndRiskTermination(model).first_token
    w = model.config.seq_len - 1  # context frames, the one taken at last (as the dream's window)
    ctx, acts, ended = [], [], []
    for e in tokenize_episodes(model, sources, cache, progress=False, end_frame="black"):
        steps = len(e.tokens) - (1 if e.ended else 0)  # transitions: the end frame itself starts none
        for t in range(w - 1, steps):
            ctx.append(e.tokens[t - w + 1:t + 1]), acts.append(e.action_ids[t - w + 1:t + 1])
            ended.append(bool(e.terminated[t]))
    if not ctx:
        raise ValueError(f"no transition with {w} frames of context in {len(sources)} episodes")
    p = []
    for i in range(0, len(ctx), batch):
        ids = model.vocab.interleave(torch.from_numpy(np.stack(ctx[i:i + batch]).astype(np.int64)),
                                     torch.from_numpy(np.stack(acts[i:i + batch]).astype(np.int64)))
        p.append(first_token_prob(model, ids, first, temperature).numpy())
    return np.concatenate(p), np.array(ended)


def real_sources(recording: str, all_episodes: bool = False) -> list[str]:
    """A recording's held-out episodes (its training split), or with ``all_episodes`` every episode (for
    recordings the model never trained on, e.g. an agent's play)."""
    from wham_gym.data.reader import open_episodes
    from wham_gym.train.data import split_sources

    return open_episodes(recording).sources if all_episodes else split_sources(recording)[1]


def transition_positions(model, sources: list[str], variable: str = "position_y") -> np.ndarray:
    """A recorded game variable (the player's position across take_cover's room, by default) at each transition
    :func:`real_end_probs` scores, in its order: the frame the action was taken at."""
    from wham_gym.data.episodes import read_game_variables

    w = model.config.seq_len - 1
    out = []
    for s in sources:
        names, values = read_game_variables(s)
        if values is None or variable not in names:
            raise ValueError(f"{s}: --by-wall reads the recorded game variable {variable!r}; this episode has "
                             f"{list(names) or 'none'} (`wham-gym record` and `agents.collect` keep the game's "
                             "variables)")
        out.append(values[w - 1:, names.index(variable)])
    return np.concatenate(out)


def by_wall(q: np.ndarray, ended: np.ndarray, y: np.ndarray, lo: float, hi: float, margin: float) -> dict:
    """The risk ends' q and the game's ends per step where the player stands within ``margin`` of the room's ends
    (``lo``, ``hi``: its extent along ``y``) and in the middle: a game-trained take_cover agent turns at the walls
    and is safest there, blind policies stop there and die most (agents/RESULTS.md)."""
    wall = (y < lo + margin) | (y > hi - margin)
    return {name: {"steps": int(m.sum()), "mean_q": float(q[m].mean()) if m.any() else float("nan"),
                   "game_ends_per_step": float(ended[m].mean()) if m.any() else float("nan")}
            for name, m in (("wall", wall), ("middle", ~wall))}


def score_real(model, recordings: list[str], temperature: float, centers: list[float], all_episodes: bool = False,
               risk: tuple[float, float] | None = None, probs=None) -> dict:
    """The end probability on the recordings' episodes (:func:`real_sources`): its AUC for the steps that ended
    an episode, and precision / recall of the risk's decision q >= 0.5 (p >= center, whatever the sharpness) for
    each center. ``risk`` = (sharpness, center): also the mean per-step end probability q it gives those real
    transitions against the game's ends per step (how long a dream ended by it would let the same play live, if
    the dream drew the frames exactly). ``probs``: (p, ended) of these episodes computed already."""
    sources = [s for rec in recordings for s in real_sources(rec, all_episodes)]
    if probs is None:
        with tempfile.TemporaryDirectory() as cache:
            probs = real_end_probs(model, sources, cache, temperature)
    p, ended = probs
    by_center = {}
    for c in centers:
        fired = p >= c
        tp = int((fired & ended).sum())
        by_center[str(c)] = {"precision": tp / max(int(fired.sum()), 1), "recall": tp / max(int(ended.sum()), 1),
                             "fired": int(fired.sum())}
    out = {}
    if risk is not None:
        q = EndRiskTermination(model, *risk).probability(torch.from_numpy(p)).numpy()
        out["risk"] = {"sharpness": risk[0], "center": risk[1], "mean_q": float(q.mean()),
                       "game_ends_per_step": float(ended.mean()), "implied_length": float(1 / max(q.mean(), 1e-12)),
                       "game_length": float(1 / max(ended.mean(), 1e-12))}
    return {**out, "recordings": recordings, "episodes": len(sources), "transitions": len(p), "ends": int(ended.sum()),
            "auc": probability_metrics(p, ended).get("term_auc", float("nan")), "mean_p": float(p.mean()),
            "mean_p_at_ends": float(p[ended].mean()) if ended.any() else float("nan"),
            "by_center": by_center}


def alive_after(model, p: np.ndarray, sharpness: float = 1.0, center: float = 0.5) -> np.ndarray:
    """(n, H) recorded end probabilities -> (n, H) P(alive after step t) under EndRiskTermination(sharpness, center)."""
    q = EndRiskTermination(model, sharpness, center).probability(torch.from_numpy(p)).numpy()
    return np.cumprod(1 - q, axis=1)


def expected_length(alive: np.ndarray) -> np.ndarray:
    """(n, H) P(alive after step t) -> (n,) expected episode length in steps, capped at H."""
    return 1 + alive[:, :-1].sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model trained with black end frames")
    ap.add_argument("--policies", default="still,jitter,strafe")
    ap.add_argument("--per-policy", type=int, default=16, help="dreams per policy")
    ap.add_argument("--game-episodes", type=int, default=48, help="game episodes per policy")
    ap.add_argument("--horizon", type=int, default=300, help="dream steps (both worlds' lengths are capped here)")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--decoding", choices=("exact", "diagonal", "speculative"), default="exact",
                    help="the dreams' decoding (diagonal: the approximate, faster one; its lengths against exact's)")
    ap.add_argument("--sharpness", default="1,1.5,2,3,4,6")
    ap.add_argument("--centers", default="0.03,0.05,0.08,0.12,0.2,0.3,0.5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", nargs="*", default=[],
                    help="recordings: also score the termination on their held-out episodes' real transitions "
                         "(teacher-forced end probability; precision / recall of q >= 0.5, i.e. p >= center)")
    ap.add_argument("--real-only", action="store_true", help="with --data: skip the dreams and the fit")
    ap.add_argument("--all-episodes", action="store_true",
                    help="with --data: score every episode (recordings the model never trained on), not the held-out")
    ap.add_argument("--risk", default=None, metavar="SHARPNESS,CENTER",
                    help="with --data: each recording's mean end probability q under these risk ends against the "
                         "game's ends per step ('card': the model card's; 'fit': the (sharpness, center) calibrated "
                         "on all the --data recordings' real transitions, wham_gym.rewards.fit_end_risk)")
    ap.add_argument("--by-wall", type=float, default=None, metavar="MARGIN",
                    help="with --data and --risk: also split each recording's q and game ends by where the player "
                         "stands, within MARGIN map units of the room's ends along position_y (the extent all the "
                         "recordings reach) or in the middle")
    ap.add_argument("--cache", default=None, help="with --data: a token cache to reuse (e.g. the model's run "
                    "directory's token-cache; tokenizing is most of the time), else a temporary one")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.real_only and not args.data:
        ap.error("--real-only scores real transitions: give --data REC [REC ...]")
    if args.by_wall is not None and not (args.data and args.risk):
        ap.error("--by-wall splits the risk ends' q on real transitions: give --data REC [REC ...] and --risk")
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    card = model.card or {}
    policies = args.policies.split(",")
    H = args.horizon

    report = {"model": args.model, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
              "temperature": args.temperature, "decoding": args.decoding}
    if args.data:
        centers = [float(x) for x in args.centers.split(",")]
        probs = {}  # each recording's teacher-forced pass, once: the pooled scores concatenate them
        with tempfile.TemporaryDirectory() as tmp:
            for rec in args.data:
                probs[rec] = real_end_probs(model, real_sources(rec, args.all_episodes), args.cache or tmp,
                                            args.temperature)
        pooled = tuple(np.concatenate([v[i] for v in probs.values()]) for i in (0, 1))
        report["real_transitions"] = real = score_real(model, args.data, args.temperature, centers, args.all_episodes,
                                                       probs=pooled)
        print(f"real held-out transitions: {real['transitions']} ({real['ends']} ends), AUC of p {real['auc']:.3f}")
        for c, r in real["by_center"].items():
            print(f"  center {c}: precision {r['precision']:.2f} recall {r['recall']:.2f}")
    if args.data and args.risk:
        ends = card.get("ends") or {}
        if args.risk == "card" and ends.get("kind") != "risk":
            ap.error(f"--risk card: this model's card has no risk ends ({ends!r}); give SHARPNESS,CENTER")
        try:
            if args.risk == "fit":
                risk = fit_end_risk(*pooled)
                report["risk_fit"] = {"sharpness": risk[0], "center": risk[1], "recordings": args.data}
                print(f"calibrated on these real transitions: --end-risk {risk[0]:.2f},{risk[1]:.2f}")
            else:
                risk = ((ends["sharpness"], ends["center"]) if args.risk == "card"
                        else parse_end_risk(args.risk, "--risk"))
        except ValueError as exc:
            ap.error(str(exc))
        report["risk_on_real"] = {}
        if args.by_wall is not None:
            try:
                ys = {rec: transition_positions(model, real_sources(rec, args.all_episodes)) for rec in args.data}
            except ValueError as exc:
                ap.error(str(exc))
            lo, hi = min(float(y.min()) for y in ys.values()), max(float(y.max()) for y in ys.values())
            report["room"] = {"variable": "position_y", "low": lo, "high": hi, "margin": args.by_wall}
        for rec in args.data:
            r = score_real(model, [rec], args.temperature, centers, args.all_episodes, risk, probs=probs[rec])
            report["risk_on_real"][rec] = {**r["risk"], "episodes": r["episodes"], "auc": r["auc"],
                                          "mean_p_at_ends": r["mean_p_at_ends"]}
            print(f"{rec}: risk {tuple(risk)} gives q {r['risk']['mean_q']:.4f} per step against the game's "
                  f"{r['risk']['game_ends_per_step']:.4f} (lives {r['risk']['implied_length']:.0f} against "
                  f"{r['risk']['game_length']:.0f} steps), AUC {r['auc']:.2f}")
            if args.by_wall is not None:
                q = EndRiskTermination(model, *risk).probability(torch.from_numpy(probs[rec][0])).numpy()
                split = by_wall(q, probs[rec][1], ys[rec], lo, hi, args.by_wall)
                report["risk_on_real"][rec]["by_wall"] = split
                print("  " + ", ".join(f"{k}: {v['steps']} steps, q {v['mean_q']:.4f} against the game's "
                                       f"{v['game_ends_per_step']:.4f}" for k, v in split.items()))
    if args.real_only:
        atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
        print(f"wrote {args.out}")
        return

    game = {}
    for name in policies:
        lengths, _ = game_lengths(card.get("scenario") or "take_cover", card.get("game_kwargs") or {},
                                  args.game_episodes, 600, 20_000, name)
        game[name] = float(np.minimum(lengths, H).mean())
    p = dream_end_probs(model, policies, args.per_policy, H, args.seed, args.temperature, args.decoding)
    by_policy = {name: p[i * args.per_policy:(i + 1) * args.per_policy] for i, name in enumerate(policies)}

    grid = []
    for s in (float(x) for x in args.sharpness.split(",")):
        for c in (float(x) for x in args.centers.split(",")):
            lengths = {name: float(expected_length(alive_after(model, v, s, c)).mean()) for name, v in by_policy.items()}
            err = float(np.mean([np.log(lengths[k] / game[k]) ** 2 for k in policies]))
            grid.append({"sharpness": s, "center": c, "dream": lengths, "rms_log_ratio": err ** 0.5})
    grid.sort(key=lambda g: g["rms_log_ratio"])
    report.update({"horizon": H, "per_policy": args.per_policy, "game_episodes": args.game_episodes, "game": game,
              "p_quantiles": {name: np.quantile(v, [0.5, 0.9, 0.99, 0.999]).tolist() for name, v in by_policy.items()},
              "drawn_rate": {name: float(expected_length(alive_after(model, v)).mean()) for name, v in by_policy.items()},
              "grid": grid})
    print("game (capped at", H, "):", {k: round(v, 1) for k, v in game.items()})
    print("q = p (the drawn ends' rate):", {k: round(v, 1) for k, v in report["drawn_rate"].items()})
    for g in grid[:8]:
        print(f"sharpness {g['sharpness']:4.1f} center {g['center']:.2f}: "
              + " ".join(f"{k} {v:6.1f}" for k, v in g["dream"].items()) + f"  rms log ratio {g['rms_log_ratio']:.3f}")
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
