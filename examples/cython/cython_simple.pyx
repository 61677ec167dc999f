#!python
# cython: embedsignature=True, binding=True, language_level=3
"""Compiled functions to run as actorkit tasks (see cython_main.py)."""


def simple_func(x, y, z):
    return x + y + z


def fib(int n):
    """The n-th Fibonacci number, computed in C."""
    cdef long long a = 0, b = 1
    cdef int i
    for i in range(n):
        a, b = b, a + b
    return a


def dot(const double[:] a, const double[:] b):
    """Dot product over typed memoryviews.

    ``const`` lets it read the read-only arrays actorkit passes from shared
    memory, without a copy.
    """
    cdef Py_ssize_t i
    cdef double total = 0.0
    if a.shape[0] != b.shape[0]:
        raise ValueError("arrays of different lengths")
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total
