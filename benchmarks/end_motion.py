"""Give a model's risk ends a memory of how far the player moved: fit a position probe and the ends' motion term.

take_cover's fireballs fly at where the player stood ~1.5 s before they hit; a world model with a 4-frame
context cannot see that far back, and its end probability barely tells a player who turns at a wall (safe in
the game) from one who stands in the middle (wrappers aside, the dream's verdict on where it is safe is what
limits its agents; agents/RESULTS.md). This script

1. fits a :class:`~wham_gym.position.PositionProbe` (image tokens -> ``position_y``) on the recordings'
   training episodes and reports its error on their held-out ones;
2. reads, on every real transition of the recordings, the GPT's end probability p (teacher-forced, as the dream
   at ``--temperature`` reads it) and the probe's displacement over ``--lag`` steps, and fits
   ``q = sigmoid(a * logit p + b + w * log1p(moved / scale))`` (:func:`~wham_gym.rewards.fit_end_risk_motion`)
   beside the p-only fit and the motion term alone (``q = sigmoid(b + w * log1p(moved / scale))``,
   :class:`~wham_gym.rewards.MotionTermination`, which a dream's drawn fireballs cannot sway), with each
   recording's mean q against the game's ends per step and their AUCs;
3. with ``--dream-policies``: dreams that never end under blind policies, scored with the fits' expected
   lengths against the game's (the check on dreamt frames);
4. with ``--write-card`` (``--write-card motion-only``: the motion term alone): writes the probe beside the
   model's card and the fitted ends into it, so ``WHAMVectorEnv`` (and agents.train_sb3 without --dream-ends)
   end its dreams by them; with ``--option NAME`` as a named alternative instead (``card["ends_options"]``,
   the env's ``ends=NAME``, agents.train_sb3 ``--dream-ends card:NAME``), the card's default ends kept.

    python benchmarks/end_motion.py --model runs/tc-m2/model --data data/take_cover data/take_cover_jitter \\
        data/take_cover_sweep data/take_cover_still data/take_cover_pace data/take_cover_bounce \\
        --cache runs/tc-m1/token-cache --dream-policies still,jitter,strafe,pace --write-card \\
        --out benchmarks/results/end_motion_m2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import end_risk  # noqa: E402
from end_risk import expected_length, real_end_probs, real_sources  # noqa: E402
from take_cover import game_lengths  # noqa: E402

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.data.episodes import read_game_variables  # noqa: E402
from wham_gym.model import load_model  # noqa: E402
from wham_gym.model.checkpoint import CARD_FILE  # noqa: E402
from wham_gym.position import PROBE_FILE, PositionProbe, fit_position_probe  # noqa: E402
from wham_gym.rewards import (EndRiskTermination, Motion, MotionTermination, fit_end_risk,  # noqa: E402
                              fit_end_risk_motion, fit_motion_ends)
from wham_gym.train.data import split_sources, tokenize_episodes  # noqa: E402
from wham_gym.train.reward import probability_metrics  # noqa: E402


def frames_and_positions(model, sources: list[str], cache, variable: str = "position_y"):
    """Every recorded frame's image tokens and game variable, episode by episode: [(tokens (T, S), y (T,))]."""
    out = []
    for s, e in zip(sources, tokenize_episodes(model, sources, cache, progress=False, end_frame="black")):
        names, g = read_game_variables(s)
        if g is None or variable not in names:
            raise ValueError(f"{s}: the probe learns the recorded game variable {variable!r}; this episode has "
                             f"{list(names) or 'none'} (`wham-gym record` keeps the game's variables)")
        y = g[:, names.index(variable)]
        out.append((e.tokens[:len(y)], y))
    return out


@torch.no_grad()
def readings(probe: PositionProbe, tokens: np.ndarray) -> np.ndarray:
    """The probe's reading of recorded frames, image tokens (T, S) -> (T,) float64."""
    return probe(torch.from_numpy(tokens.astype(np.int64))).double().numpy()


def transition_moved(model, motion: Motion, episodes) -> np.ndarray:
    """The motion term's displacement at each transition :func:`real_end_probs` scores, in its order: at the frame
    t the action was taken at, :meth:`Motion.displacements` of the probe's readings (|y(t) - y(max(t - lag, 0))|,
    jumps beyond its ``max_step`` skipped), as :meth:`Motion.track` reads a dream."""
    w = model.config.seq_len - 1
    out = []
    for tokens, y in episodes:
        out.append(motion.displacements(readings(motion.probe, tokens))[w - 1:len(y)])
    return np.concatenate(out)


def hit_lag_scan(sources: list[str], lags: list[int]) -> dict:
    """How well the true displacement over each lag ranks the game's hits (``damage_taken`` rising on the next
    step): the AUC of -|y(t) - y(t - lag)| over every step with a full lag behind it. The lag at which it peaks is
    a fireball's flight time, the memory the ends need."""
    ys, hits = [], []
    for s in sources:
        names, g = read_game_variables(s)
        names = list(names)
        if g is None or not {"position_y", "damage_taken"} <= set(names):
            raise ValueError(f"{s}: the lag scan reads the recorded position_y and damage_taken; this episode has "
                             f"{names or 'none'}")
        ys.append(g[:, names.index("position_y")].astype(np.float64))
        hits.append(np.r_[np.diff(g[:, names.index("damage_taken")]) > 0, False])
    start = max(lags)
    ys, hits = [y for y in ys if len(y) > start], [h for h in hits if len(h) > start]  # a full lag behind
    out = {}
    for lag in lags:
        moved = np.concatenate([np.abs(y[start:] - y[start - lag:len(y) - lag]) for y in ys])
        hit = np.concatenate([h[start:] for h in hits])
        out[str(lag)] = probability_metrics(1 / (1 + moved), hit).get("term_auc", float("nan"))  # a rank: fewer
        # map units moved, more likely a hit
    return out


JUMPS = (80, 120, 150, 200)  # map units; the game's largest true step in one 10 Hz step is 69


def jump_shares(episodes: list[np.ndarray]) -> dict:
    """The share of steps over which the probe's reading moved more than each of :data:`JUMPS` map units, over
    episodes' readings [(T,)]: on real frames the probe's error, on dreamt ones also the dream redrawing the
    player (what ``--max-step`` skips)."""
    d = np.concatenate([np.abs(np.diff(y)) for y in episodes])
    return {str(k): float((d > k).mean()) for k in JUMPS}


class Recorder(end_risk.Recorder):
    """Ends nothing; keeps each step's end probability p, the probe's reading and the motion term's displacement."""

    def __init__(self, model, motion: Motion):
        super().__init__(model)
        self.motion, self.moved, self.readings = motion, [], []

    def __call__(self, ctx):
        self.moved.append(self.motion.track(ctx).numpy(force=True))
        self.readings.append(self.motion.probe(ctx.prev_tokens).numpy(force=True))
        return super().__call__(ctx)


def dream_readings(model, motion: Motion, policies: list[str], per_policy: int, horizon: int, seed: int,
                   temperature: float):
    """(p, moved, readings): three (len(policies) * per_policy, horizon) arrays from dreams that never end,
    policy-major."""
    rec = Recorder(model, motion)
    p = end_risk.dream_end_probs(model, policies, per_policy, horizon, seed, temperature, recorder=rec)
    return p, np.stack(rec.moved, 1), np.stack(rec.readings, 1)


def scan_report(data: list[str]) -> dict:
    """:func:`hit_lag_scan` over every episode of the recordings, printed."""
    scan = hit_lag_scan([s for rec in data for s in real_sources(rec, all_episodes=True)], [1, 3, 5, 10, 15, 20, 30])
    print("the game's hits ranked by the true displacement over each lag (AUC): "
          + ", ".join(f"{k}: {v:.2f}" for k, v in scan.items()))
    return scan


def with_ends(card: dict, ends: dict, option: str | None = None) -> dict:
    """``card`` with ``ends`` as its default ends, or as its alternative ``option`` (its default kept)."""
    if option is None:
        return {**card, "ends": ends}
    return {**card, "ends_options": {**(card.get("ends_options") or {}), option: ends}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model trained with black end frames")
    ap.add_argument("--data", nargs="+", required=True, help="recordings with the game's variables (position_y)")
    ap.add_argument("--lag", type=int, default=15, help="steps the displacement spans (take_cover: a fireball's "
                    "flight, ~1.5 s)")
    ap.add_argument("--scale", type=float, default=50.0, help="map units: the term is log1p(moved / scale)")
    ap.add_argument("--max-step", type=float, default=None, metavar="UNITS",
                    help="skip a reading's jump of more than UNITS map units in one step (the dream redrawing the "
                    "player, not motion; take_cover: 120); default: no limit")
    ap.add_argument("--probe", default=None, metavar="FILE",
                    help=f"read positions with this probe (e.g. the model's own {PROBE_FILE}) instead of fitting one")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--cache", default=None, help="a token cache to reuse (the model's run directory's), else a "
                    "temporary one")
    ap.add_argument("--dream-policies", default=None, help="e.g. still,jitter,strafe,pace: never-ending dreams "
                    "scored with both fits, against the game's lengths under the same policies")
    ap.add_argument("--per-policy", type=int, default=32)
    ap.add_argument("--game-episodes", type=int, default=48)
    ap.add_argument("--horizon", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-card", nargs="?", const="motion", choices=("motion", "motion-only"), default=None,
                    help=f"write {PROBE_FILE} beside the model's card and the fitted ends into card.json: motion "
                    "(the GPT's end probability with the motion term, the default) or motion-only (the term alone)")
    ap.add_argument("--option", default=None, metavar="NAME",
                    help="with --write-card: write the ends as the card's alternative NAME (card['ends_options']) "
                    "and keep its default ends")
    ap.add_argument("--scan-only", action="store_true", help="only the lag scan (step 0: which lag ranks the game's "
                    "hits best), no model pass")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.option is not None and not args.write_card:
        ap.error("--option names the ends --write-card writes; pass --write-card [motion-only] too")
    torch.set_num_threads(args.threads)
    report = {"model": args.model, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
              "temperature": args.temperature, "lag": args.lag, "scale": args.scale, "max_step": args.max_step,
              "data": args.data}

    report["hit_auc_by_lag"] = scan_report(args.data)
    if args.scan_only:
        atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
        return
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        train = {rec: frames_and_positions(model, split_sources(rec)[0], cache) for rec in args.data}
        held = {rec: frames_and_positions(model, split_sources(rec)[1], cache) for rec in args.data}
        ys = np.concatenate([y for eps in train.values() for _, y in eps])
        if args.probe:
            probe = PositionProbe.load(args.probe)
        else:
            tokens = np.concatenate([t for eps in train.values() for t, _ in eps])
            probe = fit_position_probe(tokens, ys, int(model.tokenizer.vocab_size), progress=True)
        ht = np.concatenate([t for eps in held.values() for t, _ in eps])
        hy = np.concatenate([y for eps in held.values() for _, y in eps])
        err = readings(probe, ht) - hy
        report["probe"] = {"train_frames": len(ys), "heldout_frames": len(hy), "heldout_rmse": float(np.sqrt(
            np.mean(err ** 2))), "heldout_std": float(hy.std()), "r2": float(1 - np.mean(err ** 2) / hy.var())}
        print(f"position probe: held-out RMSE {report['probe']['heldout_rmse']:.1f} map units "
              f"(std {hy.std():.1f}, R2 {report['probe']['r2']:.3f})")

        real, real_jumps = {}, {}
        for rec in args.data:
            sources = real_sources(rec, all_episodes=True)
            p, ended = real_end_probs(model, sources, cache, args.temperature)
            eps = frames_and_positions(model, sources, cache)
            real[rec] = (p, ended, transition_moved(model, Motion(probe, args.lag, max_step=args.max_step), eps))
            real_jumps[rec] = jump_shares([readings(probe, t) for t, _ in eps])
    p, ended, moved = (np.concatenate([v[i] for v in real.values()]) for i in range(3))
    sharp0, center0 = fit_end_risk(p, ended)
    sharp, center, weight = fit_end_risk_motion(p, ended, moved, args.scale)
    plain = EndRiskTermination(model, sharp0, center0)
    motion = Motion(probe, args.lag, args.scale, weight, args.max_step)
    withm = EndRiskTermination(model, sharp, center, motion)
    bias_k, weight_k = fit_motion_ends(ended, moved, args.scale)
    alone = MotionTermination(model, bias_k, Motion(probe, args.lag, args.scale, weight_k, args.max_step))
    report["fit"] = {"p_only": {"sharpness": sharp0, "center": center0},
                     "motion": {"sharpness": sharp, "center": center, "weight": weight},
                     "motion_only": {"bias": bias_k, "weight": weight_k},
                     "transitions": len(p), "ends": int(ended.sum())}
    print(f"fitted on {len(p)} real transitions ({int(ended.sum())} ends): p only ({sharp0:.2f}, {center0:.2f}); "
          f"with motion ({sharp:.2f}, {center:.2f}, weight {weight:.2f}); motion alone (bias {bias_k:.2f}, weight "
          f"{weight_k:.2f})")
    report["recordings"] = {}
    for rec, (p_r, e_r, m_r) in real.items():
        q0 = plain.probability(torch.from_numpy(p_r)).numpy()
        q1 = withm.probability(torch.from_numpy(p_r), torch.from_numpy(m_r)).numpy()
        q2 = alone.probability(None, torch.from_numpy(m_r)).numpy()
        row = {"transitions": len(p_r), "game_ends_per_step": float(e_r.mean()),
               "q_p_only": float(q0.mean()), "q_motion": float(q1.mean()), "q_motion_only": float(q2.mean()),
               "auc_p_only": probability_metrics(q0, e_r).get("term_auc", float("nan")),
               "auc_motion": probability_metrics(q1, e_r).get("term_auc", float("nan")),
               "auc_motion_only": probability_metrics(q2, e_r).get("term_auc", float("nan")),
               "jump_shares": real_jumps[rec]}
        report["recordings"][rec] = row
        print(f"{rec}: game {row['game_ends_per_step']:.4f} a step; q p-only {row['q_p_only']:.4f} "
              f"(AUC {row['auc_p_only']:.2f}), with motion {row['q_motion']:.4f} (AUC {row['auc_motion']:.2f}), "
              f"motion alone {row['q_motion_only']:.4f} (AUC {row['auc_motion_only']:.2f})")

    if args.dream_policies:
        policies = args.dream_policies.split(",")
        card = model.card or {}
        game = {}
        for name in policies:
            lengths, _ = game_lengths(card.get("scenario") or "take_cover", card.get("game_kwargs") or {},
                                      args.game_episodes, 600, 20_000, name)
            game[name] = float(np.minimum(lengths, args.horizon).mean())
        dp, dm, dy = dream_readings(model, Motion(probe, args.lag, args.scale, weight, args.max_step), policies,
                                args.per_policy, args.horizon, args.seed, args.temperature)
        dream = {}
        for i, name in enumerate(policies):
            sl = slice(i * args.per_policy, (i + 1) * args.per_policy)
            q0 = plain.probability(torch.from_numpy(dp[sl])).numpy()
            q1 = withm.probability(torch.from_numpy(dp[sl]), torch.from_numpy(dm[sl])).numpy()
            q2 = alone.probability(None, torch.from_numpy(dm[sl])).numpy()
            dream[name] = {"game": game[name], "p_only": float(expected_length(np.cumprod(1 - q0, 1)).mean()),
                           "motion": float(expected_length(np.cumprod(1 - q1, 1)).mean()),
                           "motion_only": float(expected_length(np.cumprod(1 - q2, 1)).mean()),
                           "mean_moved": float(dm[sl][:, args.lag:].mean()),
                           "jump_shares": jump_shares(list(dy[sl][:, 1:]))}  # from its first dreamt frame
        for kind in ("p_only", "motion", "motion_only"):
            dream[f"rms_log_ratio_{kind}"] = float(np.sqrt(np.mean(
                [np.log(dream[k][kind] / game[k]) ** 2 for k in policies])))
        report["dream"] = {"per_policy": args.per_policy, "horizon": args.horizon, **dream}
        for name in policies:
            d = dream[name]
            print(f"dream {name}: game {d['game']:.1f} steps; p only {d['p_only']:.1f}, with motion {d['motion']:.1f}, "
                  f"motion alone {d['motion_only']:.1f} (mean displacement {d['mean_moved']:.0f}; reading jumps "
                  f"> 120 units on {d['jump_shares']['120']:.2%} of steps)")
        print(f"rms log ratio: p only {dream['rms_log_ratio_p_only']:.3f}, with motion "
              f"{dream['rms_log_ratio_motion']:.3f}, motion alone {dream['rms_log_ratio_motion_only']:.3f}")

    if args.write_card:
        model_dir = Path(args.model)
        if not (model_dir / CARD_FILE).is_file():
            raise SystemExit(f"--write-card: {model_dir} has no {CARD_FILE}; give a model directory")
        probe.save(model_dir / PROBE_FILE)
        card = json.loads((model_dir / CARD_FILE).read_text())
        fitted = f"benchmarks/end_motion.py on {', '.join(Path(r).name for r in args.data)}"
        if args.write_card == "motion-only":
            ends = {"kind": "motion", "bias": bias_k, "temperature": args.temperature,
                    "motion": alone.motion.card(PROBE_FILE), "fitted": fitted}
        else:
            ends = {"kind": "risk", "sharpness": sharp, "center": center, "temperature": args.temperature,
                    "motion": motion.card(PROBE_FILE), "fitted": fitted}
        card = with_ends(card, ends, args.option)
        atomic_write(model_dir / CARD_FILE, lambda f: json.dump(card, f, indent=2), binary=False)
        print(f"wrote {model_dir / PROBE_FILE} and the ends in {model_dir / CARD_FILE}")
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
