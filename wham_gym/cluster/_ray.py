"""Ray, imported only when a distributed object is built: the base install does not need it (extra ``[ray]``)."""

from __future__ import annotations

INSTALL_HINT = 'pip install "wham-gym[ray]"  (or: pip install "ray>=2.9")'


def require_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as exc:  # the optional extra is missing
        raise ImportError(f"wham_gym.cluster needs Ray, which is not installed: {INSTALL_HINT}") from exc
    return ray


def ensure_initialized(address: str | None = None):
    """Connect to Ray unless this process already is: ``address`` (a cluster's ``host:port``, ``"auto"``,
    ``"local"``) or Ray's default (``RAY_ADDRESS``, else a new local instance on this machine)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    elif address is not None:
        raise ValueError(f"address={address!r}: this process is already connected to Ray; call ray.shutdown() "
                         "first, or drop address to use the connection it has")
    return ray
