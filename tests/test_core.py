"""The decorator machinery, through the policies users see."""

from __future__ import annotations

import asyncio
import inspect
import warnings

import fluxus
import pytest
from fluxus._core import TIMEOUT, Policy


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def step(self) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("flaky")


class Outer(Policy):
    """A pass-through policy ranked like a timeout, to test layering."""

    _kind = "outer"
    _rank = TIMEOUT

    def _wrap_sync(self, func):
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)

        return wrapper

    def _wrap_async(self, func):
        async def wrapper(*args, **kwargs):
            return await func(*args, **kwargs)

        return wrapper


def test_signature_name_and_docstring_are_kept():
    def fetch(url: str, *, timeout: float = 1.0) -> bytes:
        """Fetch *url*."""
        return b""

    wrapped = fluxus.retry()(fetch)

    assert inspect.signature(fetch) == inspect.signature(wrapped)
    assert ("fetch", "Fetch *url*.") == (wrapped.__name__, wrapped.__doc__)
    assert fetch is wrapped.__wrapped__


def test_coroutine_functions_stay_coroutine_functions():
    async def fetch() -> int:
        return 1

    wrapped = fluxus.retry()(fetch)

    assert inspect.iscoroutinefunction(wrapped)
    assert 1 == asyncio.run(wrapped())


def test_methods_classmethods_and_staticmethods(instant):
    flaky = Flaky(0)

    class Client:
        def __init__(self) -> None:
            self.flaky = Flaky(1)

        @fluxus.retry(2)
        def method(self, x: int) -> int:
            self.flaky.step()
            return x

        @fluxus.retry(2)
        async def amethod(self, x: int) -> int:
            self.flaky.step()
            return x

        @fluxus.retry(2)
        @classmethod
        def cmethod(cls, x: int) -> str:
            flaky.step()
            return f"{cls.__name__}{x}"

        @fluxus.retry(2)
        @staticmethod
        def smethod(x: int) -> int:
            flaky.step()
            return x

    assert 1 == Client().method(1)
    assert 2 == asyncio.run(Client().amethod(2))
    flaky.failures = 1
    assert "Client3" == Client.cmethod(3)
    flaky.failures = 1
    assert 4 == Client().smethod(4)
    assert isinstance(fluxus.layers(vars(Client)["cmethod"])[0], fluxus.Retry)


def test_decorating_a_class_wraps_its_public_methods_only(instant):
    calls = []
    policy = fluxus.retry(2)

    class Base:
        def inherited(self):
            raise OSError

    @policy
    class Service(Base):
        def plain(self):
            calls.append("plain")
            if len(calls) == 1:
                raise OSError
            return "plain"

        async def coro(self):
            return "coro"

        @classmethod
        def cm(cls):
            return "cm"

        @staticmethod
        def sm():
            return "sm"

        def _private(self):
            return "private"

        @property
        def prop(self):
            return "prop"

    service = Service()
    assert "plain" == service.plain()
    assert ["plain", "plain"] == calls
    assert (policy,) == fluxus.layers(Service.plain)
    assert inspect.iscoroutinefunction(Service.coro)
    assert (policy,) == fluxus.layers(Service.coro)
    assert ("cm", "sm") == (Service.cm(), Service.sm())
    assert (policy,) == fluxus.layers(vars(Service)["cm"])
    assert (policy,) == fluxus.layers(vars(Service)["sm"])
    assert () == fluxus.layers(Service._private)
    assert () == fluxus.layers(Service.inherited)
    assert "prop" == service.prop


def test_layers_lists_outermost_first():
    inner, outer = fluxus.retry(), Outer(None)

    @outer
    @inner
    def fn():
        return 1

    assert (outer, inner) == fluxus.layers(fn)
    assert () == fluxus.layers(len)


def test_hand_stacking_against_the_order_warns_at_the_users_line():
    inner, outer = Outer(None), fluxus.retry()

    with pytest.warns(fluxus.LayeringWarning, match="recommended order") as record:
        outer(inner(lambda: 1))

    assert __file__ == record[0].filename


def test_hand_stacking_in_the_order_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Outer(None)(fluxus.retry()(lambda: 1))


def test_generator_functions_are_refused():
    def gen():
        yield 1

    async def agen():
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator function"):
            fluxus.retry()(fn)


def test_non_callables_are_refused():
    with pytest.raises(TypeError, match="decorates functions"):
        fluxus.retry()(42)


def test_repr_names_the_policy():
    policy = fluxus.retry(name="billing")
    assert "<fluxus.Retry 'billing'>" == repr(policy)
    assert "<unbound retry>" == fluxus.retry().name


@pytest.mark.parametrize(("name", "error"), [("", ValueError), (3, TypeError)])
def test_bad_names_are_refused(name, error):
    with pytest.raises(error, match="name must be a non-empty string"):
        fluxus.retry(name=name)
