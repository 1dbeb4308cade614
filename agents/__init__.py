"""Agents trained inside a WHAM dream and evaluated in the real game (issue 9).

- :mod:`agents.wrappers`: the dream and real-game VecEnvs, built with identical wrappers.
- :mod:`agents.evaluate`: returns of a policy (SB3 model, random, WHAM's behaviour policy) in either world.
- :mod:`agents.train_sb3`: PPO / SAC training with logs, checkpoints, periodic evaluation, resume.
- :mod:`agents.compare`: the side-by-side rows, learning curves and ``agents/RESULTS.md``.

Run the scripts from the repository root: ``python -m agents.train_sb3 --help``.
"""
