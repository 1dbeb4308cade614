"""The whole recipe: tokenizer, then world model, then reward model, then one model directory.

Each stage trains in its own sub-folder of the run directory and resumes from its
last checkpoint, so rerunning the same command after an interruption continues
where it stopped, losing at most one checkpoint interval.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from ..model import DEFAULT_MODEL_DIR, PRESETS, build_model, load_model
from ..model.checkpoint import save_model
from ..model.config import ViTTokenizerConfig, make_config
from .hazard import calibrate_hazard, calibration_unavailable, write_hazard_offset
from .reward import train_reward_model
from .tokenizer import CODE_DECAY, CODE_THRESHOLD, train_tokenizer
from .trainer import TrainConfig, latest_checkpoint, load_checkpoint, make_optimizer, save_checkpoint
from .world_model import train_world_model
from ..data.episodes import Episode, write_episode
from ..data.reader import load_episode
from ..model.reward_model import RewardModel, RewardModelConfig
from .data import split_sources


@dataclass
class Recipe:
    """Sizes and schedules of a small WHAM-architecture model (the embedded default's).

    ``name`` None names the model after the directory it is written to (see
    :func:`default_model_name`), so a model trained without ``--name`` is never taken
    for the shipped ``wham-doom-small``.
    """

    name: str | None = None
    tokenizer: ViTTokenizerConfig = field(default_factory=lambda: ViTTokenizerConfig(
        width=300, height=180, patch_size=20, transf_dim=128, embedding_dim=16, num_layers=2, head_size=32,
        vocab_size=1024))
    n_layer: int = 3
    n_head: int = 3
    n_embd: int = 192
    seq_len: int = 10
    tokenizer_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=16, lr=1e-3, warmup_steps=50, checkpoint_every=50, validate_every=250))
    world_model_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1200, batch_size=4, lr=1e-3, warmup_steps=50, checkpoint_every=50, validate_every=300))
    reward_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=256, lr=1e-3, warmup_steps=50, checkpoint_every=100, validate_every=300))
    max_frames: int = 20000
    # How an episode's end looks in the training data (wham_gym.train.data.END_FRAMES): None, or "black"
    # for a black frame after each terminated episode, so dreams show ends and termination can see them.
    end_frame: str | None = None
    # Dead-code restarts of the tokenizer (see CodeUsage and the A/B behind its defaults).
    code_decay: float = CODE_DECAY
    code_threshold: float = CODE_THRESHOLD
    # The tokenizer's hard-pixel term (tokenizer_loss): its weight (0: off) and the share of each image's pixels
    # it reads.
    hard_pixel_weight: float = 0.0
    hard_pixel_fraction: float = 0.02
    # The GPT's loss weight on image tokens that change from the last step (train/world_model.lm_loss; 1: off).
    changed_token_weight: float = 1.0
    # The share of each GPT batch drawn from windows that end in an end frame (train/data.WindowSampler; 0: uniform).
    end_window_share: float = 0.0
    # How the reward model ends episodes (wham_gym.model.reward_model): "end_frame" (classify the dreamt frame)
    # or "hazard" (a calibrated per-step probability the env samples).
    termination: str = "end_frame"
    # Whether the reward/termination model reads the action (RewardModelConfig.reads_action): False keeps a
    # hazard from learning the recording policy's per-action death rates, which an agent would exploit.
    termination_reads_action: bool = True
    # A hazard's calibration to dreams (wham_gym.train.hazard): dreams and steps of the fit (0 dreams: none).
    hazard_calibration_envs: int = 16
    hazard_calibration_steps: int = 250

    @classmethod
    def from_card(cls, card: dict) -> "Recipe":
        """The recipe a model card records, so ``train all --recipe CARD`` reproduces that model."""
        r = dict(card.get("recipe") or {})
        if not r:
            raise ValueError("this card records no recipe (not a model trained by wham-gym train)")
        unknown = set(r) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"the card's recipe has fields this version does not know: {sorted(unknown)}")
        try:
            for key in ("tokenizer_train", "world_model_train", "reward_train"):
                if key in r:
                    r[key] = TrainConfig(**r[key])
                    r[key].betas = tuple(r[key].betas)  # JSON gave a list
            if "tokenizer" in r:
                r["tokenizer"] = ViTTokenizerConfig(**r["tokenizer"])
            return cls(**r)
        except TypeError as e:  # a stage or tokenizer entry with fields this version does not know
            raise ValueError(f"the card's recipe does not fit this version: {e}") from None

    def model_config(self):
        """The WHAM config of the model this recipe trains."""
        return make_config(self.tokenizer, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                           seq_len=self.seq_len, name=self.name or "wham")

    def scaled(self, factor: float) -> "Recipe":
        """The same recipe with every stage's steps multiplied by ``factor`` (quick trials, tests)."""
        def s(c):
            steps = max(2, int(c.steps * factor))
            return replace(c, steps=steps, warmup_steps=min(c.warmup_steps, steps // 2),
                           checkpoint_every=max(1, min(c.checkpoint_every, steps // 2)),
                           validate_every=max(1, min(c.validate_every, steps)))
        return replace(self, tokenizer_train=s(self.tokenizer_train), world_model_train=s(self.world_model_train),
                       reward_train=s(self.reward_train))


def take_cover_recipe() -> Recipe:
    """The take_cover model's recipe (issue 21): few tokens per frame, for dream speed, and end frames, so
    dreams end when the game would.

    30-pixel patches give 10x6 = 60 tokens a frame (the default's 20-pixel patches: 135). Chosen by measurement
    on the take_cover recording (benchmarks/RESULTS.md): 60-pixel patches (15 tokens) reconstruct held-out frames
    nearly as well (25.0 against 25.3 dB PSNR at the same 600 steps) and dream about twice as fast, but they
    erase strafing: the game's own frames, encoded and decoded, shift 1.5-4.5 px a step where the game shifts
    14-16 px (30-pixel patches: 9-15 px), so no world model over them can follow take_cover's only actions.

    Its 600-step tokenizer uses 3 % of its codes, draws the status bar at 100 % health whatever the health and
    erases the monsters and most fireballs. Trained 2,000 steps with the hard-pixel term (``hard_pixel_weight=1``)
    it keeps them (benchmarks/tokenizer_ab.py), but a 1,200-step GPT over that fuller codebook dreamt deaths
    10x too rarely (benchmarks/RESULTS.md), so this recipe, the shipped model's, keeps the short tokenizer for now.
    """
    return Recipe(
        tokenizer=ViTTokenizerConfig(width=300, height=180, patch_size=30, transf_dim=128, embedding_dim=16,
                                     num_layers=2, head_size=32, vocab_size=1024),
        n_layer=3, n_head=4, n_embd=128, seq_len=10,
        tokenizer_train=TrainConfig(steps=600, batch_size=16, lr=1e-3, warmup_steps=50, checkpoint_every=50,
                                    validate_every=600),
        world_model_train=TrainConfig(steps=1200, batch_size=8, lr=1e-3, warmup_steps=50, checkpoint_every=50,
                                      validate_every=400),
        reward_train=TrainConfig(steps=1000, batch_size=256, lr=1e-3, warmup_steps=50, checkpoint_every=100,
                                 validate_every=250),
        max_frames=8000, end_frame="black")


# Recipes by name (``wham-gym train --recipe NAME``); a card.json or model directory also names one.
RECIPES = {"default": Recipe, "take_cover": take_cover_recipe}


def _shipped_name() -> str:
    """The embedded default model's name (its card's), which a trained model must not take by default."""
    try:
        return json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return "wham-doom-small"


def default_model_name(out_dir) -> str:
    """The name of a model trained without ``--name``: its directory's name (``runs/m1`` -> ``m1``).

    A directory named like the shipped model, ``default`` or a preset gets ``-trained``
    appended, so no trained model shares a name with one :func:`wham_gym.load_model` knows.
    """
    name = Path(os.path.abspath(out_dir)).name or "model"
    return f"{name}-trained" if name in {_shipped_name(), "default", *PRESETS} else name


def load_recipe(spec: str) -> Recipe:
    """A named recipe (:data:`RECIPES`) or the one a model card records (a card.json or a model directory);
    errors say what was expected (ValueError / FileNotFoundError)."""
    if spec in RECIPES and not Path(spec).exists():
        return RECIPES[spec]()
    card = Path(spec) / "card.json" if Path(spec).is_dir() else Path(spec)
    if not card.is_file():
        raise FileNotFoundError(f"--recipe {spec}: expected a recipe name ({', '.join(RECIPES)}), a model card.json "
                                "or a model directory holding one")
    try:
        return Recipe.from_card(json.loads(card.read_text()))
    except ValueError as e:
        raise ValueError(f"--recipe {card}: {e}") from None


def tokenizer_stage(data, run_dir, recipe: Recipe, device: str = "cpu", progress: bool = True):
    """Train (or resume) the recipe's tokenizer in ``run_dir/tokenizer``; returns the recipe's model
    around it, its GPT untrained, for the later stages."""
    tok, _ = train_tokenizer(data, Path(run_dir) / "tokenizer", recipe.tokenizer,
                             replace(recipe.tokenizer_train, device=device), max_frames=recipe.max_frames,
                             code_usage=(recipe.code_decay, recipe.code_threshold),
                             hard_pixels=(recipe.hard_pixel_weight, recipe.hard_pixel_fraction), progress=progress,
                             end_frame=recipe.end_frame)
    model = build_model(recipe.model_config(), device=device)
    model.tokenizer.load_state_dict(tok.state_dict())
    return model


def world_model_stage(model, data, run_dir, recipe: Recipe, device: str = "cpu", progress: bool = True) -> dict:
    """Train (or resume) the recipe's GPT in ``run_dir/world_model`` on the tokens of ``model``'s tokenizer."""
    return train_world_model(model, data, Path(run_dir) / "world_model",
                             replace(recipe.world_model_train, device=device),
                             progress=progress, cache_dir=Path(run_dir) / "token-cache", end_frame=recipe.end_frame,
                             changed_token_weight=recipe.changed_token_weight,
                             end_window_share=recipe.end_window_share)


def reward_stage(model, data, run_dir, recipe: Recipe, device: str = "cpu", progress: bool = True):
    """Train (or resume) the recipe's reward / termination model in ``run_dir/reward``."""
    return train_reward_model(model, data, Path(run_dir) / "reward", replace(recipe.reward_train, device=device),
                              progress=progress, cache_dir=Path(run_dir) / "token-cache", end_frame=recipe.end_frame,
                              termination=recipe.termination, reads_action=recipe.termination_reads_action)


def seed_run_dir(model_dir, run_dir, recipe: Recipe) -> dict[str, int]:
    """Start ``run_dir``'s stages from a trained model's weights, so the recipe continues that model.

    Each stage without a checkpoint of its own gets one holding the model's weights at the step its card
    records (a fresh optimizer state: AdamW's moments start again). A recipe whose stage runs to more steps
    then trains that many more on the data it is given, on the tail of its schedule; one with as many steps
    keeps the stage as it is. This is how the iterative loop continues a shipped model on an agent's own
    play. Returns the step each seeded stage starts from (stages that already had checkpoints are left).
    """
    model = load_model(model_dir)
    card_steps = (model.card or {}).get("steps") or {}
    run_dir, seeded = Path(run_dir), {}
    stages = (("tokenizer", model.tokenizer, recipe.tokenizer_train),
              ("world_model", model.gpt, recipe.world_model_train),
              ("reward", getattr(model, "reward_model", None), recipe.reward_train))
    for stage, module, cfg in stages:
        if module is None or latest_checkpoint(run_dir / stage) is not None:
            continue
        if stage not in card_steps:
            raise ValueError(f"{model_dir}: its card records no step count for the {stage} stage "
                             f"(card['steps'] = {card_steps}); only models written by `wham-gym train` can seed a run")
        meta = {"seeded_from": str(model_dir), "history": []}
        extra = None
        if stage == "tokenizer":  # every code counts as alive: dead-code restarts judge from fresh usage
            extra = {"code_usage": torch.ones(model.tokenizer.vocab_size)}
        if stage == "reward":
            meta["config"] = module.config.to_dict()
        save_checkpoint(run_dir / stage, int(card_steps[stage]), module, make_optimizer(module, cfg), meta,
                        extra=extra)
        seeded[stage] = int(card_steps[stage])
    return seeded


def run_recipe(data, run_dir, out_dir, recipe: Recipe = Recipe(), device: str = "cpu", progress: bool = True,
               overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    model = tokenizer_stage(data, run_dir, recipe, device, progress)
    world_model_stage(model, data, run_dir, recipe, device, progress)
    reward_stage(model, data, run_dir, recipe, device, progress)
    out = assemble(run_dir, out_dir, recipe, data=data, overwrite=overwrite)
    if recipe.termination == "hazard" and recipe.hazard_calibration_envs:
        reason = calibration_unavailable(data)
        if reason:  # the model is still usable; its hazard keeps the level it has on real frames
            warnings.warn(f"the hazard is not calibrated to dreams: {reason} (wham-gym train calibrate-hazard)")
            return out
        report = calibrate_hazard(load_model(out, device=device), data, num_envs=recipe.hazard_calibration_envs,
                                  steps=recipe.hazard_calibration_steps, progress=progress)
        write_hazard_offset(out, report)
    return out


def assemble(run_dir, out_dir, recipe: Recipe = Recipe(), *, data=None, overwrite: bool = False,
             prompt_episodes: int = 4, prompt_frames: int = 12) -> Path:
    """Write a model directory from the latest checkpoints in ``run_dir`` (a run may still be training).

    Lets a long run ship an interim model: each stage's newest complete checkpoint is
    used; the reward model is included when its stage has one. With ``data``, a few
    held-out episode snippets go along as the model's default prompts.
    """

    run_dir = Path(run_dir)
    recipe = replace(recipe, name=recipe.name or default_model_name(out_dir))
    config = recipe.model_config()
    model = build_model(config)
    steps, metrics = {}, {}
    for stage, module in (("tokenizer", model.tokenizer), ("world_model", model.gpt)):
        stem = latest_checkpoint(run_dir / stage)
        if stem is None:
            raise FileNotFoundError(f"{run_dir / stage}: no checkpoint yet; train that stage first")
        info = load_checkpoint(stem, module, None, restore_rng=False)
        steps[stage], metrics[stage] = info["step"], (info["meta"].get("history") or [{}])[-1]
    stem = latest_checkpoint(run_dir / "reward")
    if stem is not None:
        rm = RewardModel(reward_config(stem, config))
        info = load_checkpoint(stem, rm, None, restore_rng=False)
        model.reward_model = rm.eval()
        steps["reward"], metrics["reward"] = info["step"], (info["meta"].get("history") or [{}])[-1]
    # save_model records "data" relative to the model directory, or as the folder's name (no machine paths).
    model.card = {"name": recipe.name, "official": False, "format": "wham-gym/1", "data": _data_name(data),
                  "scenario": _recorded_scenario(data), "game_kwargs": _recorded_game_kwargs(data),
                  "recipe": json.loads(json.dumps(asdict(recipe), default=str)), "steps": steps,
                  "metrics": metrics, "torch": torch.__version__, "parameters": model.num_parameters()}
    out = save_model(model.eval(), out_dir, overwrite=overwrite)
    if data is not None and prompt_episodes:
        ship_prompts(out, data, prompt_episodes, prompt_frames)
    return out


def ship_prompts(model_dir, data, episodes: int, frames: int) -> None:
    """Copy short held-out snippets into ``model_dir/prompts`` and name them in the card, so envs
    built on the model start from real frames with no dataset at hand."""

    model_dir = Path(model_dir)
    _, val = split_sources(data)
    folder = model_dir / "prompts"
    folder.mkdir(exist_ok=True)
    for i, source in enumerate(val[:episodes]):
        ep = load_episode(source)
        n = min(frames, len(ep))
        write_episode(folder / f"prompt_{i:02d}.npz", Episode(images=ep.images[:n], wham_actions=ep.wham_actions[:n],
                                                               scenario=ep.scenario, source=source),
                      compresslevel=9, channels_last=True)  # the layout every API uses
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["prompts"] = "prompts"
    tmp = card_path.with_name("card.json.tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(card_path)


def reward_config(stem: Path, config) -> RewardModelConfig:
    """The config of a reward-model checkpoint (older checkpoints record only their reward values)."""
    meta = json.loads(stem.with_suffix(".json").read_text())["meta"]
    if "config" in meta:
        return RewardModelConfig.from_dict(meta["config"])
    return RewardModelConfig(config.image_vocab_size, config.tokens_per_image,
                             reward_values=tuple(meta.get("reward_values", [])))


def _manifest(data) -> dict:
    """The recording's manifest; for several recordings, their shared settings (which must agree: one
    model learns one game as it looked)."""
    if not data:
        return {}
    if not isinstance(data, (str, os.PathLike)):
        manifests = [m for m in map(_manifest, data) if m]
        for key in ("scenario", "env_kwargs"):
            seen = {json.dumps(m.get(key), sort_keys=True) for m in manifests}
            if len(seen) > 1:
                raise ValueError(f"the recordings disagree on {key!r}: {sorted(seen)}; a model learns one game as "
                                 "it looked, so train on recordings made with the same scenario and game settings")
        return manifests[0] if manifests else {}
    manifest = Path(data) / "manifest.json"
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text())


def _data_name(data):
    """The card's "data": a path, or a list of them (save_model makes them relative)."""
    if not data:
        return None
    return str(data) if isinstance(data, (str, os.PathLike)) else [str(d) for d in data]


def _recorded_scenario(data) -> str | None:
    """The ViZDoom scenario of a recording (its manifest), so tools can play the game the model learned."""
    return _manifest(data).get("scenario")


def _recorded_game_kwargs(data) -> dict:
    """How the recording's game was set up beyond its scenario (e.g. ``render_hud``), so tools play the game
    the model learned exactly as it looked; frame_skip is the env's default and left out."""
    kwargs = dict(_manifest(data).get("env_kwargs") or {})
    kwargs.pop("frame_skip", None)
    return kwargs
