"""Parameter validation with generated, specific messages (scikit-learn style)."""
from __future__ import annotations

import numbers

import numpy as np
from typing import Any, Iterable

from .errors import OptionError, OptionTypeError


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise an OptionError naming them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise OptionError(f"The {name!r} parameter must be one of {{{listed}}}; got {value!r}.")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as int if it is an integer within bounds, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionTypeError(f"The {name!r} parameter must be an integer; got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise OptionError(f"The {name!r} parameter must be >= {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise OptionError(f"The {name!r} parameter must be <= {maximum}; got {value}.")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False) -> float:
    """Return ``value`` as float if it is a finite real number within bounds, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionTypeError(f"The {name!r} parameter must be a real number; got {value!r} ({type(value).__name__}).")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise OptionError(f"The {name!r} parameter must be finite; got {value}.")
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        op = ">" if strict_minimum else ">="
        raise OptionError(f"The {name!r} parameter must be {op} {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise OptionError(f"The {name!r} parameter must be <= {maximum}; got {value}.")
    return value


def check_pair(name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """Accept a scalar integer or an (h, w) pair of integers; return (h, w)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = check_int(name, value, minimum=minimum)
        return v, v
    try:
        items = tuple(value)
    except TypeError:
        raise OptionTypeError(f"The {name!r} parameter must be an integer or an (h, w) pair; got {value!r}.") from None
    if len(items) != 2:
        raise OptionError(f"The {name!r} parameter must be an integer or an (h, w) pair; got {len(items)} values.")
    return (check_int(f"{name}[0]", items[0], minimum=minimum), check_int(f"{name}[1]", items[1], minimum=minimum))


def as_generator(random_state: Any):
    """Return a numpy Generator for an int / Generator / None random_state."""
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, bool):
            raise OptionTypeError("The 'random_state' parameter must be an int, a numpy Generator or None; "
                                  f"got {random_state!r}.")
        if isinstance(random_state, numbers.Integral) and random_state < 0:
            raise OptionError(f"The 'random_state' parameter must be a non-negative integer; got {random_state}.")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise OptionTypeError("The 'random_state' parameter must be an int, a numpy Generator or None; "
                          f"got {type(random_state).__name__}.")


def describe_seed(random_state: Any) -> Any:
    """The seed as results record it (JSON-friendly): the int, None, or the type name of a Generator."""
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return None if random_state is None else int(random_state)
    return type(random_state).__name__


#: One vocabulary for Python and the CLI: shared name -> MATLAB-derived parameter name. Every
#: public function taking ``mini_batch_size`` / ``execution_environment`` (MATLAB's
#: MiniBatchSize / ExecutionEnvironment) also takes ``batch_size`` / ``device``, the names of
#: the CLI flags ``--batch-size`` / ``--device``.
SHARED_NAMES = {"batch_size": "mini_batch_size", "device": "execution_environment"}


def shared_names(func):
    """Decorator: accept the shared names (``batch_size=``, ``device=``) for MATLAB-named parameters."""
    import functools
    import inspect

    params = inspect.signature(func).parameters
    mapping = {short: long for short, long in SHARED_NAMES.items() if long in params and short not in params}
    if not mapping:
        return func

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for short, long in mapping.items():
            if short in kwargs:
                if long in kwargs:
                    raise OptionError(f"{func.__name__}() got both {short!r} and its MATLAB-style alias {long!r}; "
                                      "give one.")
                kwargs[long] = kwargs.pop(short)
        return func(*args, **kwargs)

    return wrapper
