"""The ``ray:<app>[@<address>]`` spec that points a front end at a Ray Serve application.

``<app>`` is the Serve application's name (``livecanvas deploy --app``); ``<address>`` is the Ray
cluster to join, as ``ray.init`` takes it (``auto``, the default, finds the cluster this machine's
``ray start`` joined; ``host:6379`` names a head node). No Ray import here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import EngineError

RAY_PREFIX = "ray:"
DEFAULT_APP = "livecanvas"
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class RaySpec:
    app: str
    address: str = "auto"

    def __str__(self) -> str:
        return f"{RAY_PREFIX}{self.app}@{self.address}"


def ray_spec(spec: str | None) -> RaySpec | None:
    """The parsed spec for ``ray:...``; None for any other model spec; ``EngineError`` if malformed."""
    if spec is None or not spec.startswith(RAY_PREFIX):
        return None
    app, _, address = spec[len(RAY_PREFIX) :].partition("@")
    app = app or DEFAULT_APP
    if not _APP_NAME.fullmatch(app):
        raise EngineError(f"a Ray Serve application name is letters, digits, '_', '.', '-', got {app!r}")
    return RaySpec(app=app, address=address or "auto")
