"""What a connection uses of its server (``stream.server.LivecanvasServer`` is one), as a Protocol: the
session module needs no import of the server, which imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.cluster.frontend import ClusterModel
    from engine.runtime import ServingModel
    from stream.auth import TokenTable
    from stream.config import ServerConfig
    from stream.final_log import FinalLog
    from stream.hub import StreamHub
    from stream.limits import SessionCounter
    from stream.metrics import ServerMetrics
    from stream.session import Connection


class SessionHost(Protocol):
    """See the module docstring."""

    config: ServerConfig
    auth: TokenTable | None
    model: ServingModel | ClusterModel | None  # None until the model has loaded
    connections: set[Connection]
    finals: FinalLog
    hub: StreamHub
    metrics: ServerMetrics
    sessions: SessionCounter

    def stats(self) -> dict[str, int | float]: ...
