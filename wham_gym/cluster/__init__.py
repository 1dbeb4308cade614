"""WHAM dreams, game recording and evaluation over Ray (optional extra ``[ray]``).

- :class:`RayVectorEnv` (``vector.py``): a ``WHAMVectorEnv`` whose slots live on Ray actors,
  one engine per actor and device; also ``gym.make_vec("wham_gym/WHAM-Ray-v0", ...)``.
- :class:`RayExecutor` (``executor.py``): a ``concurrent.futures`` executor over Ray tasks, for
  ``wham_gym.games.recorder.record(..., executor=...)``.
- ``games.py``: real games on Ray actors as an SB3 ``VecEnv`` (``agents.evaluate``'s ``ray`` path).

Ray itself is imported only when one of these is built, so the package imports without it.
"""

from .executor import RayExecutor
from .vector import ActorFailure, RayVectorEnv

__all__ = ["ActorFailure", "RayExecutor", "RayVectorEnv"]
