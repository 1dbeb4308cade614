"""DreamEngine: many WHAM rollouts advanced together in one batched pass.

Each of N slots holds a window of the last ``context_steps - 1`` frames as image
tokens, each with its action except the newest, whose action the next
``step(a)`` supplies. A step is WHAM's procedure (WHAM_FORMAT.md §7-§8) done
for all slots at once: prefill each slot's window into a static KV cache
(positions start at 0 at the window's oldest step, as in the reference), then
decode the next frame's image tokens one position at a time for every slot
together, each sampled within its valid range, then decode tokens to frames.

Slots may hold windows of different lengths: sequences are right-padded, every
token carries its own position, and attention is masked per slot, so padding
never reaches a real token. All per-token work stays on the device; a step
synchronises with the host once, to size its prefill (speculative decoding adds
one per pass, to know when every slot has its frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import controller
from .controller import ACTION_DIM
from .memory import keep_freed_memory
from .model.vocab import action_tokens, action_values
from .sampling import check_settings, draw, filter_logits, slot_seed, uniforms
from .model import load_model


@dataclass
class StepResult:
    """What one engine step produced, batched over the slots stepped (all tensors on the engine's device)."""

    tokens: torch.Tensor  # (N, tokens_per_image) long: the new frame's image tokens
    frames: torch.Tensor | None  # (N, H, W, 3) uint8, or None with decode=False
    nll: torch.Tensor  # (N,) mean negative log-likelihood of the sampled image tokens
    entropy: torch.Tensor  # (N,) mean entropy of the model's image-token distributions
    predicted_actions: torch.Tensor | None  # (N, 16) controller vectors the model predicts at the new frame
    # (N,) float64: the probability the new frame's first image token had of being the watched one
    # (:meth:`DreamEngine.watch_first_token`; a model's end frame), under the sampling settings; None: none watched.
    first_token_prob: torch.Tensor | None = None


_SIGNAL_STREAM = 0x5DEECE66D  # xor-ed into slot seeds: the episode signals' stream, apart from the tokens'


def kv_cache_bytes(config, num_envs: int, dtype: torch.dtype) -> int:
    """Bytes of the engine's static KV cache: n_layer x 2 (K, V) x block_size x n_embd per slot."""
    per_slot = config.n_layer * 2 * config.gpt.block_size * config.n_embd
    return num_envs * per_slot * torch.tensor([], dtype=dtype).element_size()


def max_envs(config, free_bytes: int, dtype: torch.dtype, headroom: float = 0.8) -> int:
    """The largest N whose KV cache fits in ``headroom`` of ``free_bytes`` (activations need the rest)."""
    return int(headroom * free_bytes) // kv_cache_bytes(config, 1, dtype)


def _check_fits(config, num_envs: int, dtype, device: torch.device) -> None:
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    need = kv_cache_bytes(config, num_envs, dtype)
    if need > 0.8 * free:
        raise ValueError(
            f"num_envs={num_envs}: the KV cache needs {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is free on "
            f"{device}; at most {max_envs(config, free, dtype)} envs fit (n_layer x 2 x block_size x n_embd x "
            f"{torch.tensor([], dtype=dtype).element_size()} B = {kv_cache_bytes(config, 1, dtype) / 2**20:.0f} MiB each)")


DECODINGS = ("exact", "diagonal", "speculative")


def _as_tensor(x, device, dtype=None):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        x = torch.as_tensor(x)
    return x.to(device=device, dtype=dtype) if dtype is not None else x.to(device)


class DreamEngine:
    """N WHAM dream slots on one device.

    Args:
        model: a WHAMModel, or anything :func:`wham_gym.load_model` takes.
        num_envs: number of slots N.
        device, dtype: where and in what precision to run (default: the model's).
        temperature, top_k, top_p, min_tokens_to_keep: WHAM's sampling settings (§8.3).
        deterministic: argmax sampling (WHAM's ``deterministic``: top-k with k = 1).
        context_steps: frames of context; the window holds ``context_steps - 1`` complete
            steps, like the reference (default: the model's seq_len, 10).
        seed: slot b's random stream is seeded with ``slot_seed(seed, b)`` unless reset gives one.
        refresh_every: 1 (exact, default) re-prefills the window every step. k > 1 keeps the
            KV cache across steps and re-prefills only every k steps, so the context varies
            between ``context_steps - k`` and ``context_steps - 1`` steps: an approximation.
        decoding: ``"exact"`` (default) samples a frame's tokens one per forward pass in raster
            order, as WHAM does. ``"diagonal"`` samples them one anti-diagonal of the token grid
            per pass (rows + cols - 1 passes instead of rows x cols), a training-free approximation
            after DiagD (arXiv 2503.14070); see :meth:`_decode_diagonal`. ``"speculative"`` is exact:
            the same tokens as ``"exact"`` for the same seeds, in fewer passes when frames change
            little. Each pass feeds the last sampled token and ``verify_block - 1`` tokens drafted from
            the previous frame, and keeps the drafts the model's own draws confirm, plus the first
            draw that differs; see :meth:`_decode_speculative`.
        verify_block: tokens fed per pass of speculative decoding (>= 1; 1 drafts nothing: one token
            per pass, as exact decoding). Larger blocks take fewer passes but each costs more where a
            pass is compute-bound (CPUs): 4 was the fastest measured there (benchmarks/RESULTS.md).
        compile: ``torch.compile`` the single-token decode pass with the draw of the next image token
            (gpt-fast's ``decode_one_token``) and the prefill of full windows: each pass then attends over the
            whole static cache (keys stored transposed) under a preallocated position mask, so every pass of
            a step has one fixed shape for a given N and compiles once (on CUDA with CUDA graphs,
            ``mode="reduce-overhead"``). The same tokens as eager decoding in tests/test_engine.py; its kernels
            round differently, so over long dreams a rare draw differs (take_cover: 4 in 33,999). It costs
            ~20 s of compiling per N on a CPU, and there a step is bound by the prefill's arithmetic and the
            cache reads, not by dispatch: 1.1-1.3x eager on a 2-core CPU (benchmarks/RESULTS.md), so the
            default is off. Partial windows' prefills and other decodings' block passes stay eager.

    After each step ``last_passes`` holds the forward passes that sampled its image tokens (the prefill
    included: ``tokens_per_image`` for exact decoding), and with speculative decoding ``last_drafted`` /
    ``last_accepted`` (N,) the drafted tokens each slot checked and kept (device tensors).
    """

    # Full windows prefill with plain causal attention; False forces the masked prefill (for A/B timing).
    _causal_prefill = True

    def __init__(self, model, num_envs: int, *, device=None, dtype=None, temperature: float = 0.9,
                 top_k: int | None = None, top_p: float | None = None, min_tokens_to_keep: int = 1,
                 deterministic: bool = False, context_steps: int | None = None, seed: int | None = None,
                 refresh_every: int = 1, decoding: str = "exact", verify_block: int = 4, compile: bool = False):

        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        check_settings(temperature, top_k, top_p, min_tokens_to_keep)
        model = load_model(model) if isinstance(model, str) else model
        if device is not None or dtype is not None:
            model = model.to(device=device or model.device, dtype=dtype or model.dtype)
        self.model = model
        self.config = cfg = model.config
        self.device, self.dtype = model.device, model.dtype
        self.num_envs = N = int(num_envs)
        self.context_steps = context_steps or cfg.seq_len
        if not 2 <= self.context_steps <= cfg.seq_len:
            raise ValueError(f"context_steps must lie in [2, {cfg.seq_len}] (the model's seq_len), got {context_steps}")
        if not isinstance(refresh_every, int) or not 1 <= refresh_every < self.context_steps:
            raise ValueError(f"refresh_every must be an int in [1, {self.context_steps - 1}], got {refresh_every!r}")
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                             min_tokens_to_keep=min_tokens_to_keep, deterministic=deterministic)
        self.refresh_every = refresh_every
        if decoding not in DECODINGS:
            raise ValueError(f"decoding: expected one of {', '.join(DECODINGS)}, got {decoding!r}")
        if not isinstance(verify_block, (int, np.integer)) or isinstance(verify_block, bool) or verify_block < 1:
            raise ValueError(f"verify_block (tokens fed per pass of speculative decoding) must be an int >= 1, "
                             f"got {verify_block!r}")
        self.decoding = decoding
        self.verify_block = int(verify_block)
        if not isinstance(compile, (bool, np.bool_)):
            raise ValueError(f"compile: expected True or False, got {compile!r}")
        self.compile = bool(compile)
        self.last_passes = 0
        self.last_drafted = self.last_accepted = None
        self._grid = model.tokenizer.grid

        self.window = W = self.context_steps - 1
        self.tpi, self.tps = cfg.tokens_per_image, cfg.tokens_per_step
        vocab = model.vocab
        self._range_lo, self._range_hi = vocab.range_low.tolist(), vocab.range_high.tolist()
        ids = torch.arange(vocab.size, device=self.device)
        lo, hi = vocab.ranges(device=ids.device)
        self._outside = (ids[None, :] < lo[:, None]) | (ids[None, :] > hi[:, None])  # (tokens_per_step, V), built once
        self._action_offset = vocab.action_offset

        dev = self.device
        # Window, right-aligned: frame W-1 is the newest; slot b holds its last n_frames[b].
        self.images = torch.zeros(N, W, self.tpi, dtype=torch.long, device=dev)
        self.actions = torch.zeros(N, W, ACTION_DIM, dtype=torch.long, device=dev)  # action-vocab ids
        self.n_frames = torch.zeros(N, dtype=torch.long, device=dev)  # 0 = never reset
        self._prompted = np.zeros(N, bool)  # host copy of n_frames > 0: checked without a device sync
        self.pending = torch.zeros(N, ACTION_DIM, dtype=torch.long, device=dev)  # predicted action ids
        self.has_pending = torch.zeros(N, dtype=torch.bool, device=dev)
        self._all_pending = False  # host copy of has_pending.all(): read without a device sync
        self.cache_len = torch.zeros(N, dtype=torch.long, device=dev)  # refresh_every > 1 only
        self.since_refresh = torch.zeros(N, dtype=torch.long, device=dev)
        base = 0 if seed is None else int(seed)
        self.seeds = torch.tensor([slot_seed(base, b) for b in range(N)], dtype=torch.long, device=dev)
        self.draws = torch.zeros(N, dtype=torch.long, device=dev)

        # Padding tokens write their keys/values to the last cache position: no real token
        # is ever fed there (the window's last sampled token is never fed back), so it is
        # never attended to.
        S = cfg.gpt.block_size
        self._pad_pos = S - 1
        _check_fits(cfg, N, self.dtype, torch.device(dev))  # a clear error instead of a raw CUDA OOM
        if torch.device(dev).type == "cpu":  # a step's large buffers stay mapped between steps (wham_gym/memory.py)
            keep_freed_memory()
        # Ours: engines may share a model. The compiled pass reads keys stored (head_dim, S): see attend_cache.
        self.caches = model.gpt.new_caches(N, S, dtype=self.dtype, device=dev, keys_transposed=self.compile)
        self._positions = torch.arange(S, device=dev)
        self._compiled_pass = self._compiled_token = self._compiled_prefill = None
        if self.compile:  # one shape per N: (N, 1) tokens against all S cache positions
            self._full_mask = torch.empty(N, 1, 1, S, dtype=self.dtype, device=dev)
            mode = "reduce-overhead" if torch.device(dev).type == "cuda" else None
            # The passes write the caches and the mask in place; CUDA graphs capture a graph that mutates its
            # inputs only when their addresses are static (else they skip it), as gpt-fast's cache buffers are.
            # (Not on CPU, where it bought nothing and measured a few per cent slower.)
            if mode:
                for t in (self._full_mask, *(x for c in self.caches for x in (c.k, c.v))):
                    torch._dynamo.mark_static_address(t)
            self._compiled_pass = torch.compile(self._pass, dynamic=False, mode=mode)
            # Image tokens after a frame's first share one valid range (checked): one compiled pass-and-draw.
            same = len({(self._range_lo[k], self._range_hi[k]) for k in range(1, self.tpi)}) == 1
            self._compiled_token = torch.compile(self._image_token, dynamic=False, mode=mode) if same else None
            # The steady state's prefill (every slot a full window from position 0) has one shape too. It is one
            # call a step of large kernels, so no CUDA graph (as gpt-fast's prefill): only fused elementwise work.
            self._compiled_prefill = torch.compile(self._prefill, dynamic=False)
        self._uniform = False  # whether the last prefill took that path
        self._plan = self._diagonal_plan() if decoding == "diagonal" else None
        self._watch: int | None = None  # watch_first_token's id
        self._ban_watch = False
        self._watch_prob: torch.Tensor | None = None

    def watch_first_token(self, token: int | None, ban: bool = False) -> None:
        """Report, every step, the probability each slot's new frame had of starting with image token ``token``
        (``StepResult.first_token_prob``), read from the same filtered distribution its first token is drawn from.
        ``ban=True`` also removes that token from the draw, so frames are dreamt as if they did not start with it.

        What it is for: a model trained with black end frames starts its end frame with a token no game frame
        starts with, so this is the GPT's own P(the episode ends now | context, action), every step, for a
        termination to decide with (:class:`~wham_gym.rewards.EndRiskTermination`); banned, the frame drawn is the
        world model's next frame given the episode goes on. ``token=None`` stops watching.
        """
        if token is not None:
            lo, hi = self._range_lo[0], self._range_hi[0]
            if not isinstance(token, (int, np.integer)) or not lo <= int(token) <= hi:
                raise ValueError(f"watch_first_token: expected an image token id in [{lo}, {hi}], got {token!r}")
            token = int(token)
            self._watch_index = torch.tensor([token], device=self.device)
        self._watch, self._ban_watch = token, bool(ban) and token is not None

    @property
    def watched(self) -> tuple[int | None, bool]:
        """(the first image token watched or None, whether it is banned): :meth:`watch_first_token`'s settings."""
        return self._watch, self._ban_watch

    # ------------------------------------------------------------------ slots
    def _ids(self, env_ids) -> torch.Tensor:
        if env_ids is None:
            return torch.arange(self.num_envs, device=self.device)
        ids = _as_tensor(env_ids, self.device, torch.long).reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_envs):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs - 1}], got {ids.tolist()}")
        if ids.unique().numel() != ids.numel():
            raise ValueError(f"env_ids must be distinct, got {ids.tolist()}")
        return ids

    def _check_ready(self, ids: torch.Tensor | None = None) -> None:
        prompted = self._prompted if ids is None else self._prompted[ids.cpu().numpy()]
        if not prompted.all():
            never = np.flatnonzero(~self._prompted).tolist()
            raise RuntimeError(f"slots {never} have no context yet: call reset() with a prompt first")

    def reset(self, env_ids=None, frames=None, actions=None, tokens=None, seeds=None) -> None:
        """Give slots a new prompt: P frames (1 <= P <= context_steps) and the actions taken at them.

        ``frames`` is uint8 (n, P, H, W, 3), or pass image ``tokens`` (n, P, tokens_per_image)
        instead. ``actions`` (n, P-1 or P, 16) are controller vectors (sticks in [-1, 1]); the
        action at the newest frame is the one the next ``step()`` supplies, so a P-th entry is
        ignored. ``seeds`` (n,) restarts the slots' random streams.
        """
        ids = self._ids(env_ids)
        n = ids.numel()
        if (frames is None) == (tokens is None):
            raise ValueError("reset: pass exactly one of frames (n, P, H, W, 3) or tokens (n, P, tokens_per_image)")
        if frames is not None:
            frames = _as_tensor(frames, self.device)
            if frames.dim() != 5 or frames.shape[0] != n:
                raise ValueError(f"frames: expected shape ({n}, P, {self.config.frame_height}, "
                                 f"{self.config.frame_width}, 3), got {tuple(frames.shape)}")
            P = frames.shape[1]
            self._check_prompt_len(P)
            tokens = self.model.encode_frames(frames.reshape(n * P, *frames.shape[2:])).reshape(n, P, self.tpi)
        else:
            tokens = _as_tensor(tokens, self.device, torch.long)
            if tokens.dim() != 3 or tokens.shape[0] != n:
                raise ValueError(f"tokens: expected shape ({n}, P, {self.tpi}), got {tuple(tokens.shape)}")
            self.model.vocab.check_image_tokens(tokens, "tokens")
            P = tokens.shape[1]
            self._check_prompt_len(P)
        if P > 1 or actions is not None:
            if actions is None:
                raise ValueError(f"actions: a prompt of {P} frames needs the {P - 1} actions taken at them")
            actions = _as_tensor(actions, self.device, torch.float32)
            if actions.dim() != 3 or actions.shape[0] != n or actions.shape[1] not in (P - 1, P) or actions.shape[2] != ACTION_DIM:
                raise ValueError(f"actions: expected shape ({n}, {P - 1} or {P}, 16), got {tuple(actions.shape)}")
            act_ids = self._action_ids(actions[:, : P - 1])
        else:
            act_ids = torch.zeros(n, 0, ACTION_DIM, dtype=torch.long, device=self.device)

        keep = min(P, self.window)
        W = self.window
        imgs = torch.zeros(n, W, self.tpi, dtype=torch.long, device=self.device)
        acts = torch.zeros(n, W, ACTION_DIM, dtype=torch.long, device=self.device)
        imgs[:, W - keep:] = tokens[:, P - keep:]
        if keep > 1:
            acts[:, W - keep:W - 1] = act_ids[:, P - keep:]
        self.images[ids] = imgs
        self.actions[ids] = acts
        self.n_frames[ids] = keep
        self._prompted[ids.cpu().numpy()] = True
        self.has_pending[ids] = False
        self._all_pending = False
        self.since_refresh[ids] = 0  # next step re-prefills these slots
        if seeds is not None:
            seeds = _as_tensor(seeds, self.device, torch.long).reshape(-1)
            if seeds.numel() != n:
                raise ValueError(f"seeds: expected {n} values, got {seeds.numel()}")
            self.seeds[ids] = seeds
            self.draws[ids] = 0

    def _check_prompt_len(self, P: int) -> None:
        if not 1 <= P <= self.context_steps:
            raise ValueError(f"a prompt holds 1 to {self.context_steps} frames (context_steps), got {P}")

    def replace_frames(self, env_ids, frames=None, tokens=None) -> None:
        """Swap the newest frame of some slots for real frames (reinjection); re-encoded to tokens.

        frames (n, H, W, 3) or tokens (n, tokens_per_image) replace the newest frame;
        (n, k, H, W, 3) or (n, k, tokens_per_image) replace the newest k (whole-window reinjection).
        """
        ids = self._ids(env_ids)
        self._check_ready(ids)
        if (frames is None) == (tokens is None):
            raise ValueError("replace_frames: pass exactly one of frames (n, H, W, 3) or tokens (n, tokens_per_image)")
        if frames is not None:
            frames = _as_tensor(frames, self.device)
            k = frames.shape[1] if frames.ndim == 5 else None
            tokens = self.model.encode_frames(frames.reshape(-1, *frames.shape[-3:]))
        else:
            tokens = _as_tensor(tokens, self.device, torch.long)
            k = tokens.shape[1] if tokens.ndim == 3 else None
            self.model.vocab.check_image_tokens(tokens.reshape(-1, tokens.shape[-1]), "tokens")
        tokens = tokens.reshape(-1, k, self.tpi) if k else tokens.unsqueeze(1)  # (n, k, tokens_per_image)
        if tokens.shape[0] != ids.numel():
            raise ValueError(f"replace_frames: {ids.numel()} env_ids but {tokens.shape[0]} frames")
        k = tokens.shape[1]
        if k > 1 and k > int(self.n_frames[ids].min()):  # (a sync, but only for whole-window reinjection)
            raise ValueError(f"replace_frames: {k} frames, but a slot holds only {int(self.n_frames[ids].min())}")
        self.images[ids, -k:] = tokens
        self.has_pending[ids] = False
        self._all_pending = False
        self.since_refresh[ids] = 0

    def context_tokens(self, env_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot ``env_id``'s window: image tokens (P, tokens_per_image) and action ids (P-1, 16)."""
        n = int(self.n_frames[env_id])
        W = self.window
        return self.images[env_id, W - n:].clone(), self.actions[env_id, W - n:W - 1].clone()

    # ------------------------------------------------------------------ stepping
    def _action_ids(self, actions: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """Controller vectors -> action-vocab ids: validated and clipped here, once, unless the caller did."""
        if not checked:
            controller.validate_actions(actions, "actions")
            actions = controller.clip_actions(actions)
        return action_tokens(controller.to_wham(actions, check=False), check=False)

    @torch.no_grad()
    def step(self, actions=None, decode: bool = True, predict_actions: bool = False,
             checked: bool = False) -> StepResult:
        """Take action a at each slot's newest frame and dream the next frame, for all slots.

        ``actions`` (N, 16) controller vectors (sticks in [-1, 1]; out-of-range values are
        clipped). ``actions=None`` lets the model act (behaviour-policy / full generation):
        each slot takes the action the model predicts at its newest frame. With
        ``predict_actions`` the model's action at the new frame is decoded too (16 more tokens).
        ``checked=True``: the caller validated ``actions`` (shape, finite) and clipped them to the
        Box at its own boundary (the env does), so the step adds no check of its own.
        """
        self._check_ready()
        if actions is None:
            self._ensure_pending()
            act_ids = self.pending.clone()
            predict_actions = True  # the next step will need the model's action again
        else:
            actions = _as_tensor(actions, self.device, torch.float32)
            if not checked and tuple(actions.shape) != (self.num_envs, ACTION_DIM):
                raise ValueError(f"actions: expected shape ({self.num_envs}, {ACTION_DIM}), got {tuple(actions.shape)}")
            act_ids = self._action_ids(actions, checked)
        self.actions[:, -1] = act_ids

        n_new = self.tpi + (ACTION_DIM if predict_actions else 0)
        seqs, lengths, starts, live, uniform = self._inputs()
        new, nll, ent = self._generate(seqs, lengths, starts, live, uniform, first=0, n_new=n_new)
        img = new[:, : self.tpi]

        # Refresh-mode cache bookkeeping: the last sampled token is never fed back.
        self.cache_len = starts + lengths + self.tpi - 1
        self.since_refresh = (self.since_refresh + 1) % self.refresh_every
        # Slide the window: drop the oldest frame once the window is full.
        self.images = torch.roll(self.images, -1, dims=1)
        self.actions = torch.roll(self.actions, -1, dims=1)
        self.images[:, -1] = img
        self.n_frames = (self.n_frames + 1).clamp_max(self.window)

        predicted = None
        if predict_actions:
            self.pending = new[:, self.tpi:] - self._action_offset
            self.has_pending[:] = True
            self._all_pending = True
            predicted = controller.from_wham(action_values(self.pending), check=False)
        else:
            self.has_pending[:] = False
            self._all_pending = False
        # Tokens sampled within the valid range need no boundary check (which would sync the host).
        frames = self.model.tokenizer.decode(img, check=False).permute(0, 2, 3, 1) if decode else None
        return StepResult(tokens=img, frames=frames, nll=nll, entropy=ent, predicted_actions=predicted,
                          first_token_prob=self._watch_prob if self._watch is not None else None)

    def signal_uniforms(self) -> torch.Tensor:
        """(N,) float64 uniforms for the step just taken, one per slot, for stochastic episode signals (a
        sampled termination hazard). Each slot's own seed, a stream apart from its tokens' (which stay
        unchanged), indexed by the slot's draw counter, so a seeded dream ends where it ended before."""
        return uniforms(self.seeds ^ _SIGNAL_STREAM, self.draws, 1)[:, 0]

    @torch.no_grad()
    def predict_actions(self) -> torch.Tensor:
        """The model's action at each slot's newest frame (behaviour policy), as (N, 16) controller vectors.

        Sampled once and kept: a following ``step(None)`` takes exactly this action.
        """
        self._check_ready()
        self._ensure_pending()
        return controller.from_wham(action_values(self.pending), check=False)

    def _ensure_pending(self) -> None:
        """Sample the action at the newest frame for slots that have none (policy pass)."""
        if self._all_pending:
            return
        new, _, _ = self._generate(*self._inputs(policy=True), first=self.tpi, n_new=ACTION_DIM)
        need = ~self.has_pending
        self.pending[need] = new[need] - self._action_offset
        self.has_pending[:] = True
        self._all_pending = True
        self.since_refresh[:] = 0  # the cache now holds this pass, not the dream window

    def _inputs(self, policy: bool = False):
        """Right-padded token sequences to prefill, their lengths and start positions.

        A slot due for a refresh feeds its whole window (positions from 0); with
        ``refresh_every > 1`` the others append only what the cache lacks: the newest
        frame's last image token and its action tokens.
        """
        W, tps, N = self.window, self.tps, self.num_envs
        flat = torch.cat([self.images, self.actions + self._action_offset], dim=-1).reshape(N, W * tps)
        n = self.n_frames
        lengths = n * tps - (ACTION_DIM if policy else 0)
        offset = (W - n) * tps
        starts = torch.zeros_like(n)
        if self.refresh_every > 1 and not policy:
            append = self.since_refresh != 0
            # The window as it will be after this step's drop, for slots that re-prefill now.
            lengths = torch.where(append, torch.full_like(n, ACTION_DIM + 1), lengths)
            offset = torch.where(append, flat.shape[1] - ACTION_DIM - 1, offset)
            starts = torch.where(append, self.cache_len, starts)
            refresh = ~append & (n > self.window - self.refresh_every + 1)
            drop = (n - (self.window - self.refresh_every + 1)).clamp_min(0)
            lengths = torch.where(refresh, lengths - drop * tps, lengths)
            offset = torch.where(refresh, offset + drop * tps, offset)
        # The step's one host sync: the prefill's size, and whether every slot fills it from position 0.
        L, shortest, live = torch.stack([lengths.max(), lengths.min(), (starts + lengths).max()]).tolist()
        index = (offset[:, None] + torch.arange(L, device=self.device)).clamp_max(flat.shape[1] - 1)
        uniform = shortest == L and live == L  # every slot: L tokens at positions 0..L-1
        return flat.gather(1, index), lengths, starts, live, uniform

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """Bool attention mask -> additive (0 / -inf) in the model dtype, built once for all layers."""
        return torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(~allowed, float("-inf"))

    def _generate(self, seqs, lengths, starts, live: int, uniform: bool, first: int, n_new: int):
        """Prefill ``seqs`` then sample ``n_new`` tokens at positions-in-step ``first``.. for all slots.

        ``live``: the longest slot's positions; ``uniform``: every slot prefills ``L`` tokens at
        positions 0..L-1 (both from :meth:`_inputs`). Returns the tokens (N, n_new) and the mean
        NLL and entropy of the image tokens sampled.
        """
        gpt = self.model.gpt
        N, L = seqs.shape
        ar = torch.arange(L, device=self.device)
        valid = ar[None, :] < lengths[:, None]
        pos = torch.where(valid, starts[:, None] + ar[None, :], torch.full_like(seqs, self._pad_pos))
        u = uniforms(self.seeds, self.draws, n_new)  # draw g of a step belongs to token g, whatever the order
        self.draws = self.draws + n_new

        # Attention reads only the live prefix of the cache: the longest slot's positions.
        keys = self._positions
        self._uniform = uniform and self._causal_prefill
        if self._uniform:  # every slot prefills a whole window from position 0 (the steady state)
            mask = None  # causal attention: the fused kernel, no (N, L, L) mask to build or read
        else:
            mask = self._additive(keys[None, None, :live] <= pos[:, :, None])[:, None]
        if self._compiled_prefill is not None and self._uniform and L == self.window * self.tps:
            last = self._compiled_prefill(seqs, pos, lengths - 1)
        else:
            last = gpt(seqs, pos=pos, mask=mask, caches=self.caches, gather=lengths - 1)[:, 0]
        cur = starts + lengths  # position of the next token to feed
        out = torch.empty(N, n_new, dtype=torch.long, device=self.device)
        stats = torch.zeros(2, N, dtype=torch.float64, device=self.device)  # summed NLL and entropy
        g0 = 0
        if first == 0:
            self.last_passes = self.tpi  # exact decoding: the prefill, then one pass per token but the last
            if self._plan is not None:
                g0 = self._decode_diagonal(last, cur, live, u, out, stats)
                self.last_passes = 1 + len(self._plan)
            elif self.decoding == "speculative":
                g0 = self._decode_speculative(last, cur, live, u, out, stats)
            if g0:
                last, cur = None, cur + g0  # token g0 is sampled, not yet fed
        self._decode_sequential(last, cur, live, u, out, stats, first, g0, n_new)
        n_img = max(min(self.tpi - first, n_new), 0)
        nll, ent = (stats / n_img) if n_img else stats
        return out, nll.float(), ent.float()

    def _sample(self, logits: torch.Tensor, k: int, u: torch.Tensor):
        """Draw tokens for rows of ``logits`` (M, V) at position-in-step ``k``; their NLL and entropy if image tokens."""
        lo, hi = self._range_lo[k], self._range_hi[k]
        logits = logits.float()
        filtered = filter_logits(logits, lo, hi, **self.sampling, outside=self._outside[k])
        if k == 0 and self._watch is not None:  # a frame's first token: the watched token's chance, maybe banned
            self._watch_prob = filtered.double().softmax(-1)[:, self._watch]
            if self._ban_watch:  # filtered again without it: argmax, top-k and top-p pick among the rest
                filtered = filter_logits(logits.index_fill(1, self._watch_index, float("-inf")), lo, hi,
                                         **self.sampling, outside=self._outside[k])
        tok = draw(filtered, u)
        if k >= self.tpi:
            return tok, None, None
        # Uncertainty of image tokens, from the model's own distribution over the valid range. In float32: the
        # step reports float32 means (summed in float64), and log_softmax over the vocabulary in float64 was ~6 %
        # of a take_cover step at N = 64 (benchmarks/RESULTS.md). The draw above stays in float64.
        logp = logits[:, lo:hi + 1].log_softmax(-1)
        nll = -logp.gather(1, (tok - lo)[:, None]).squeeze(1)
        ent = -(logp.exp() * logp).nan_to_num().sum(-1)
        return tok, nll, ent

    def _decode_sequential(self, last, cur, live, u, out, stats, first: int, g0: int, n_new: int) -> None:
        """Tokens ``g0``.. one per pass (WHAM's order). ``last``: logits for token ``g0`` (None: token ``g0`` is
        already in ``out``, sampled but not fed, at position ``cur``)."""
        # Decode mask, updated in place: each fed token opens its own position for its slot. Eager passes
        # attend over the live prefix only; the compiled pass over the whole cache (one shape, compiled once).
        if self.compile:
            dmask = self._full_mask[:, 0, 0]
            dmask.fill_(float("-inf")).masked_fill_(self._positions[None, :] < cur[:, None], 0.0)
        else:
            dmask = self._additive(self._positions[None, :live + n_new] < cur[:, None])
        for g in range(g0, n_new):
            if last is not None:
                tok, nll, ent = self._sample(last, first + g, u[:, g])
                out[:, g] = tok
                if nll is not None:
                    stats[0] += nll
                    stats[1] += ent
            if g == n_new - 1:
                break
            dmask.scatter_(1, cur[:, None], 0.0)
            if self._compiled_token is not None and 0 < first + g + 1 < self.tpi:
                # The next token is an image token: one compiled call feeds this token and samples the next.
                tok, nll, ent = self._compiled_token(out[:, g:g + 1].contiguous(), cur[:, None], self._full_mask,
                                                     u[:, g + 1])
                out[:, g + 1] = tok
                stats[0] += nll
                stats[1] += ent
                last = None
            elif self.compile:
                last = self._compiled_pass(out[:, g:g + 1].contiguous(), cur[:, None], self._full_mask)
            else:
                last = self._pass(out[:, g:g + 1], cur[:, None], dmask[:, None, None, :live + g + 1])
            cur = cur + 1

    def _prefill(self, seqs, pos, gather):
        """Full windows from position 0 into the cache; logits (N, V) at ``gather`` (compiled, one shape)."""
        return self.model.gpt(seqs, pos=pos, caches=self.caches, gather=gather)[:, 0]

    def _image_token(self, tokens, pos, mask, u):
        """gpt-fast's ``decode_one_token``: one decode pass and the draw of the next image token (not a frame's
        first: every other image token has the same valid range, so this compiles once). Returns the tokens
        (N,) and their NLL and entropy."""
        return self._sample(self._pass(tokens, pos, mask), 1, u)

    def _pass(self, tokens, pos, mask):
        """One decode pass: feed ``tokens`` (N, 1) at ``pos`` (N, 1), attend under ``mask``; logits (N, V)."""
        return self.model.gpt(tokens, pos=pos, mask=mask, caches=self.caches)[:, -1]

    def _decode_diagonal(self, last, cur, live, u, out, stats) -> int:
        """A frame's image tokens one anti-diagonal of the (rows, cols) grid per pass; returns the next token index.

        Token (r, c) is raster index r*cols + c at position ``cur + index``; diagonal d holds the
        tokens with r + c = d. Pass d feeds the tokens sampled in pass d-1, each at its own position,
        and samples diagonal d from their outputs: token (r, c)'s logits come from its left
        neighbour (r, c-1), exactly as in raster decoding, but its context lacks the raster
        predecessors not yet sampled (the rows below-left; they are masked out). A row's first
        token (d, 0) needs its raster predecessor (d-1, cols-1), sampled only later: the previous
        frame's token there stands in (frames change little from step to step), and is overwritten
        in the cache when the real one is fed. Each token keeps its own random draw, so a slot's
        dream depends only on its seed and inputs, as in exact decoding.
        """
        gpt, N = self.model.gpt, self.num_envs
        keys = self._positions[None, None, :live + self.tpi]
        filled = keys[:, 0] < cur[:, None]  # (N, P): positions a query may attend to (the prefill's so far)
        prev = self.images[:, -1]  # the newest frame now: the previous one of the frame being dreamt
        tok, nll, ent = self._sample(last, 0, u[:, 0])
        out[:, 0] = tok
        stats[0] += nll
        stats[1] += ent
        for fed, standin, index, keep, targets in self._plan:
            inputs = out[:, fed]  # the tokens sampled last pass
            if standin is not None:  # a row's first token: its raster predecessor stood in by the previous frame's
                inputs = torch.cat([inputs, prev[:, standin]], 1)
            pos = cur[:, None] + index[None, :]  # (N, Q)
            filled.scatter_(1, pos, True)  # tokens fed together see each other, in raster order
            allowed = filled[:, None, :] & (keys <= pos[:, :, None])  # (N, Q, P)
            logits = gpt(inputs, pos=pos, mask=self._additive(allowed)[:, None], caches=self.caches)
            rows = logits[:, keep].reshape(-1, logits.shape[-1])  # the queries whose next token is on this diagonal
            tok, nll, ent = self._sample(rows, 1, u[:, targets].reshape(-1))  # every image token past the first
            out[:, targets] = tok.view(N, -1)                                    # has the same valid range
            stats[0] += nll.view(N, -1).sum(1)
            stats[1] += ent.view(N, -1).sum(1)
        return self.tpi - 1  # the last image token is sampled, not yet fed

    def _decode_speculative(self, last, cur, live, u, out, stats) -> int:
        """A frame's image tokens by self-speculation, exactly as raster decoding samples them; returns the next
        token index (the last image token is sampled, not yet fed).

        Token g's sample is a function of its logits and its own uniform ``u[:, g]`` only, so a draft
        can be checked by drawing it: each pass feeds, per slot, its last sampled token (index
        ``done - 1``) and the drafts for the next ``verify_block - 1`` indices (the previous frame's
        tokens there), each at its own position, causal among themselves. Row j's logits are the
        exact ones for token ``done + j`` as long as every draft fed before it was confirmed; so the
        pass keeps its draws while they equal the drafts fed after them, plus the first draw that
        differs (it was drawn from exact logits too): 1 to ``verify_block`` tokens a pass. Slots
        advance by different amounts; a finished slot re-feeds its last token, harmlessly.

        Cache: positions below a slot's frontier (prefill + tokens kept) hold exact keys/values; a
        pass writes from the frontier on, and a query attends to positions <= its own only, so
        the keys/values of rejected drafts (above the frontier) are never read before being
        overwritten. Positions past the cache's end go to its last (padding) position. NLL and
        entropy come from the same rows as the tokens kept, as in exact decoding.
        """
        gpt, N, T, K = self.model.gpt, self.num_envs, self.tpi, self.verify_block
        dev, S = self.device, self._pad_pos + 1
        tok, nll, ent = self._sample(last, 0, u[:, 0])
        out[:, 0] = tok
        stats[0] += nll
        stats[1] += ent
        drafted = torch.zeros(N, dtype=torch.long, device=dev)
        accepted = torch.zeros(N, dtype=torch.long, device=dev)
        self.last_drafted, self.last_accepted = drafted, accepted
        if T == 1:
            return 0
        # Index g < done: the sampled token g; from done on: the draft. Columns past the frame pad the
        # blocks of slots near their end (their rows are discarded); the last column takes discarded writes.
        seq = torch.cat([self._draft(), torch.zeros(N, K, dtype=torch.long, device=dev)], 1)
        seq[:, 0] = tok
        done = torch.ones(N, dtype=torch.long, device=dev)  # tokens sampled per slot
        ar = torch.arange(K, device=dev)
        keys = self._positions[None, None, :min(live + T + K - 1, S)]  # every position a pass writes
        sink = seq.shape[1] - 1
        min_passes = -(-(T - 1) // K)  # no slot can finish sooner: no sync before then
        for p in range(1, T):
            idx = (done - 1)[:, None] + ar  # (N, K) token indices fed: the last sampled, then drafts
            fed = seq.gather(1, idx)
            pos = (cur[:, None] + idx).clamp_max(S - 1)
            mask = self._additive(keys <= pos[:, :, None])[:, None]
            logits = gpt(fed, pos=pos, mask=mask, caches=self.caches)  # row j: logits of token idx_j + 1
            target = idx + 1
            ut = u.gather(1, target.clamp_max(T - 1))
            tok, nll, ent = self._sample(logits.reshape(N * K, -1), 1, ut.reshape(-1))  # one valid range past token 0
            tok, nll, ent = tok.view(N, K), nll.view(N, K), ent.view(N, K)
            confirmed = (tok[:, :-1] == fed[:, 1:]).long().cumprod(1).sum(1)  # leading draws equal to the drafts
            left = T - done
            count = torch.minimum(confirmed + 1, left)  # 0 for finished slots
            keep = ar[None, :] < count[:, None]
            seq.scatter_(1, torch.where(keep, target, sink), tok)
            stats[0] += torch.where(keep, nll, 0.0).sum(1)  # where, not a product: discarded rows may hold inf/nan
            stats[1] += torch.where(keep, ent, 0.0).sum(1)
            drafted += (left - 1).clamp(0, K - 1)  # drafts that could have become tokens of this frame
            accepted += (count - 1).clamp_min(0)
            done = done + count
            # The loop's host sync, one per pass once a slot could have finished: whether all have.
            if p >= min_passes and int(done.min()) >= T:
                break
        self.last_passes = 1 + p
        out[:, :T] = seq[:, :T]
        return T - 1

    def _draft(self) -> torch.Tensor:
        """Draft of the frame being dreamt (N, tokens_per_image): the newest frame's tokens (frames change little)."""
        return self.images[:, -1]  # read only: the caller copies it into its own buffer

    def _diagonal_plan(self) -> list[tuple]:
        """Pass d = 1 .. rows+cols-2 of diagonal decoding, as index tensors built once (no host work per pass).

        Each pass: ``fed`` (the raster indices of diagonal d-1), ``standin`` (the previous frame's
        index standing in for row d's first token's predecessor, or None), ``index`` (the positions
        fed, the stand-in last), ``keep`` (the queries whose next token lies on diagonal d) and
        ``targets`` (those tokens' raster indices).
        """
        R, C = self._grid

        def diagonal(d: int) -> list[int]:  # raster indices with r + c = d, top row first
            return [r * C + d - r for r in range(max(0, d - C + 1), min(R - 1, d) + 1)]

        plan = []
        for d in range(1, R + C - 1):
            fed, on_d = diagonal(d - 1), set(diagonal(d))
            standin = [d * C - 1] if d < R and C > 1 else None
            index = fed + (standin or [])
            keep = [j for j, i in enumerate(index) if i + 1 in on_d]
            as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=self.device)  # noqa: E731
            plan.append((as_tensor(fed), None if standin is None else as_tensor(standin), as_tensor(index),
                         as_tensor(keep), as_tensor([index[j] + 1 for j in keep])))
        return plan
