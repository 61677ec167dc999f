"""Ray's call-time checks: wrong arguments fail at .remote(), get() of a non-ref, oversized functions."""

from __future__ import annotations

import time

import numpy as np
import pytest

import actorkit as ray


@ray.remote
def one(a):
    return a


@ray.remote
def flexible(a, b=2, *rest, key=None, **extra):
    return a, b, rest, key, extra


@ray.remote
class Account:
    RATE = 0.5

    def __init__(self, owner, balance=0):
        self.owner, self.balance = owner, balance

    def deposit(self, amount):
        self.balance += amount
        return self.balance

    @staticmethod
    def fee(amount):
        return amount * 2

    @classmethod
    def kind(cls, label):
        return label


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: one.remote(1, 2), r"one\.remote\(\): too many positional arguments"),
        (lambda: one.remote(), r"one\.remote\(\): missing a required argument: 'a'"),
        (lambda: one.remote(1, b=2), r"unexpected keyword argument 'b'"),
        (lambda: one.options(num_cpus=1).remote(1, 2), r"too many positional arguments"),
        (lambda: Account.remote(), r"Account\.remote\(\): missing a required argument: 'owner'"),
        (lambda: Account.remote("ann", 1, 2), r"too many positional arguments"),
    ],
)
def test_wrong_arguments_fail_at_remote(ray_start_shared, call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_methods_are_checked_and_right_calls_run(ray_start_shared):
    account = Account.remote("ann", balance=10)
    with pytest.raises(TypeError, match=r"Account\.deposit\.remote\(\): missing a required argument: 'amount'"):
        account.deposit.remote()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'amt'"):
        account.deposit.remote(5, amt=5)
    with pytest.raises(TypeError, match=r"Account\.fee\.remote\(\): too many positional arguments"):
        account.fee.remote(1, 2)
    assert ray.get(account.deposit.options(num_returns=1).remote(5)) == 15
    assert ray.get([account.fee.remote(3), account.kind.remote("x")]) == [6, "x"]
    assert ray.get(flexible.remote(1, 2, 3, key=4, more=5)) == (1, 2, (3,), 4, {"more": 5})
    ray.kill(account)


def test_builtins_are_not_checked(ray_start_shared):
    assert ray.get(ray.remote(max).remote(3, 9)) == 9


@pytest.mark.parametrize("bad", [123, "abc", None, (1, 2)])
def test_get_of_something_not_a_ref_is_a_value_error(ray_start_shared, bad):
    with pytest.raises(ValueError, match="'object_refs' must either be an ObjectRef or a list of ObjectRefs"):
        ray.get(bad)


def test_get_of_a_list_holding_a_non_ref_is_a_type_error(ray_start_shared):
    with pytest.raises(TypeError, match="Attempting to call `get` on the value 2, which is not an ObjectRef"):
        ray.get([ray.put(1), 2])


def test_a_huge_closure_is_refused_naming_the_capture(ray_start_shared):
    huge = np.zeros(100 * 2**20 // 8)  # 100 MiB

    def total():
        return float(huge.sum())

    started = time.monotonic()
    with pytest.raises(ValueError, match=r"closure variable 'huge' \(100\.0 MiB\).*actorkit\.put") as info:
        ray.remote(total).remote()
    elapsed = time.monotonic() - started
    assert "95 MiB" in str(info.value)
    # Nothing was lost: the session goes on, and the advice works.
    ref = ray.put(huge)

    @ray.remote
    def total_of(array):
        return float(array.sum())

    assert ray.get(total_of.remote(ref)) == 0.0
    assert elapsed < 30
