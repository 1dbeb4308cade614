"""``RayExecutor``: ``concurrent.futures.Executor`` over Ray tasks, so code written for a process pool runs on a cluster.

``submit(fn, *args)`` runs ``fn`` as a Ray task (``num_cpus`` each, more options via
``task_options``) and returns a standard Future. Functions must be importable on the
workers (module-level functions of an installed package), as with a process pool.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future

from ._ray import ensure_initialized


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Run submitted calls as Ray tasks. ``address``: see :func:`~wham_gym.cluster._ray.ensure_initialized`."""

    def __init__(self, num_cpus: float = 1, address: str | None = None, **task_options):
        self.ray = ray = ensure_initialized(address)
        self._task = ray.remote(_call).options(num_cpus=num_cpus, **task_options)
        self._refs: list = []
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._shutdown:
            raise RuntimeError("RayExecutor: submit after shutdown")
        ref = self._task.remote(fn, args, kwargs)
        self._refs.append(ref)
        return ref.future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            for ref in self._refs:
                self.ray.cancel(ref, force=True)
        elif wait and self._refs:
            self.ray.wait(self._refs, num_returns=len(self._refs))
        self._refs = []
