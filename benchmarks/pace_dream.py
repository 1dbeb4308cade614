"""Does the dream rank a family of policies as the game does? The blind pacers, in a dream and in the game.

``pace:H`` (agents.evaluate's PaceAgent: left H steps, right H steps, the first leg H/2; it
reads no frame) spans take_cover's room at H ~ 26 and scores from ~300 to ~1,030 tics in the
game as H varies (agents/results/take_cover-pace.json). This script dreams every H of that
file (N dreams each, the model's card ends, from its prompts), optionally with retrieval
reinjection, and reports each H's dream return beside the game's, the Spearman rank
correlation over the family, and the H the dream would choose (its best dream return) with
that H's real return. The dream's choice is a policy search done only in the dream.

    python benchmarks/pace_dream.py --model take_cover --episodes 32 --out agents/results/take_cover-pace-dream.json
    python benchmarks/pace_dream.py --retrieval-bank data/take_cover data/take_cover_jitter ... --tag retrieval
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.evaluate import EVAL_SEED, Evaluator, PaceAgent  # noqa: E402
from agents.wrappers import REINJECT_EVERY, RETRIEVAL_FRAMES, retrieval_reinjection  # noqa: E402
from wham_gym import load_model  # noqa: E402
from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.measure.metrics import rank_correlation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="take_cover")
    ap.add_argument("--real", type=Path, default=ROOT / "agents/results/take_cover-pace.json",
                    help="the pacers' game returns (agents.evaluate --policy pace:H --worlds real), keyed by H")
    ap.add_argument("--holds", default=None, help="comma-separated H (default: every H of --real)")
    ap.add_argument("--episodes", type=int, default=32, help="dreams per H (all in one batch)")
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--retrieval-bank", nargs="+", default=None, metavar="PATH")
    ap.add_argument("--retrieval-frames", type=int, default=RETRIEVAL_FRAMES)
    ap.add_argument("--reinject-every", type=int, default=REINJECT_EVERY)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="no reinjection", help="the key this dream's results get in --out")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON to add this dream's results to (other tags kept; a tag's earlier H kept and ranked "
                         "with the new)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    real = json.loads(args.real.read_text())["real"]
    holds = [int(h) for h in (args.holds.split(",") if args.holds else real)]
    missing = [h for h in holds if str(h) not in real]
    if missing:
        ap.error(f"--real {args.real} has no game returns for H = {missing}; measure them with agents.evaluate "
                 f"--policy pace:H --worlds real first")
    model = load_model(args.model)
    dream_kwargs = {}
    if args.retrieval_bank:  # the bank's frames drawn with a fixed seed, as agents.evaluate does
        dream_kwargs["reinjection"] = retrieval_reinjection(model, args.retrieval_bank, args.retrieval_frames,
                                                            args.reinject_every, seed=0)
    scenario = (model.card or {}).get("scenario", "take_cover")
    ev = Evaluator(model, scenario, args.max_steps, num_envs=args.episodes, seed=args.seed,
                   game_kwargs=(model.card or {}).get("game_kwargs") or {}, dream_kwargs=dream_kwargs)
    rows = {}
    try:
        for h in holds:
            t = time.time()
            policy = PaceAgent(h, (model.card or {}).get("action_set", "take_cover"))
            d = ev.run(policy, "dream", args.episodes, policy.wrapping, deterministic=True)
            rows[str(h)] = {"dream": d, "real_mean": real[str(h)]["mean"], "real_ci95": real[str(h)]["ci95"],
                            "seconds": round(time.time() - t, 1)}
            print(f"pace:{h}: dream {d['mean']:.1f} ({d['ci95'][0]:.0f}-{d['ci95'][1]:.0f}, "
                  f"{d['mean_length']:.0f} steps), game {real[str(h)]['mean']:.1f}  [{time.time() - t:.0f} s]",
                  flush=True)
    finally:
        ev.close()
    doc = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    earlier = doc.get("dreams", {}).get(args.tag, {}).get("pacers", {})
    if earlier:  # more H for a dream measured before: one family, ranked together
        if earlier[next(iter(earlier))]["dream"]["episodes"] != args.episodes:
            ap.error(f"--out {args.out} holds {args.tag!r} pacers measured over another number of dreams")
        rows = {**earlier, **rows}
    rows = dict(sorted(rows.items(), key=lambda kv: int(kv[0])))
    holds = [int(h) for h in rows]
    dream = [rows[str(h)]["dream"]["mean"] for h in holds]
    game = [rows[str(h)]["real_mean"] for h in holds]
    chosen = holds[int(np.argmax(dream))]
    result = {"pacers": rows, "spearman": rank_correlation(dream, game), "chosen_hold": chosen,
              "chosen_real_mean": rows[str(chosen)]["real_mean"], "best_real_hold": holds[int(np.argmax(game))],
              "settings": {"model": args.model, "episodes": args.episodes, "max_steps": args.max_steps,
                           "seed": args.seed, "retrieval_bank": args.retrieval_bank,
                           "retrieval_frames": args.retrieval_frames if args.retrieval_bank else None,
                           "reinject_every": args.reinject_every if args.retrieval_bank else None,
                           "ends": "the model card's", "threads": args.threads}}
    print(json.dumps({k: result[k] for k in ("spearman", "chosen_hold", "chosen_real_mean", "best_real_hold")}))
    if args.out:
        doc.update({"what": __doc__.splitlines()[0], "date": str(date.today()),
                    "device": f"{platform.processor() or platform.machine()} CPU, torch {torch.__version__}"})
        doc.setdefault("dreams", {})[args.tag] = result
        atomic_write(args.out, lambda f: f.write(json.dumps(doc, indent=1) + "\n"), binary=False)


if __name__ == "__main__":
    main()
