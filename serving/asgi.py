"""How the service's ASGI app is put together around BentoML's.

- BentoML's request-timeout middleware is taken out (:mod:`serving.timeout` replaces it; BentoML's
  ``traffic.timeout`` is set beyond ours, out of the way) and its ``max_concurrency`` is off
  (:mod:`serving.traffic` counts requests once their body has arrived).
- Unknown routes reach BentoML's Prometheus middleware under one label, ``/unknown``: every distinct path
  used to add about 20 series to ``/metrics``. The real path is put back before routing.
- At the first request, everything alive is moved out of the garbage collector's scans (``gc.freeze``).
- The service's API methods are looked up once per instance (:func:`keep_api_methods`), not on every request.

The two hooks are public: ``bentoml.service(service_class=...)`` and Starlette's middleware list, which
is built into the app only at its first call. :func:`keep_api_methods` reads one private class of BentoML
1.4 (``_bentoml_sdk.method.APIMethod``; pyproject pins ``bentoml<1.5``): where it is missing, nothing is
kept and every request looks its method up as BentoML does (``tests/serving/test_app.py`` fails then).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import bentoml

from serving.security import ROUTE_ROLES

log = logging.getLogger(__name__)
SYSTEM_ROUTES = frozenset({"/", "/docs.json", "/schema.json", "/livez", "/readyz", "/healthz", "/metrics"})
STATIC_PREFIXES = ("/static_content/", "/assets/")
UNKNOWN_ROUTE = "/unknown"
_REAL_PATH = "personalise.path"


def route_label(path: str) -> str:
    """The route a path is counted under in the metrics: itself for API and system routes, the folder for
    the UI's static files, else ``/unknown``."""
    if path in ROUTE_ROLES or path in SYSTEM_ROUTES:
        return path
    for prefix in STATIC_PREFIXES:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return UNKNOWN_ROUTE


class RouteLabelMiddleware:
    """Outermost: shows the metrics middleware the route label instead of an unknown path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            label = route_label(scope["path"])
            if label != scope["path"]:
                scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
        await self.app(scope, receive, send)


class RestorePathMiddleware:
    """First of the service's own middleware (inside BentoML's metrics): routes by the real path again."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            real = scope[_REAL_PATH]
            scope = {k: v for k, v in scope.items() if k != _REAL_PATH}
            scope["path"] = real
        await self.app(scope, receive, send)


class SettleMiddleware:
    """At the first request, when the models and the server's own app are built, move every object alive
    into the garbage collector's permanent generation (``gc.freeze``): full collections then scan only
    what requests allocate, instead of stalling every request for 50-300 ms every few seconds."""

    def __init__(self, app: Any) -> None:
        self.app, self.settled = app, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.settled and scope.get("type") == "http":
            self.settled = True
            gc.freeze()
        await self.app(scope, receive, send)


class KeptAPIMethod:
    """What ``getattr(service, name)`` gives for one API method of one service instance, made once.

    BentoML's server finds the method to call with ``getattr(instance, name).local`` on every request, and
    the API method's ``__get__`` then rebuilds it: ``inspect.signature`` of the function and a new
    ``functools.wraps`` wrapper, about 0.1 ms of the event loop per request (a tenth of echo's whole cost),
    the same function every time. Kept in the instance's ``__dict__`` (the method is a non-data
    descriptor, so the instance's own attribute is found first), ``local`` is that function, built once.
    Calling the kept method itself (the service calling its own API, which no endpoint does) asks the
    method's ``__get__`` as before, so it goes through the service's proxy once BentoML has set one."""

    __slots__ = ("instance", "method", "local")

    def __init__(self, instance: Any, method: Any) -> None:
        self.instance, self.method = instance, method
        self.local = method.__get__(instance, type(instance)).local

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.method.__get__(self.instance, type(self.instance))(*args, **kwargs)


def keep_api_methods(instance: Any) -> None:
    """Keep each API method of a BentoML service ``instance`` made once (:class:`KeptAPIMethod`)."""
    try:
        from _bentoml_sdk.method import APIMethod
    except ImportError:  # another BentoML: its own lookup, per request
        log.warning("BentoML's APIMethod not found: API methods looked up per request")
        return
    for name, method in vars(type(instance)).items():
        if isinstance(method, APIMethod) and not hasattr(method, "__set__"):
            instance.__dict__[name] = KeptAPIMethod(instance, method)


def _is_bentoml_timeout(cls: Any) -> bool:
    return getattr(cls, "__name__", "") == "TimeoutMiddleware" and cls.__module__.startswith("bentoml")


class OwnTrafficService(bentoml.Service):  # type: ignore[type-arg]
    """A BentoML service whose ASGI app has our timeout instead of BentoML's and labels unknown routes."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True) -> Any:
        app = super().to_asgi(is_main)
        before = len(app.user_middleware)
        app.user_middleware = [m for m in app.user_middleware if not _is_bentoml_timeout(m.cls)]
        if len(app.user_middleware) == before:
            log.warning("BentoML's TimeoutMiddleware was not found: its traffic.timeout may apply as well")
        app.add_middleware(RouteLabelMiddleware)
        return app
