"""The iterative loop in one command: record play, train the world model, train an agent only in its dream,
judge it in the real game, record the agent's own play, and again.

    python -m agents.loop --scenario take_cover --hud --recipe take_cover --out runs/loop-take_cover \\
        --iterations 2 --record strafe:300,jitter:120,sweep:80 --collect 60 --agent-steps 20000 -- \\
        --observe latent --action-set take_cover --reward-scale 0.03 --num-envs 32 --n-steps 64 \\
        --max-episode-steps 600 --eval-worlds real --final-episodes 100

Iteration 0 records with the named data policies (``wham-gym record``'s). Iteration k > 0 records the agent of
iteration k - 1 playing the game, ``--collect`` episodes with its argmax action and as many sampled: an agent
trained in a dream does what that dream rewards, and its own episodes show the world model the consequences it
got wrong (World Models' and DreamerV1's data loop). Each iteration then

1. continues the world model on all the data so far: the tokenizer is trained once, in iteration 0, so the
   agent's view (its tokens or latent) keeps its meaning; the GPT and the reward model train ``--wm-steps`` /
   ``--reward-steps`` more steps from where the previous iteration left them (their cosine schedule stretches
   to the new total, so each iteration starts warmer again);
2. trains a fresh agent (``agents.train_sb3``, the arguments after ``--``) in the new model's dream;
3. judges it in the real game (train_sb3's final evaluation).

Everything resumes: recordings, the training stages and the agent runs pick up where they stopped, and an
iteration whose row is in ``<out>/loop.json`` is not run again. Layout of ``--out``::

    data/<policy>/, data/agent<k>-argmax/, data/agent<k>-sampled/   the recordings (wham-gym record format)
    world_model/                                                     the training stages' checkpoints
    model-<k>/                                                       the world model of iteration k
    agent-<k>/                                                       the agent of iteration k (a train_sb3 run)
    loop.json                                                        one row per iteration
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the agents package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.games.explore import POLICIES  # noqa: E402

from agents import train_sb3  # noqa: E402
from agents.collect import AgentMaker  # noqa: E402


def parse_record(text: str) -> list[tuple[str, int]]:
    """``"strafe:300,jitter:120"`` -> [("strafe", 300), ("jitter", 120)]."""
    out = []
    for item in filter(None, text.split(",")):
        name, _, count = item.partition(":")
        if name not in POLICIES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--record: expected POLICY:EPISODES items with a policy of {', '.join(POLICIES)}, "
                             f"got {item!r}")
        out.append((name, int(count)))
    if not out:
        raise ValueError("--record: name at least one POLICY:EPISODES")
    return out


def recordings(out: Path, args, iteration: int) -> list[Path]:
    """The recording folders iteration ``iteration`` trains on: the data policies' and every earlier agent's."""
    folders = [out / "data" / name for name, _ in parse_record(args.record)]
    for k in range(iteration):
        folders += [out / "data" / f"agent{k}-argmax", out / "data" / f"agent{k}-sampled"]
    return folders


def record_iteration(out: Path, args, iteration: int, game_kwargs: dict) -> None:
    """Iteration 0: the data policies' episodes; iteration k: agent k-1's (argmax and sampled)."""
    from wham_gym.games.recorder import record

    common = dict(workers=1 if iteration else args.workers, max_steps=args.max_steps, env_kwargs=game_kwargs,
                  progress=not args.no_progress)
    if iteration == 0:
        for i, (name, episodes) in enumerate(parse_record(args.record)):
            record(str(out / "data" / name), args.scenario, episodes, name, seed=args.seed + 1000 * i, **common)
        return
    agent = str(out / f"agent-{iteration - 1}")
    for j, mode in enumerate(("argmax", "sampled")):
        maker = AgentMaker(agent, deterministic=mode == "argmax")
        record(str(out / "data" / f"agent{iteration - 1}-{mode}"), args.scenario, args.collect, maker,
               seed=args.seed + 100_000 * iteration + 1000 * j, **common)


def frames_in(folders: list[Path]) -> tuple[int, int]:
    """(episodes, frames) the manifests of ``folders`` count."""
    episodes = frames = 0
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        episodes += manifest["total_episodes"]
        frames += manifest["total_frames"]
    return episodes, frames


def loop_recipe(args, iteration: int):
    """The recipe with the GPT's and the reward model's step totals of ``iteration``."""
    from wham_gym.train.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    wm, rw = recipe.world_model_train, recipe.reward_train
    return replace(recipe, name=f"{Path(args.out).name}-{iteration}",
                   world_model_train=replace(wm, steps=wm.steps + iteration * (args.wm_steps or wm.steps)),
                   reward_train=replace(rw, steps=rw.steps + iteration * (args.reward_steps or 0)))


def train_world_model(out: Path, args, iteration: int, folders: list[Path]) -> Path:
    from wham_gym.train.recipe import run_recipe

    model_dir = out / f"model-{iteration}"
    if (model_dir / "card.json").is_file():
        return model_dir
    return run_recipe([str(f) for f in folders], out / "world_model", model_dir, loop_recipe(args, iteration),
                      progress=not args.no_progress)


def train_agent(out: Path, args, iteration: int, model_dir: Path) -> dict:
    argv = ["--world", "dream", "--model", str(model_dir), "--scenario", args.scenario,
            "--steps", str(args.agent_steps), "--out", str(out / f"agent-{iteration}"), "--seed", str(args.seed),
            *(["--hud"] if args.hud else []), *args.agent_args]
    return train_sb3.train(argv)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.loop", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scenario", required=True, help="ViZDoom scenario of the real game")
    ap.add_argument("--hud", action="store_true", help="the game draws its status bar (as take_cover's models see it)")
    ap.add_argument("--out", required=True, help="the loop's folder (reruns resume)")
    ap.add_argument("--iterations", type=int, default=2, help="iterations in all (0: the data policies' only)")
    ap.add_argument("--record", default="strafe:300", help="iteration 0's data: POLICY:EPISODES,...")
    ap.add_argument("--collect", type=int, default=60, help="agent episodes per iteration, argmax and sampled each")
    ap.add_argument("--max-steps", type=int, default=600, help="episode cap of every recording (10 Hz steps)")
    ap.add_argument("--workers", type=int, default=2, help="recording processes for the data policies")
    ap.add_argument("--recipe", default="take_cover", help="a named recipe or a model card.json recording one")
    ap.add_argument("--wm-steps", type=int, default=None,
                    help="more GPT steps per iteration (default: the recipe's own count)")
    ap.add_argument("--reward-steps", type=int, default=0, help="more reward-model steps per iteration")
    ap.add_argument("--agent-steps", type=int, default=20000, help="env steps of each iteration's agent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("agent_args", nargs=argparse.REMAINDER,
                    help="after --: agents.train_sb3 arguments of every agent (observation, actions, PPO, evaluation)")
    return ap


def main(argv=None) -> list[dict]:
    ap = build_parser()
    args = ap.parse_args(argv)
    args.agent_args = [a for a in args.agent_args if a != "--"]
    try:
        parse_record(args.record)
        loop_recipe(args, 0)
    except (ValueError, FileNotFoundError) as exc:
        ap.error(str(exc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    game_kwargs = {"render_hud": True} if args.hud else {}
    table = out / "loop.json"
    rows = json.loads(table.read_text()) if table.is_file() else []
    for iteration in range(len(rows), args.iterations):
        wall = {}

        def timed(stage, fn, *a):  # each stage's wall-clock goes into the row
            t = time.perf_counter()
            value = fn(*a)
            wall[stage] = time.perf_counter() - t
            return value

        timed("record", record_iteration, out, args, iteration, game_kwargs)
        folders = recordings(out, args, iteration)
        model_dir = timed("world_model", train_world_model, out, args, iteration, folders)
        result = timed("agent", train_agent, out, args, iteration, model_dir)
        episodes, frames = frames_in(folders)
        card = json.loads((model_dir / "card.json").read_text())
        rows.append({"iteration": iteration, "real_episodes": episodes, "real_frames": frames,
                     "recordings": [f.name for f in folders], "model": str(model_dir),
                     "world_model_steps": card["steps"].get("world_model"), "agent": str(out / f"agent-{iteration}"),
                     "agent_steps": result["timesteps"], "real": result.get("real"), "dream": result.get("dream"),
                     "wall_s": {k: round(v, 1) for k, v in wall.items()}})
        atomic_write(str(table), lambda f: json.dump(rows, f, indent=2), binary=False)
        real = result.get("real") or {}
        print(f"iteration {iteration}: {frames} real frames so far; the dream-trained agent scores "
              f"{real.get('mean', float('nan')):.1f} ± {real.get('std', float('nan')):.1f} in the game")
    return rows


if __name__ == "__main__":
    main()
