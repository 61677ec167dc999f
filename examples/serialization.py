"""Seed 002: what the object store keeps -- aliasing, recursion, numpy, custom serializers.

Run with:  python examples/serialization.py
"""

import pickle
import threading

import numpy as np

import actorkit as ray
from actorkit.util import deregister_serializer, register_serializer

ray.init()

# Aliasing survives: a list holding the same list twice comes back that way
# (Ray's notes list this as a limitation; actorkit keeps Python's semantics).
l1 = [0]
l2 = [l1, l1]
l3 = ray.get(ray.put(l2))
print("aliasing:", l2[0] is l2[1], l3[0] is l3[1])

# Objects that contain themselves can be stored too.
lst = []
lst.append(lst)
back = ray.get(ray.put(lst))
print("recursion:", back[0] is back)


# The "last resort" of Ray's notes still works: serialize by hand.
@ray.remote
def f(complicated_object):
    obj = pickle.loads(complicated_object)
    return f"Successfully passed {obj} into f."


print(ray.get(f.remote(pickle.dumps(lst))))

# numpy arrays come back without a copy: read-only views of shared memory.
arr = ray.get(ray.put(np.arange(1_000_000)))
print("numpy:", arr.sum(), "writeable:", arr.flags.writeable)


# A custom serializer for a type that refuses to be pickled, like objects
# bound to their process (an open connection, a database handle).
class Connection:
    def __init__(self, url):
        self.url = url
        self.lock = threading.Lock()
        self.requests = 0

    def __reduce__(self):
        raise TypeError("a Connection cannot leave its process")


@ray.remote
def use(conn):
    with conn.lock:
        conn.requests += 1
    # Serializers are registered per process (as in Ray): this worker has none
    # for Connection, so it returns plain values rather than the Connection.
    return conn.url, conn.requests, type(conn.lock).__name__


try:
    ray.put(Connection("db://a"))
except TypeError as e:
    print("without a serializer:", type(e).__name__)

register_serializer(
    Connection,
    serializer=lambda c: c.url,  # what travels: the address, not the socket
    deserializer=lambda url: Connection(url),  # reconnect on the other side
)
url, requests, lock_type = ray.get(use.remote(Connection("db://a")))
print("custom serializer:", url, requests, lock_type)
deregister_serializer(Connection)

ray.shutdown()
