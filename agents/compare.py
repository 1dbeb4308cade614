"""Side by side on one scenario and one step budget: baselines, PPO in the real game and in the dream.

Rows (``--rows``; the SAC rows only with ``--sac``):

    random               uniform random controller vectors (an action set's presets with ``--action-set``)
    behaviour            WHAM's behaviour policy: the model's own predicted actions, fed the frames it sees
    ppo-real             PPO trained in the real game
    ppo-real-frames      PPO trained in the real game on as many real frames as the world model saw
                         (``--real-frames``; ``--real-frames / --action-repeat`` decisions): sample efficiency
    ppo-dream            PPO trained in the dream (the model's learned reward and termination)
    ppo-dream-retrieval  PPO trained in the dream with retrieval reinjection (nearest real frame every K steps)
    ppo-dream-lockstep   PPO trained in the dream with lockstep reinjection (a real game beside each dream)
    sac-real             SAC trained in the real game (over the action set's axes with ``--action-set``)
    sac-dream            SAC trained in the dream

A dream row takes a temperature suffix, ``ppo-dream-t1.15``: trained (and evaluated in the
dream) at that sampling temperature; ``--temperatures 0.9,1.15,1.3`` expands every dream row so,
the anchor's sweep (World Models: colder dreams get exploited).

Further train_sb3 arguments: ``--train-args`` for every training row, ``--dream-args`` for the dream
rows, ``--sac-args`` for the SAC rows (last, so their optimiser settings win over ``--train-args``').
What a row is (``--algo``, ``--world``, ``--temperature``, ``--reinjection``) comes from its name only.

Every row is evaluated in the real game and in the dream on the same episodes (one
evaluation seed). A row whose result is already in ``<results-dir>/<name>.json`` is skipped
(``--redo`` to run it again); a training row resumes its run directory. Then the learning
curves are drawn to ``<results-dir>/<name>.png`` and the tables in ``--results-md`` regenerated.

    python -m agents.compare --steps 100000 --sac
    python -m agents.compare --steps 20000 --rows random,behaviour,ppo-dream --name quick
    python -m agents.compare --steps 25600 --model take_cover --scenario take_cover --action-set take_cover \
        --hud --action-repeat 4 --rows random,ppo-real,ppo-real-frames,ppo-dream --temperatures 0.9,1.15 \
        --real-frames 109458 --num-envs 32 --max-episode-steps 600 --episodes 100 --dream-episodes 32 \
        --eval-every 6400 --eval-envs 32 --train-args "--observe latent --reward-scale 0.03 --gamma 0.96 \
        --n-steps 32 --n-epochs 10 --learning-rate 5e-4 --eval-worlds real" --dream-args "--dream-starts \
        data/take_cover data/take_cover_jitter data/take_cover_sweep data/take_cover_still data/take_cover_pace"

(agents/RESULTS.md names the command behind each take_cover table.)
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the agents package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.threads import parse_threads, set_threads  # noqa: E402

from agents.evaluate import EVAL_SEED, BehaviourAgent, Evaluator, RandomAgent  # noqa: E402
from agents.runs import RunDir, dream_settings, read_json, write_json  # noqa: E402
from agents.train_sb3 import device_name, resolve_device, train  # noqa: E402
from agents.wrappers import DEFAULT_MAX_STEPS, DEFAULT_SCENARIO  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROWS = {  # name -> (label, train_sb3 arguments; None for the baselines evaluated here)
    "random": ("Random policy", None),
    "behaviour": ("WHAM behaviour policy", None),
    "ppo-real": ("PPO, trained in the real game", ["--algo", "ppo", "--world", "real"]),
    "ppo-real-frames": ("PPO, real game, the world model's real frames as steps", ["--algo", "ppo", "--world", "real"]),
    "ppo-dream": ("PPO, trained in the dream", ["--algo", "ppo", "--world", "dream"]),
    "ppo-dream-retrieval": ("PPO, dream + retrieval reinjection",
                            ["--algo", "ppo", "--world", "dream", "--reinjection", "retrieval"]),
    "ppo-dream-lockstep": ("PPO, dream + lockstep reinjection",
                           ["--algo", "ppo", "--world", "dream", "--reinjection", "lockstep"]),
    "sac-real": ("SAC, trained in the real game", ["--algo", "sac", "--world", "real"]),
    "sac-dream": ("SAC, trained in the dream", ["--algo", "sac", "--world", "dream"]),
}
DREAM_ROWS = [r for r, (_, argv) in ROWS.items() if argv and "dream" in argv]
# What a row is (its algorithm, world, dream temperature, reinjection): set by its name alone, never by the
# --train-args / --dream-args / --sac-args that follow it (argparse would keep their value silently).
ROW_FLAGS = ("--algo", "--world", "--temperature", "--reinjection")
BEGIN, END = "<!-- agents.compare: begin -->", "<!-- agents.compare: end -->"
# The classic result on take_cover, quoted under its tables.
ANCHOR = ("World Models (Ha & Schmidhuber 2018), the anchor: a controller trained only in an MDN-RNN dream built from "
          "10,000 random-policy episodes scores 1092 ± 556 tics in the real game (paper); their released agent "
          "973 ± 540 over 100 episodes (hardmaru/WorldModelsExperiments, doomrnn/results.txt); their random policy "
          "210 ± 108.")


def split_row(row: str) -> tuple[str, str | None]:
    """A row name -> (its base row, its dream temperature or None); KeyError for an unknown name."""
    if row in ROWS:
        return row, None
    base, sep, t = row.rpartition("-t")
    try:
        ok = bool(sep) and base in DREAM_ROWS and float(t) > 0
    except ValueError:
        ok = False
    if not ok:
        raise KeyError(row)
    return base, t


def is_dream_row(row: str) -> bool:
    """Whether a row (temperature rows included) trains in the dream."""
    return split_row(row)[0] in DREAM_ROWS


def is_sac_row(row: str) -> bool:
    """Whether a row (temperature rows included) trains SAC."""
    return "sac" in (ROWS[split_row(row)[0]][1] or [])


def row_spec(row: str) -> tuple[str, list[str] | None]:
    """(label, train_sb3 arguments) of a row, temperature rows included."""
    base, t = split_row(row)
    label, argv = ROWS[base]
    return (label, argv) if t is None else (f"{label}, T = {t}", [*argv, "--temperature", t])


def row_order(row: str) -> tuple:
    """The table's order: ROWS' order, a dream row's temperatures ascending after it."""
    base, t = split_row(row)
    return list(ROWS).index(base), -1.0 if t is None else float(t)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.compare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, required=True, help="env-step budget of every training row")
    ap.add_argument("--name", default=None, help="comparison name (default: <scenario>-<steps>)")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {', '.join(ROWS)} (default: all; "
                                                 "the SAC rows only with --sac)")
    ap.add_argument("--sac", action="store_true", help="add the SAC rows (sac-real, sac-dream)")
    ap.add_argument("--redo", action="store_true", help="run rows again even if their result exists")
    ap.add_argument("--temperatures", default=None,
                    help="comma-separated dream temperatures: each dream row is trained at each (ppo-dream-t<T>)")
    ap.add_argument("--real-frames", type=int, default=None,
                    help="real frames the world model was trained on: the ppo-real-frames row's step budget and "
                         "the dream rows' 'real frames used'")
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--action-set", default=None, help="act through a named action set in every row (the random "
                                                       "row draws its presets uniformly)")
    ap.add_argument("--hud", action="store_true", help="the real game draws Doom's status bar, as the model saw it")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--max-episode-steps", type=int, default=DEFAULT_MAX_STEPS)
    ap.add_argument("--episodes", type=int, default=20, help="real-game episodes in each row's final evaluation")
    ap.add_argument("--dream-episodes", type=int, default=None,
                    help="dream episodes in each row's final evaluation (default: --episodes)")
    ap.add_argument("--eval-every", type=int, default=None, help="training rows: env steps between evaluations "
                                                                  "(default: steps / 10)")
    ap.add_argument("--eval-episodes", type=int, default=10, help="real-game episodes per periodic evaluation")
    ap.add_argument("--dream-eval-episodes", type=int, default=None,
                    help="dream episodes per periodic evaluation (default: --eval-episodes)")
    ap.add_argument("--eval-envs", type=int, default=10)
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    ap.add_argument("--obs-size", default="72x120")
    ap.add_argument("--frame-stack", type=int, default=4)
    ap.add_argument("--retrieval-bank", nargs="+", default=None, help="recorded episodes for the retrieval row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=parse_threads, default=None,
                    help="torch threads here and in the training rows: a positive int, or auto (default)")
    ap.add_argument("--train-args", default="", help="more train_sb3 arguments for every training row, quoted")
    ap.add_argument("--dream-args", default="",
                    help="more train_sb3 arguments for the dream rows only, quoted (e.g. --dream-starts PATH ...)")
    ap.add_argument("--sac-args", default="",
                    help="more train_sb3 arguments for the SAC rows only, after --train-args so they win "
                         "(e.g. --learning-rate 3e-4 --batch-size 256 --gradient-steps 2)")
    ap.add_argument("--action-repeat", type=int, default=1, metavar="K",
                    help="every decision held for K steps of the world, in every row (the random baseline too); "
                         "agent steps count decisions, real frames count steps of the world")
    ap.add_argument("--inline", action="store_true", help="train in this process instead of one subprocess per row")
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "agents"))
    ap.add_argument("--results-dir", default=str(REPO / "agents" / "results"))
    ap.add_argument("--results-md", default=str(REPO / "agents" / "RESULTS.md"))
    return ap


def versions() -> dict:
    import gymnasium
    import stable_baselines3
    import vizdoom

    import wham_gym

    return {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__, "vizdoom": vizdoom.__version__, "wham_gym": wham_gym.__version__}


def known_row(row: str) -> bool:
    try:
        split_row(row)
    except KeyError:
        return False
    return True


def row_steps(args, row: str) -> int:
    """A training row's budget in decisions; the frames row gets the world model's real frames (PPO rounds up to whole
    rollouts)."""
    return args.real_frames // args.action_repeat if split_row(row)[0] == "ppo-real-frames" else args.steps


def train_argv(args, row: str, out: str) -> list[str]:
    """train_sb3's arguments for a row; paths made absolute (its subprocess runs in the repository)."""
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model  # a path, or a preset name
    argv = list(row_spec(row)[1]) + [
        "--steps", str(row_steps(args, row)), "--model", model, "--scenario", args.scenario,
        "--num-envs", str(args.num_envs), "--max-episode-steps", str(args.max_episode_steps),
        "--final-episodes", str(args.episodes), "--final-dream-episodes", str(args.dream_episodes),
        "--eval-every", str(args.eval_every),
        "--eval-episodes", str(args.eval_episodes), "--eval-envs", str(args.eval_envs),
        "--dream-eval-episodes", str(args.dream_eval_episodes),
        "--eval-seed", str(args.eval_seed), "--obs-size", args.obs_size, "--frame-stack", str(args.frame_stack),
        "--seed", str(args.seed), "--device", args.device, "--out", out]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.action_set:
        argv += ["--action-set", args.action_set]
    if args.hud:
        argv += ["--hud"]
    if args.action_repeat != 1:
        argv += ["--action-repeat", str(args.action_repeat)]
    if split_row(row)[0] == "ppo-dream-retrieval" and args.retrieval_bank:
        argv += ["--retrieval-bank", *(os.path.abspath(p) for p in args.retrieval_bank)]
    argv += shlex.split(args.train_args) + (shlex.split(args.dream_args) if is_dream_row(row) else [])
    # Last, so that the SAC row's own settings win over --train-args' (argparse keeps a flag's last value).
    return argv + (shlex.split(args.sac_args) if is_sac_row(row) else [])


def stored_path(path: str) -> str:
    """Paths in results files: relative to the repository when inside it, so the files travel with it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if Path(path).is_relative_to(REPO) else path


def repo_path(path: str) -> str:
    return path if os.path.isabs(path) else str(REPO / path)


def run_training(args, row: str) -> dict:
    out = os.path.abspath(os.path.join(args.runs_dir, args.name, row))
    argv = train_argv(args, row, out)
    if args.inline:
        result = train(argv + ["--no-progress"])
    else:  # a process per row: a crash or Ctrl-C loses nothing but that row's last checkpoint interval
        subprocess.run([sys.executable, "-m", "agents.train_sb3", *argv], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                      os.environ.get("PYTHONPATH")]))})
        result = RunDir(out).read_result()
    return {"label": row_spec(row)[0], "real": result.get("real"), "dream": result.get("dream"),
            "env_steps": result["timesteps"],
            "real_frames": args.real_frames if is_dream_row(row) else result["timesteps"] * args.action_repeat,
            "train_wall_s": result["train_wall_s"],
            "eval_wall_s": result["eval_wall_s"], "steps_per_s": result["train_steps_per_s"],
            "device": result["device"], "run_dir": stored_path(out)}


def complete_row(args, row: dict) -> bool:
    """Add what a trained row's run did not measure, in one evaluator; returns whether anything was added.

    * ``real_sampled``: the policy in the real game acting with sampled actions, as it did in
      training. The mean action of a Gaussian policy is not a policy the agent ever ran: buttons
      are pressed at >= 0.5, so a fire button whose mean sits just under it never fires, however
      often the sampled policy does.
    * ``dream``: the dream return (mean action, as the run's own final evaluation), when the run
      evaluated in the real game only (``--train-args "--eval-worlds real"``, which spares the
      periodic evaluations a slow dream): every row of the table keeps both returns.
    """
    todo = [(key, world, deterministic) for key, world, deterministic in
            (("real_sampled", "real", False), ("dream", "dream", True)) if row.get(key) is None]
    if not row.get("run_dir") or not todo:
        return False
    from agents.evaluate import load_policy

    policy, wrapping, cfg = load_policy(repo_path(row["run_dir"]), device=args.device)
    model = None
    if row.get("dream") is None or cfg.get("observe") == "latent" or cfg.get("tokenizer_view"):
        from wham_gym import load_model  # the dream's world model; the real game's frames pass through its tokenizer

        model = load_model(cfg["model"], device=resolve_device(args.device))
    ev = Evaluator(model, args.scenario, args.max_episode_steps, num_envs=args.eval_envs, seed=args.eval_seed,
                   game_kwargs=cfg.get("game_kwargs"), dream_kwargs=dream_settings(cfg))
    try:
        for key, world, deterministic in todo:
            episodes = args.episodes if world == "real" else args.dream_episodes
            row[key] = ev.run(policy, world, episodes, wrapping, deterministic=deterministic)
    finally:
        ev.close()
    return True


def run_baseline(args, row: str, model, evaluator: Evaluator) -> dict:
    out = {}
    for world, episodes in (("real", args.episodes), ("dream", args.dream_episodes)):
        n = min(args.eval_envs, episodes)  # the envs the evaluator uses; the behaviour policy needs a slot each
        if row == "random":
            policy = RandomAgent(seed=args.seed, action_set=args.action_set, action_repeat=args.action_repeat)
        else:
            policy = BehaviourAgent(model, n, seed=args.seed)
        out[world] = evaluator.run(policy, world, episodes, policy.wrapping)
    return {"label": ROWS[row][0], **out, "env_steps": 0, "real_frames": 0, "train_wall_s": 0.0,
            "eval_wall_s": round(sum(r["seconds"] for r in out.values()), 3), "steps_per_s": None,
            "device": device_name(resolve_device(args.device)), "run_dir": None}


def plot_curves(results: dict, path: str) -> None:
    """Real-game and dream evaluation return vs env steps, and the training-world episode return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharex=True)
    panels = [("real", "return in the real game"), ("dream", "return in the dream")]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (row, res) in enumerate(sorted(results["rows"].items(), key=lambda kv: row_order(kv[0]))):
        c = cycle[i % len(cycle)]
        if res.get("run_dir"):
            run = RunDir(repo_path(res["run_dir"]))
            entries = run.eval_entries()
            for ax, (world, _) in zip(axes, panels):
                pts = [(e["timesteps"], e[world]["mean"], e[world]["std"]) for e in entries if world in e]
                if not pts and res.get(world):  # measured once, at the end (complete_row): one point
                    pts = [(res["env_steps"], res[world]["mean"], res[world]["std"])]
                if pts:
                    x, y, s = (list(v) for v in zip(*pts))
                    ax.plot(x, y, "o-", color=c, label=res["label"], ms=3)
                    lo, hi = [a - b for a, b in zip(y, s)], [a + b for a, b in zip(y, s)]
                    ax.fill_between(x, lo, hi, color=c, alpha=0.15)
            rows = [r for r in run.progress_rows() if r.get("rollout/ep_rew_mean") not in (None, "")]
            if rows:
                axes[2].plot([float(r["time/total_timesteps"]) for r in rows],
                             [float(r["rollout/ep_rew_mean"]) for r in rows], color=c, label=res["label"])
        else:
            for ax, (world, _) in zip(axes, panels):
                if res.get(world):
                    ax.axhline(res[world]["mean"], color=c, ls="--", label=res["label"])
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title)
    axes[2].set_title("training episode return (in its own world)")
    for ax in axes:
        ax.set_xlabel("agent steps" + (" (decisions)" if results.get("settings", {}).get("action_repeat", 1) > 1
                                       else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("episode return (mean ± std)")
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(f"{results['name']}: {results['scenario']}, {results['steps']} env steps, model {results['model']}")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ret(r: dict | None) -> str:
    """mean ± std (95 % CI, episodes); results from before the interval was kept give (episodes)."""
    if not r:
        return "–"
    ci = f"{r['ci95'][0]:.1f}–{r['ci95'][1]:.1f}, " if r.get("ci95") else ""
    return f"{r['mean']:.2f} ± {r['std']:.2f} ({ci}{r['episodes']})"


def dream_predicts_real(results: dict) -> str | None:
    """Spearman's rank correlation of dream and real return across the trained rows, as a sentence."""
    from agents.evaluate import rank_correlation

    pairs = [(r["dream"]["mean"], r["real"]["mean"]) for r in results["rows"].values()
             if r.get("run_dir") and r.get("real") and r.get("dream")]
    if len(pairs) < 2:
        return None
    rho = rank_correlation(*zip(*pairs))
    return (f"Dream return against real return across the {len(pairs)} trained rows: Spearman's rank correlation "
            f"{rho:.2f}.")


def _secs(s: float | None) -> str:
    if not s:
        return "–"
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


def results_table(results: dict, results_dir: str, md_dir: str) -> str:
    s = results["settings"]
    v = ", ".join(f"{k} {val}" for k, val in results["versions"].items())
    lines = [f"### {results['name']}: `{results['scenario']}`, {results['steps']} env steps", "",
             f"Model `{results['model']}`; device: {results['device']}; {v}; {results['date']}.",
             f"Episodes capped at {s['max_episode_steps']} steps in both worlds; {s['num_envs']} training envs; "
             f"observations {s['obs_size']} x {s['frame_stack']} frames; every row evaluated on the same "
             f"episodes (seed {s['eval_seed']}); SB3 policies act with their mean action, and in the sampled "
             f"column with sampled actions, as in training (the baselines sample in both)."
             + (f" Each decision held for {s['action_repeat']} steps of the world: agent steps count decisions, "
                f"real frames steps of the world." if s.get("action_repeat", 1) > 1 else "")
             + (f" Training rows' further arguments: `{' '.join(s['train_args'].split())}`."
                if s.get("train_args") else "")
             + (f" Dream rows' further arguments: `{' '.join(s['dream_args'].split())}`."
                if s.get("dream_args") else "")
             + (f" SAC rows' further arguments (after the training rows'): `{' '.join(s['sac_args'].split())}`."
                if s.get("sac_args") else ""), "",
             "Returns: mean ± std (95 % confidence interval, episodes).", "",
             "| row | real-game return | real, sampled actions | dream return | agent steps | real frames used "
             "| train wall-clock | train steps/s | eval wall-clock |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(results["rows"], key=row_order):
        r = results["rows"][row]
        sps = f"{r['steps_per_s']:.1f}" if r.get("steps_per_s") else "–"
        sampled = r.get("real_sampled") or (r.get("real") if not r.get("run_dir") else None)
        frames = r.get("real_frames")
        lines.append(f"| {r['label']} | {_ret(r.get('real'))} | {_ret(sampled)} | {_ret(r.get('dream'))} | "
                     f"{r['env_steps']} | {'–' if frames is None else frames} | "
                     f"{_secs(r['train_wall_s'])} | {sps} | {_secs(r['eval_wall_s'])} |")
    extra = [line for line in (dream_predicts_real(results), ANCHOR if results["scenario"] == "take_cover" else None)
             if line]
    if extra:
        lines += ["", *extra]
    if results.get("curves"):
        png = os.path.relpath(os.path.join(results_dir, results["curves"]), md_dir)
        lines += ["", f"![learning curves: {results['name']}]({png})"]
    return "\n".join(lines)


def write_results_md(results_dir: str, md_path: str) -> None:
    """Regenerate the block between the markers of ``md_path`` from every results JSON; keep the rest."""
    md_dir = os.path.dirname(os.path.abspath(md_path))
    files = sorted(glob.glob(os.path.join(results_dir, "*.json")))
    comparisons = [d for d in map(read_json, files) if "rows" in d and "settings" in d]  # not single evaluations
    tables = [results_table(d, results_dir, md_dir) for d in comparisons]
    block = "\n".join([BEGIN, "", "\n\n".join(tables) or "(no results yet)", "", END])
    if os.path.exists(md_path):
        text = Path(md_path).read_text()
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = ("# Agents: trained in the dream, evaluated in the real game\n\n"
                "Generated by `python -m agents.compare`; the tables below are regenerated on every run.\n\n"
                + block + "\n")
    atomic_write(md_path, lambda f: f.write(text), binary=False)


def merge_rows(path: str, results: dict, ours: set) -> None:
    """Take in what other processes wrote meanwhile, so a comparison split across processes (--rows) adds up.

    The file wins for every row but ``ours`` (those this process ran or updated): our copies of
    the others are as old as our start.
    """
    if os.path.exists(path):
        rows = read_json(path)["rows"]
        rows.update({r: results["rows"][r] for r in ours})
        results["rows"] = {r: rows[r] for r in sorted(rows, key=row_order)}


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    default = [r for r in ROWS if (not is_sac_row(r) or args.sac) and (r != "ppo-real-frames" or args.real_frames)]
    rows = [r for r in (args.rows.split(",") if args.rows else default) if r]
    if args.sac:
        rows += [r for r in ROWS if is_sac_row(r) and r not in rows]
    unknown = [r for r in rows if not known_row(r)]
    if unknown or not rows:
        ap.error(f"--rows: unknown {unknown}; expected a comma-separated subset of {', '.join(ROWS)} (a dream row "
                 f"may carry a temperature, e.g. ppo-dream-t1.15)")
    if args.temperatures:
        temps = [t for t in args.temperatures.split(",") if t]
        if not temps or not all(known_row(f"ppo-dream-t{t}") for t in temps):  # split_row's rule for a temperature
            ap.error(f"--temperatures: expected comma-separated positive numbers, got {args.temperatures!r}")
        rows = [v for r in rows for v in ([f"{r}-t{t}" for t in temps] if r in DREAM_ROWS else [r])]
    for name in ("train_args", "dream_args", "sac_args"):
        clash = [a for a in shlex.split(getattr(args, name)) if a.split("=")[0] in ROW_FLAGS]
        if clash:
            ap.error(f"--{name.replace('_', '-')} sets {', '.join(clash)}, which the row names decide; pick rows "
                     "with --rows (e.g. ppo-dream-t1.15, sac-dream) and temperatures with --temperatures")
    if args.action_repeat < 1:
        ap.error(f"--action-repeat must be >= 1, got {args.action_repeat}")
    if args.real_frames is not None and args.real_frames < args.action_repeat:
        ap.error(f"--real-frames must be >= {args.action_repeat} (one decision held --action-repeat steps), "
                 f"got {args.real_frames}")
    if args.real_frames is None and "ppo-real-frames" in rows:
        ap.error("the ppo-real-frames row needs --real-frames: the real frames the world model was trained on "
                 "(e.g. the sum of its recordings' frames)")
    args.name = args.name or f"{args.scenario}-{args.steps}"
    args.eval_every = args.steps // 10 if args.eval_every is None else args.eval_every
    set_threads(args.threads)

    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"{args.name}.json")
    args.dream_eval_episodes = args.dream_eval_episodes or args.eval_episodes
    args.dream_episodes = args.dream_episodes or args.episodes
    settings = {k: getattr(args, k) for k in ("num_envs", "max_episode_steps", "episodes", "dream_episodes",
                                              "eval_every",
                                              "eval_episodes", "dream_eval_episodes", "eval_seed", "obs_size",
                                              "frame_stack", "seed", "train_args", "dream_args", "sac_args",
                                              "action_repeat")}
    header = {"name": args.name, "scenario": args.scenario, "model": args.model, "steps": args.steps}
    results = read_json(path) if os.path.exists(path) else {**header, "rows": {}}
    clash = [f"{k}: {results.get(k)!r} there, {v!r} now" for k, v in header.items() if results.get(k) != v]
    if clash:
        ap.error(f"{path} holds another comparison ({'; '.join(clash)}); pass another --name")
    device = resolve_device(args.device)
    results.update(settings=settings, device=device_name(device), versions=versions(),
                   date=datetime.date.today().isoformat())

    model = evaluator = None
    ours: set = set()
    try:
        for row in rows:
            if row in results["rows"] and not args.redo:
                print(f"{row}: done ({path}); --redo to run it again")
                if complete_row(args, results["rows"][row]):
                    ours.add(row)
                    merge_rows(path, results, ours)
                    write_json(path, results)
                continue
            start = time.perf_counter()
            print(f"{row}: {row_spec(row)[0]} ...", flush=True)
            if row_spec(row)[1] is None:
                if evaluator is None:
                    from wham_gym import load_model

                    model = load_model(args.model, device=device)
                    evaluator = Evaluator(model, args.scenario, args.max_episode_steps,
                                          num_envs=args.eval_envs, seed=args.eval_seed,
                                          game_kwargs={"render_hud": True} if args.hud else None)
                results["rows"][row] = run_baseline(args, row, model, evaluator)
            else:
                results["rows"][row] = run_training(args, row)
                complete_row(args, results["rows"][row])
            ours.add(row)
            merge_rows(path, results, ours)
            write_json(path, results)  # after every row: an interrupted comparison keeps what it has
            r = results["rows"][row]
            print(f"{row}: real {_ret(r['real'])}, dream {_ret(r['dream'])} ({time.perf_counter() - start:.0f} s)")
    finally:
        if evaluator is not None:
            evaluator.close()

    results["curves"] = f"{args.name}.png"  # beside the results file
    merge_rows(path, results, ours)
    plot_curves(results, os.path.join(args.results_dir, results["curves"]))
    write_json(path, results)
    write_results_md(args.results_dir, args.results_md)
    print(f"wrote {path}, {os.path.join(args.results_dir, results['curves'])} and {args.results_md}")
    return results


if __name__ == "__main__":
    main()
