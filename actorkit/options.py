"""Validation of the options ``remote()`` and ``.options()`` take, under Ray's names.

Every option is checked where it is given (decoration or ``.options()``), so
a mistake is reported at the line that made it.  An option Ray has but
actorkit does not support is an error, never silently ignored.
"""

from __future__ import annotations

import inspect
from typing import Any

from . import runtime_env as runtime_env_module
from .strategy import strategy_of

TASK_OPTIONS = frozenset(
    {
        "num_returns",
        "num_cpus",
        "num_gpus",
        "resources",
        "accelerator_type",
        "memory",
        "max_calls",
        "max_retries",
        "retry_exceptions",
        "runtime_env",
        "name",
        "scheduling_strategy",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "enable_task_events",
    }
)

# Ray options that actorkit knows but does not implement.
UNSUPPORTED = {
    "object_store_memory": "per-task object store memory is not supported",
    "_metadata": "task metadata is not supported",
    "label_selector": "label selectors are not supported",
    "_generator_backpressure_num_objects": "streaming generators are not supported",
}

_BUILTIN_RESOURCES = ("CPU", "GPU", "memory")


def _number(where: str, name: str, value: Any, *, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {name} must be a number, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name}={value!r} must be >= {minimum}")
    return value


def whole_number(where: str, name: str, value: Any, minimum: int, meaning: str = "") -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name}={value!r} must be an int >= {minimum}{meaning}")
    return value


def _whole_or_fraction(where: str, name: str, value: Any) -> float:
    value = _number(where, name, value)
    if value > 1 and value != int(value):
        raise ValueError(
            f"{where}: {name}={value!r}: amounts above 1 must be whole numbers "
            f"(fractions are for sharing one unit)"
        )
    return value


GENERATOR_RETURNS = ("streaming", "dynamic")


def check_num_returns(where: str, value: Any) -> None:
    if value not in GENERATOR_RETURNS:
        whole_number(where, "num_returns", value, 0, ', or "streaming" or "dynamic" for a generator')


def returns_of(num_returns: Any, function: Any) -> tuple[int, str | None]:
    """(how many return objects, generator mode) for ``num_returns`` as given (None: not given).

    A generator function streams its items unless told otherwise, as in Ray 2.x.
    """
    if num_returns in GENERATOR_RETURNS:
        return 1, num_returns
    if num_returns is None:
        target = inspect.unwrap(function) if callable(function) else function
        generates = inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
        return 1, "streaming" if generates else None
    return num_returns, None


def validate_task_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Check task options; return them unchanged or raise naming the bad one."""
    for name in options:
        if name in UNSUPPORTED:
            raise ValueError(f"{where}: option {name!r} is not supported by actorkit ({UNSUPPORTED[name]})")
        if name not in TASK_OPTIONS:
            raise ValueError(
                f"{where}: unknown option {name!r}; tasks accept {', '.join(sorted(TASK_OPTIONS))}"
            )
    if "num_returns" in options:
        check_num_returns(where, options["num_returns"])
    if options.get("num_cpus") is not None:
        _number(where, "num_cpus", options["num_cpus"])
    if options.get("num_gpus") is not None:
        _whole_or_fraction(where, "num_gpus", options["num_gpus"])
    if options.get("memory") is not None:
        _number(where, "memory", options["memory"])
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"{where}: resources must be a dict of name -> amount, not {resources!r}")
        for name, amount in resources.items():
            if name in _BUILTIN_RESOURCES:
                keyword = {"CPU": "num_cpus", "GPU": "num_gpus"}.get(name, name)
                raise ValueError(f"{where}: use {keyword}= rather than resources={{{name!r}: ...}}")
            _whole_or_fraction(where, f"resources[{name!r}]", amount)
    accelerator = options.get("accelerator_type")
    if accelerator is not None and not isinstance(accelerator, str):
        raise TypeError(f"{where}: accelerator_type must be a str, not {accelerator!r}")
    if "max_retries" in options:
        whole_number(where, "max_retries", options["max_retries"], -1, " (-1: retry forever)")
    if "max_calls" in options:
        whole_number(where, "max_calls", options["max_calls"], 0, " (0: no limit)")
    if "retry_exceptions" in options:
        retry = options["retry_exceptions"]
        if not isinstance(retry, bool) and not (
            isinstance(retry, (list, tuple))
            and all(isinstance(c, type) and issubclass(c, BaseException) for c in retry)
        ):
            raise TypeError(f"{where}: retry_exceptions must be a bool or a list of exception classes")
    if not isinstance(options.get("enable_task_events", True), bool):
        raise TypeError(f"{where}: enable_task_events must be True or False")
    validate_runtime_env(options.get("runtime_env"), where)
    strategy_of(options, where)
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise TypeError(f"{where}: name must be a str")
    return options


def validate_runtime_env(runtime_env: Any, where: str) -> None:
    runtime_env_module.validate(runtime_env, where)


def resource_demand(options: dict[str, Any], default_cpus: float) -> dict[str, float]:
    """The resources a task or actor asks for, as the scheduler counts them."""
    cpus = options.get("num_cpus")
    demand: dict[str, float] = {"CPU": default_cpus if cpus is None else cpus}
    if options.get("num_gpus"):
        demand["GPU"] = options["num_gpus"]
    if options.get("memory"):
        demand["memory"] = options["memory"]
    demand.update(options.get("resources") or {})
    if options.get("accelerator_type"):
        demand[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    return {name: amount for name, amount in demand.items() if amount}
