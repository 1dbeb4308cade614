"""The env's parts on their own: Autoreset (Gymnasium's three modes) and EpisodeSignals, on constructed tensors."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from wham_gym.autoreset import Autoreset, parse_mode, put
from wham_gym.rewards import EpisodeSignals, StepContext

N = 3
B = torch.tensor  # bool masks read best as lists


class Hooks:
    """The env's side of Autoreset: restart slots to known rows, build an info, present observations."""

    def __init__(self):
        self.restarted, self.info_calls = [], []

    def restart(self, ids):
        self.restarted.append(ids.tolist())
        return {"tokens": torch.full((len(ids), 2), -1), "pixels": None}

    def info(self, stepped):
        self.info_calls.append(None if stepped is None else stepped.tolist())
        mask = torch.ones(N, dtype=torch.bool) if stepped is None else stepped
        return {"nll": torch.arange(N, dtype=torch.float32), "_nll": mask}

    @staticmethod
    def present(obs):
        return obs["tokens"].numpy()

    def step(self, auto, terminated, truncated, reward=None):
        obs = {"tokens": torch.arange(N * 2).view(N, 2), "pixels": None}  # row i is [2i, 2i+1]
        reward = torch.ones(N) if reward is None else reward
        return auto.step(obs, reward, B(terminated), B(truncated), info=self.info, restart=self.restart,
                         present=self.present)


NONE = [False] * N


def test_parse_mode():
    assert parse_mode("same_step") is parse_mode("SameStep") is parse_mode(AutoresetMode.SAME_STEP) is AutoresetMode.SAME_STEP
    assert parse_mode("DISABLED") is AutoresetMode.DISABLED and Autoreset("next_step", N).mode is AutoresetMode.NEXT_STEP
    with pytest.raises(ValueError, match="autoreset_mode"):
        parse_mode("sometimes")


def test_next_step_resets_a_done_slot_one_step_later():
    auto, hooks = Autoreset("NEXT_STEP", N), Hooks()
    # Step t: slot 1 terminates, slot 2 truncates. The step is returned as is; nothing restarts yet.
    obs, rew, term, trunc, info = hooks.step(auto, [False, True, False], [False, False, True])
    assert hooks.restarted == [] and hooks.info_calls == [None]
    assert term.tolist() == [False, True, False] and trunc.tolist() == [False, False, True] and rew.tolist() == [1, 1, 1]
    assert auto.pending.tolist() == [False, True, True]
    # Step t+1: slots 1 and 2 restart: their reset observation, reward 0, not done, the reset info.
    # Slot 1 "terminates again" in the dream it no longer shows; that is dropped too.
    obs, rew, term, trunc, info = hooks.step(auto, [True, True, False], [False, False, True], torch.tensor([5., 6., 7.]))
    assert hooks.restarted == [[1, 2]] and hooks.info_calls == [None, [True, False, False]]
    assert obs["tokens"].tolist() == [[0, 1], [-1, -1], [-1, -1]] and obs["pixels"] is None
    assert rew.tolist() == [5, 0, 0] and term.tolist() == [True, False, False] and trunc.tolist() == NONE
    assert info["_nll"].tolist() == [True, False, False]
    assert auto.pending.tolist() == [True, False, False]  # slot 0's own end is due next
    # A slot the caller resets by hand is no longer due.
    auto.reset(torch.tensor([0]))
    obs, rew, *_ = hooks.step(auto, NONE, NONE)
    assert hooks.restarted == [[1, 2]] and rew.tolist() == [1, 1, 1] and obs["tokens"][0].tolist() == [0, 1]


def test_same_step_returns_the_reset_observation_and_keeps_the_final_one():
    auto, hooks = Autoreset("SAME_STEP", N), Hooks()
    obs, rew, term, trunc, info = hooks.step(auto, [False, True, False], NONE, torch.tensor([5., 6., 7.]))
    assert hooks.restarted == [[1]] and hooks.info_calls == [None, [True, False, True]]
    # The step reports the end (reward and terminated as the step gave them) with the reset observation...
    assert rew.tolist() == [5, 6, 7] and term.tolist() == [False, True, False] and trunc.tolist() == NONE
    assert obs["tokens"].tolist() == [[0, 1], [-1, -1], [4, 5]]
    # ...and the final observation and info under Gymnasium's keys, masked to the finished slot.
    assert info["_final_obs"].tolist() == info["_final_info"].tolist() == [False, True, False]
    assert info["final_obs"][0] is None and info["final_obs"][2] is None
    assert np.array_equal(info["final_obs"][1], [2, 3])  # the pre-reset observation, as present() gives it
    assert info["final_info"]["_nll"].tolist() == [False, True, False]
    assert info["_nll"].tolist() == [True, False, True]  # the restarted slot has the reset info
    assert auto.pending.tolist() == NONE
    # A step where nothing ends adds no final keys.
    *_, info = hooks.step(auto, NONE, NONE)
    assert "final_obs" not in info and hooks.restarted == [[1]]


def test_disabled_leaves_done_slots_alone():
    auto, hooks = Autoreset(AutoresetMode.DISABLED, N), Hooks()
    for _ in range(2):  # done twice in a row: still never restarted
        obs, rew, term, trunc, info = hooks.step(auto, [True, False, False], [False, False, True])
        assert obs["tokens"].tolist() == [[0, 1], [2, 3], [4, 5]] and rew.tolist() == [1, 1, 1]
        assert term.tolist() == [True, False, False] and trunc.tolist() == [False, False, True]
        assert "final_obs" not in info and info["_nll"].all()
    assert hooks.restarted == [] and auto.pending.tolist() == NONE


def test_put_writes_rows_and_skips_missing_parts():
    obs = {"tokens": torch.zeros(N, 2, dtype=torch.long), "pixels": None}
    put(obs, torch.tensor([0, 2]), {"tokens": torch.tensor([[1, 1], [2, 2]]), "pixels": torch.ones(2, 4)})
    assert obs["tokens"].tolist() == [[1, 1], [0, 0], [2, 2]] and obs["pixels"] is None


# ---------------------------------------------------------------- EpisodeSignals
def context(steps, tokens=None):
    tokens = torch.zeros(N, 4, dtype=torch.long) if tokens is None else tokens
    return StepContext(tokens=tokens, prev_tokens=tokens.clone(), frames=None, actions=torch.zeros(N, 16),
                       steps=torch.tensor(steps), nll=torch.zeros(N), entropy=torch.zeros(N))


def test_signals_default_to_nothing_and_truncate_at_the_limit():
    signals = EpisodeSignals(max_episode_steps=3)
    no = torch.zeros(N, dtype=torch.bool)
    reward, term, trunc = signals(context([1, 3, 4]), no, no)
    assert reward.dtype == torch.float32 and reward.tolist() == [0, 0, 0]
    assert term.tolist() == NONE and trunc.tolist() == [False, True, True]
    assert not signals.needs_frames
    # A real episode behind the dream that ended ends the dream's episode; the limit is read each step.
    signals.max_episode_steps = None
    _, term, trunc = signals(context([1, 3, 4]), B([True, False, False]), B([False, True, False]))
    assert term.tolist() == [True, False, False] and trunc.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="max_episode_steps"):
        EpisodeSignals(max_episode_steps=0)


def test_signals_check_the_callables_output():
    signals = EpisodeSignals(reward_fn=lambda ctx: ctx.steps, termination_fn=lambda ctx: ctx.steps % 2)
    no = torch.zeros(N, dtype=torch.bool)
    reward, term, _ = signals(context([1, 2, 3]), no, no)
    assert reward.dtype == torch.float32 and reward.tolist() == [1, 2, 3]
    assert term.dtype == torch.bool and term.tolist() == [True, False, True]
    assert signals.needs_frames  # callables that do not say otherwise are given frames
    bad = EpisodeSignals(reward_fn=lambda ctx: torch.zeros(5))
    with pytest.raises(ValueError, match=r"reward_fn must return .* shape \(3,\)"):
        bad(context([1, 1, 1]), no, no)


class Net(torch.nn.Module):
    """A shipped reward model's interface: (prev tokens, action tokens, tokens) -> (reward, termination logit)."""

    calls = 0

    def forward(self, prev, actions, tokens):
        Net.calls += 1
        return tokens[:, 0].float(), torch.where(tokens[:, 1] > 0, 10.0, -10.0)


def test_signals_default_to_the_shipped_reward_model_unless_given():
    no = torch.zeros(N, dtype=torch.bool)
    tokens = torch.tensor([[7, 0, 0, 0], [8, 1, 0, 0], [9, 0, 0, 0]])
    signals = EpisodeSignals(reward_model=Net())
    reward, term, _ = signals(context([1, 1, 1], tokens), no, no)
    assert Net.calls == 1  # one forward pass serves reward and termination
    assert reward.tolist() == [7, 8, 9] and term.tolist() == [False, True, False] and not signals.needs_frames
    # A reward_fn given wins over the shipped one; termination still comes from it.
    signals = EpisodeSignals(reward_fn=lambda ctx: torch.full((N,), 0.5), reward_model=Net())
    reward, term, _ = signals(context([1, 1, 1], tokens), no, no)
    assert reward.tolist() == [0.5] * N and term.tolist() == [False, True, False]
