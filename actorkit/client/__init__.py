"""The client side of a node, one per process (the driver, each worker): ``Client``.

``Client`` (``core.py``, where the data-flow diagram is) is what the rest of
actorkit uses; it is made of parts that a reader can take one at a time:
``connection``, ``refs``, ``calls``, ``leases``, ``objects``, ``direct_calls``,
``waiting``, all sharing one lock and the tables of ``shared.Shared``.
"""

from .core import Client, ClientStatistics

__all__ = ["Client", "ClientStatistics"]
