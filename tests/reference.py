"""A plain implementation of WHAM's generation procedure (WHAM_FORMAT.md §7-§8), one slot at a time.

Full re-prefill for every token (a causal forward over the whole sequence so far),
one token at a time, images then actions, sampling filtered exactly as §8.3 says,
written without the engine's code. Only the random draws are shared: draw j of a
slot is ``uniforms(seed, j)``, consumed in sampling order.
"""

from __future__ import annotations

import torch

from wham_gym.sampling import uniforms


def sample_reference(logits, lo, hi, u, temperature=0.9, top_k=None, top_p=None, min_tokens_to_keep=1,
                     deterministic=False):
    """§8.3 for one row of logits (V,), then the inverse-CDF draw with uniform ``u``."""
    x = logits.double().clone() / max(temperature, 0.1)
    V = x.numel()
    for i in range(V):
        if i < lo or i > hi:
            x[i] = float("-inf")
    if deterministic:  # top-k with k = 1, min_tokens_to_keep not applied (ties stay)
        best = max(x.tolist())
        x = torch.where(x < best, torch.tensor(float("-inf"), dtype=x.dtype), x)
    elif top_k is not None:
        k = min(max(top_k, min_tokens_to_keep), V)
        kth = sorted(x.tolist(), reverse=True)[k - 1]
        x = torch.where(x < kth, torch.tensor(float("-inf"), dtype=x.dtype), x)
    elif top_p is not None:
        order = sorted(range(V), key=lambda i: -x[i].item())
        probs = torch.softmax(x[order], 0)
        cum = 0.0
        for rank, i in enumerate(order):
            cum += probs[rank].item()
            if cum > top_p and rank >= min_tokens_to_keep:
                x[i] = float("-inf")
    p = torch.softmax(x, 0)
    target = u * p.sum().item()
    acc = 0.0
    for i in range(V):
        acc += p[i].item()
        if acc > target:
            return i
    return max(i for i in range(V) if p[i] > 0)


def reference_rollout(model, prompt_images, prompt_actions, actions, seed, sampling, context_steps=None,
                      predict_actions=False):
    """Dream ``len(actions)`` frames for one slot.

    prompt_images: (P, tokens_per_image) ids; prompt_actions: (P-1, 16) action-vocab ids;
    actions: list of (16,) action-vocab ids, the action at the newest frame each step.
    Returns (list of image-token lists, list of predicted action-id lists).
    """
    cfg = model.config
    vocab = model.vocab
    lo, hi = vocab.range_low.tolist(), vocab.range_high.tolist()
    window = (context_steps or cfg.seq_len) - 1
    frames = [list(map(int, f)) for f in prompt_images]
    acts = [list(map(int, a)) for a in prompt_actions]
    draws = 0
    out_images, out_actions = [], []
    for a in actions:
        acts.append(list(map(int, a)))
        steps = list(zip(frames, acts))[-window:]
        ids = []
        for img, act in steps:
            ids += img + [t + vocab.action_offset for t in act]
        n_new = cfg.tokens_per_image + (16 if predict_actions else 0)
        u = uniforms(torch.tensor([seed]), torch.tensor([draws]), n_new)[0]
        draws += n_new
        new = []
        for g in range(n_new):
            logits = model.gpt(torch.tensor([ids + new]))[0, -1].float()
            new.append(sample_reference(logits, lo[g], hi[g], u[g].item(), **sampling))
        frames.append(new[: cfg.tokens_per_image])
        out_images.append(new[: cfg.tokens_per_image])
        out_actions.append([t - vocab.action_offset for t in new[cfg.tokens_per_image:]])
    return out_images, out_actions
