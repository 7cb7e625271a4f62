"""What the web integrations share, free of any framework.

Two pure decisions live here: which HTTP answer a fluxus rejection becomes
(:func:`rejection_for`), and which address a request comes from once the
``X-Forwarded-For`` header has been checked against the trusted proxies
(:meth:`TrustedProxies.client_address`). The framework modules only read
their request objects and settings and build their own responses.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from fluxus._config import set_default_storage
from fluxus._rate_limit import check_storage
from fluxus.exceptions import (
    BulkheadFull,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitExceeded,
    ThreadsExhausted,
)

#: The storage every limiter and breaker of an app uses unless configured.
DEFAULT_STORAGE_URI: Final = "memory://"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How many addresses each TrustedProxies remembers the verdict on.
_HOP_CACHE_SIZE: Final = 4096

#: The rejections the integrations answer, most specific first.
REJECTIONS: Final = (
    RateLimitExceeded,
    CircuitOpenError,
    BulkheadFull,
    ThreadsExhausted,
    DeadlineExceeded,
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """The HTTP answer to a fluxus rejection.

    Attributes:
        status: The status code: 429, 503 or 504.
        title: The reason phrase, for example ``"Too Many Requests"``.
        detail: One sentence for the client; it never names the policy,
            which would reveal the server's module layout.
        retry_after: Whole seconds for the ``Retry-After`` header, or
            ``None`` when no wait is known.
    """

    status: int
    title: str
    detail: str
    retry_after: int | None

    @property
    def headers(self) -> dict[str, str]:
        """The headers the answer carries: ``Retry-After`` when known."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(self.retry_after)}


def retry_after_header(seconds: float) -> int | None:
    """Return *seconds* as a ``Retry-After`` value: rounded up, at least 1.

    Returns:
        Whole seconds, or ``None`` when the wait is not known (infinite or
        NaN, as for a circuit forced open until someone resets it).
    """
    if not math.isfinite(seconds):
        return None
    return max(1, math.ceil(seconds))


def rejection_for(exc: BaseException) -> Rejection | None:
    """Return the HTTP answer to *exc*, or ``None`` if it is not a rejection.

    ``RateLimitExceeded`` becomes 429 and ``CircuitOpenError`` 503, both
    with ``Retry-After`` from their ``retry_after``. ``BulkheadFull`` and
    ``ThreadsExhausted`` become 503 without ``Retry-After``: when a slot or
    a thread frees depends on calls still running. ``DeadlineExceeded``
    becomes 504 without ``Retry-After``: a deadline that ran out says
    nothing about when the downstream service will answer faster.
    """
    if isinstance(exc, RateLimitExceeded):
        wait = retry_after_header(exc.retry_after)
        return Rejection(
            429, "Too Many Requests", _detail("Too many requests.", wait), wait
        )
    if isinstance(exc, CircuitOpenError):
        wait = retry_after_header(exc.retry_after)
        return Rejection(
            503,
            "Service Unavailable",
            _detail("The service is temporarily unavailable.", wait),
            wait,
        )
    if isinstance(exc, BulkheadFull | ThreadsExhausted):
        return Rejection(
            503,
            "Service Unavailable",
            _detail("The service is temporarily unavailable.", None),
            None,
        )
    if isinstance(exc, DeadlineExceeded):
        return Rejection(
            504, "Gateway Timeout", "The server did not get an answer in time.", None
        )
    return None


def _detail(sentence: str, wait: int | None) -> str:
    if wait is None:
        return f"{sentence} Try again later."
    plural = "" if wait == 1 else "s"
    return f"{sentence} Try again in {wait} second{plural}."


def check_storage_uri(value: object, param: str) -> str:
    """Return *value* if it is a ``limits`` storage URI fluxus can use.

    Raises:
        TypeError: If *value* is not a string.
        ValueError: If it has no ``scheme://`` part or an unknown scheme.
        ImportError: If it is a Redis URL and redis is not installed (the
            message names the extra).
    """
    if not isinstance(value, str):
        msg = f"{param} must be a storage URI string such as 'memory://', got {value!r}"
        raise TypeError(msg)
    scheme, sep, _ = value.partition("://")
    if not sep or not scheme:
        msg = (
            f"{param} must be a storage URI such as 'memory://' or "
            f"'redis://host:6379/0', got {value!r}"
        )
        raise ValueError(msg)
    return check_storage(value, param)


def use_storage_uri(value: object, param: str) -> str:
    """Check *value* and make it the storage of policies built without one.

    Every ``fluxus.rate_limit`` and ``fluxus.circuit_breaker`` built without
    ``storage=`` uses it from its next call on, including those decorated
    before the app was configured.

    Returns:
        *value*, checked.

    Raises:
        TypeError: If *value* is not a string.
        ValueError: If it is not a storage URI fluxus can use.
    """
    uri = check_storage_uri(value, param)
    set_default_storage(uri)
    return uri


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` entries are believed.

    Args:
        proxies: Addresses and networks (``"10.0.0.7"``, ``"10.0.0.0/8"``,
            ``"::1"``, :mod:`ipaddress` objects), or one string of them
            separated by commas. Empty by default: the header is ignored.
        param: The setting's name, for error messages.

    Raises:
        TypeError: If *proxies* is not a string or an iterable of them.
        ValueError: If an entry is not an address or a network (a network
            with host bits set, such as ``10.0.0.1/8``, is refused as a
            likely typo).
    """

    __slots__ = ("_hop", "_networks")

    def __init__(self, proxies: object = (), param: str = "trusted_proxies") -> None:
        self._networks = _parse_networks(proxies, param)
        # Requests come from few proxies and returning clients: remembering
        # the verdict per address saves parsing each hop on every request.
        # Entries a client forges lie left of it and are never looked up.
        self._hop = functools.lru_cache(maxsize=_HOP_CACHE_SIZE)(self._parse_hop)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(net) for net in self._networks]!r})"

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        ip = _parse_ip(address) if isinstance(address, str) else address
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(ip in net for net in self._networks)

    def client_address(self, remote_addr: str, forwarded_for: Iterable[str]) -> str:
        """Return the address of the client behind the trusted proxies.

        Args:
            remote_addr: The address of the peer of the connection.
            forwarded_for: The ``X-Forwarded-For`` header values, in order.

        Returns:
            *remote_addr* unless it is a trusted proxy; otherwise the
            header's rightmost entry that is not a trusted proxy, walking
            right to left (entries left of it may be forged by the client).
            If every entry is trusted, the leftmost one; if a trusted proxy
            wrote something that is not an address, the last trusted hop.
        """
        if not self._networks:
            return remote_addr
        hop, trusted = self._hop(remote_addr)
        if not trusted:
            return remote_addr
        entries = [entry for value in forwarded_for for entry in value.split(",")]
        for raw in reversed(entries):
            text = raw.strip()
            if not text:
                continue
            ip, trusted = self._hop(text)
            if ip is None:
                break
            hop = ip
            if not trusted:
                break
        return str(hop)

    def _parse_hop(self, text: str) -> tuple[IPAddress | None, bool]:
        ip = _parse_ip(text)
        return ip, ip is not None and any(ip in net for net in self._networks)


def _parse_networks(proxies: object, param: str) -> tuple[IPNetwork, ...]:
    if isinstance(proxies, str):
        proxies = [item for item in proxies.split(",") if item.strip()]
    elif isinstance(proxies, ipaddress.IPv4Network | ipaddress.IPv6Network):
        proxies = [proxies]
    if not isinstance(proxies, Iterable):
        msg = f"{param} must be a list of proxy addresses or networks, got {proxies!r}"
        raise TypeError(msg)
    networks: list[IPNetwork] = []
    for item in proxies:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
            item = str(item)  # noqa: PLW2901 - one path parses every form
        if not isinstance(item, str):
            msg = f"{param} entries must be addresses or networks, got {item!r}"
            raise TypeError(msg)
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as exc:
            msg = f"{param} entries must be addresses or networks, got {item!r}: {exc}"
            raise ValueError(msg) from None
    return tuple(networks)


def _parse_ip(value: str) -> IPAddress | None:
    """Parse one address as proxies write it: bare, ``[v6]:port`` or ``v4:port``."""
    text = value.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def user_or_ip(user_id: object, address: str) -> str:
    """Return the rate-limit key of a request: its user, else its address.

    The prefixes keep a user named like an address apart from that address.
    """
    if user_id is None or user_id == "":
        return f"ip:{address}"
    return f"user:{user_id}"
