"""Train the reward/termination model on recorded episodes' tokens.

Rewards and episode ends are rare next to ordinary steps, so the reward loss and an
end-frame termination loss are class-balanced: each class contributes equally,
whatever its frequency. A termination *hazard* (``termination="hazard"``) is a
probability the env samples, so its loss is left unweighted to keep it calibrated,
and its net is small: ends are few (take_cover: ~550 in 50k transitions) and the
default size (8-dim tokens, 256 hidden) overfits them within three epochs (held-out
cross-entropy above the base rate's), while 4 / 64 stays 28 % below it (AUC 0.86).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.reward_model import RewardModel, RewardModelConfig
from .data import TokenEpisode, split_sources, tokenize_episodes
from .trainer import TrainConfig, batch_rng, train


def transitions(episodes: list[TokenEpisode]) -> dict[str, np.ndarray]:
    """(prev tokens, action, next tokens, reward, terminated) for every recorded transition.

    ``rewards[t]`` and ``terminated[t]`` belong to the action taken at frame t. The frame
    after an episode's last action is not recorded; a terminal transition gets its own
    last frame as the "next" frame, which is what the dream shows at an end, unless the
    episode has an end frame (``ended``): then that is the next frame, and the end frame
    itself starts no transition.
    """
    prev, act, nxt, rew, term = [], [], [], [], []
    for e in episodes:
        T = len(e.tokens)
        nxt_idx = np.minimum(np.arange(1, T + 1), T - 1)
        keep = slice(0, T - 1 if e.ended else T)
        prev.append(e.tokens[keep])
        act.append(e.action_ids[keep])
        nxt.append(e.tokens[nxt_idx][keep])
        rew.append(e.rewards[keep])
        term.append(e.terminated[keep])
    return {"prev": np.concatenate(prev), "act": np.concatenate(act), "next": np.concatenate(nxt),
            "reward": np.concatenate(rew).astype(np.float32), "term": np.concatenate(term).astype(np.float32)}


def class_weights(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and a per-sample weight making every class weigh the same in total."""
    classes, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    w = (len(values) / (len(classes) * counts))[inverse]
    return classes, w.astype(np.float32)


HAZARD_SIZE = {"token_dim": 4, "hidden": 64}  # see the module doc


def reward_loss(rm: RewardModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    reward, term_logit = rm(batch["prev"], batch["act"], batch["next"])
    r_loss = (batch["w_reward"] * (reward.float() - batch["reward"]) ** 2).mean()
    t_loss = (batch["w_term"] * F.binary_cross_entropy_with_logits(term_logit.float(), batch["term"], reduction="none")).mean()
    return r_loss + t_loss, {"reward_mse": r_loss.item(), "term_bce": t_loss.item()}


def train_reward_model(model, data, run_dir, cfg: TrainConfig, *, progress: bool = True,
                       stop_after: int | None = None, cache_dir=None,
                       end_frame: str | None = None, termination: str = "end_frame",
                       reads_action: bool = True) -> tuple[RewardModel, dict]:
    run_dir = Path(run_dir)
    device = torch.device(cfg.device)
    train_src, val_src = split_sources(data)
    cache = Path(cache_dir) if cache_dir else run_dir / "token-cache"  # shared by stages that tokenize the same data
    tr = transitions(tokenize_episodes(model, train_src, cache, progress=progress, end_frame=end_frame))
    va = transitions(tokenize_episodes(model, val_src, cache, progress=progress, end_frame=end_frame))
    values, w_reward = class_weights(tr["reward"])
    hazard = termination == "hazard"
    _, w_term = (None, np.ones(len(tr["term"]), np.float32)) if hazard else class_weights(tr["term"])
    tensors = {k: torch.from_numpy(v.astype(np.int64) if k in ("prev", "act", "next") else v) for k, v in tr.items()}
    tensors["w_reward"], tensors["w_term"] = torch.from_numpy(w_reward), torch.from_numpy(w_term)
    torch.manual_seed(cfg.seed)
    config = RewardModelConfig(model.config.image_vocab_size, model.config.tokens_per_image,
                               reward_values=tuple(float(v) for v in values[:32]), termination=termination,
                               reads_action=reads_action, separate_termination=hazard,
                               **(HAZARD_SIZE if hazard else {}))
    rm = RewardModel(config).to(device)

    def loss_fn(step, micro):
        idx = torch.from_numpy(batch_rng(cfg.seed, step, micro).integers(0, len(tensors["reward"]), cfg.batch_size))
        return reward_loss(rm, {k: v[idx].to(device) for k, v in tensors.items()})

    def validate():
        return evaluate_reward_model(rm, va, device)

    result = train(rm, loss_fn, cfg, run_dir, validate=validate, desc="reward model", progress=progress,
                   stop_after=stop_after, items_per_step=cfg.batch_size * cfg.grad_accum,
                   meta={"transitions": len(tensors["reward"]), "reward_values": values[:32].tolist(),
                         "config": config.to_dict()})
    if hazard and (stop_after is None or stop_after >= cfg.steps):
        weak = weak_hazard(evaluate_reward_model(rm, va, device), cfg.steps)
        if weak:
            warnings.warn(weak, stacklevel=2)
    return rm, result


def weak_hazard(metrics: dict, steps: int, margin: float = 0.10) -> str | None:
    """Why a trained hazard is not worth sampling, or None. Its held-out cross-entropy must be ``margin`` below
    the constant base rate's: take_cover c4 at 400 steps was 3 % below (mean probability 2.2x the end rate, about
    40 steps expected on the game's frames under every policy); at 1,500 steps 29 % below with its own body
    (calibrated, AUC 0.87, the policies ranked as the game ranks them)."""
    xent, base = metrics.get("term_xent"), metrics.get("term_xent_base")
    if xent is None or base is None or xent <= (1 - margin) * base:
        return None
    return (f"the termination hazard learned little: its held-out cross-entropy {xent:.4f} is "
            f"{100 * (1 - xent / base):.0f} % below a constant rate's {base:.4f} (expected at least "
            f"{100 * margin:.0f} %; mean probability {metrics.get('term_mean_p', float('nan')):.4f} against the end "
            f"rate {metrics.get('term_rate', float('nan')):.4f}); train it longer (the recipe's reward_train.steps, "
            f"now {steps}) or record more episodes that end")


@torch.no_grad()
def evaluate_reward_model(rm: RewardModel, data: dict[str, np.ndarray], device, batch: int = 1024) -> dict:
    """On held-out transitions: precision/recall of "non-zero reward" and of termination (its probability
    above one half), reward MAE, and how good the termination probability is as a probability: its
    cross-entropy against the base rate's, its AUC, and its mean against the true end rate."""
    preds, probs = [], []
    for i in range(0, len(data["reward"]), batch):
        sl = {k: torch.from_numpy(data[k][i:i + batch].astype(np.int64)).to(device) for k in ("prev", "act", "next")}
        r, logit = rm(sl["prev"], sl["act"], sl["next"])
        preds.append(r.float().cpu().numpy())
        probs.append(torch.sigmoid(logit.float()).cpu().numpy())
    r, p = np.concatenate(preds), np.concatenate(probs).astype(np.float64)
    t = p > 0.5
    true_r, true_t = data["reward"], data["term"] > 0.5

    def pr(pred, true):
        tp = float((pred & true).sum())
        return tp / max(1.0, float(pred.sum())), tp / max(1.0, float(true.sum()))

    nonzero = true_r != 0
    threshold = 0.5 * np.abs(true_r[nonzero]).min() if nonzero.any() else 0.5  # half the smallest real reward
    rp, rr = pr(np.abs(r) > threshold, nonzero)
    tp_, tr_ = pr(t, true_t)
    return {"reward_mae": float(np.abs(r - true_r).mean()), "reward_precision": rp, "reward_recall": rr,
            "term_precision": tp_, "term_recall": tr_, "loss": float(np.mean((r - true_r) ** 2)),
            **probability_metrics(p, true_t)}


def probability_metrics(p: np.ndarray, truth: np.ndarray) -> dict:
    """Cross-entropy of probabilities ``p`` for events ``truth`` against the constant base rate's, the AUC
    (chance a random event ranks above a random non-event; ties count half), and mean ``p`` against the rate."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    truth = np.asarray(truth, bool)
    rate = float(truth.mean()) if len(truth) else 0.0

    def xent(q):
        return float(-np.mean(np.where(truth, np.log(q), np.log1p(-q))))

    out = {"term_xent": xent(p), "term_mean_p": float(p.mean()), "term_rate": rate}
    if 0 < truth.sum() < len(truth):
        out["term_xent_base"] = xent(np.full_like(p, rate))
        _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties share their average rank
        n_pos, n_neg = truth.sum(), (~truth).sum()
        out["term_auc"] = float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return out
