"""Storage keys and default names: no name and key pair reaches another's budget."""

from __future__ import annotations

import itertools
import threading
import urllib.parse


def escape(part: str) -> str:
    """Return *part* as one unambiguous piece of a storage key.

    ``:``, ``/`` and ``%`` (the separators and the escape itself) and every
    character outside plain ASCII are percent-encoded as UTF-8, lone
    surrogates included (``surrogatepass``: they cannot be mistaken for any
    valid character's bytes). So no name and key pair spells another's key,
    and every key is valid UTF-8 for Redis.
    """
    if part.isascii() and ":" not in part and "/" not in part and "%" not in part:
        return part
    return urllib.parse.quote(part, safe="", errors="surrogatepass")


_NAMES_LOCK = threading.Lock()
_NAMES: dict[str, int] = {}
_ANONYMOUS = itertools.count(1)


def _own_name(default: str) -> str:
    """Return *default*, or ``default#N`` for its N-th limiter in this process.

    Limiters built without ``name=`` never share a budget: the first one
    bound to a function is named after it, the next ones decorating a
    function of the same name (a factory's, instances of one callable
    class) get ``#2``, ``#3``, ... in the order they are bound, the same in
    every process running the same code.
    """
    with _NAMES_LOCK:
        seen = _NAMES[default] = _NAMES.get(default, 0) + 1
    return default if seen == 1 else f"{default}#{seen}"
