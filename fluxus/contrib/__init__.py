"""Integrations with web frameworks, each imported on its own.

``import fluxus`` never imports this package's modules: each one needs its
framework installed (the extras ``fluxus[flask]``, ``fluxus[django]`` and
``fluxus[fastapi]``).

- :mod:`fluxus.contrib.flask`: ``init_app(app)`` / ``Fluxus(app)``.
- :mod:`fluxus.contrib.django`: ``FluxusMiddleware`` and ``FLUXUS_*`` settings.
- :mod:`fluxus.contrib.starlette`: ``install(app)``, for FastAPI too.

Each turns :class:`~fluxus.RateLimitExceeded` into 429,
:class:`~fluxus.CircuitOpenError` into 503 and
:class:`~fluxus.DeadlineExceeded` into 504, with ``Retry-After`` where a
wait is known, and offers ``client_ip`` and ``user_key`` key functions for
per-client limits.
"""
