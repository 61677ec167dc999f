"""Seed 001/002: compiled (Cython) functions as remote functions.

Build first, from this directory:

    pip install cython
    python setup.py build_ext --inplace
    python cython_main.py

Cython functions cannot be decorated inside a .pyx file; wrap them with
``remote()`` in Python code instead.
"""

import sys

import numpy as np

import actorkit as ray

try:
    import cython_simple
except ImportError:
    sys.exit("cython_simple is not built: run 'python setup.py build_ext --inplace' in examples/cython")

simple_func = ray.remote(cython_simple.simple_func)
fib = ray.remote(cython_simple.fib)
dot = ray.remote(cython_simple.dot)


def main():
    ray.init(num_cpus=2)
    print("simple_func:", ray.get(simple_func.remote(1, 2, 3)))
    print("fib:", ray.get([fib.remote(n) for n in (10, 20, 50)]))
    # Arrays go to the compiled function as read-only views of shared memory.
    a = ray.put(np.arange(1000, dtype=np.float64))
    b = ray.put(np.full(1000, 2.0))
    print("dot:", ray.get(dot.remote(a, b)))
    ray.shutdown()


if __name__ == "__main__":
    main()
