"""Resolve configured dotted paths and aliases to objects, once.

Providers, the resolver, transports and control-response handlers are named in
settings by alias or dotted path. They are imported on first use and cached; the cache
is cleared when ``SILO_ROUTER`` changes (Django's ``setting_changed`` signal), so tests
with ``override_settings`` see their own configuration.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .exceptions import SiloRouterConfigurationError

T = TypeVar("T")
_caches: list[Any] = []
_clear_hooks: list[Callable[[], None]] = []


def cached(func: Any) -> Any:
    """``functools.cache`` whose cache is cleared when ``SILO_ROUTER`` changes."""
    wrapped = functools.cache(func)
    _caches.append(wrapped)
    return wrapped


@receiver(setting_changed)
def _clear_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "SILO_ROUTER":
        clear_caches()


def on_clear(hook: Callable[[], None]) -> Callable[[], None]:
    """Also run ``hook`` whenever the caches are cleared (to close what a cache held)."""
    _clear_hooks.append(hook)
    return hook


def clear_caches() -> None:
    """Forget every object built from settings."""
    for func in _caches:
        func.cache_clear()
    for hook in _clear_hooks:
        hook()


def import_by_alias(value: str, *, aliases: Mapping[str, str], setting: str) -> Any:
    """Import ``value``, an alias from ``aliases`` or a dotted path.

    A value that is neither gets an error naming the setting and, where one is close,
    the alias that was probably meant.
    """
    path = aliases.get(value, value)
    if "." not in path:
        raise SiloRouterConfigurationError(
            f"SILO_ROUTER[{setting}] = {value!r} is not a known alias or a dotted path." + did_you_mean(value, aliases)
        )
    try:
        return import_string(path)
    except ImportError as exc:
        raise SiloRouterConfigurationError(
            f"SILO_ROUTER[{setting}] = {value!r} cannot be imported: {exc}" + did_you_mean(value, aliases)
        ) from exc


def lookup(table: Mapping[str, T], name: str, *, setting: str, what: str) -> T:
    """``table[name]``, or an error naming the setting and the closest known name."""
    if name not in table:
        raise SiloRouterConfigurationError(
            f"{what} {name!r} is not in SILO_ROUTER[{setting!r}]." + did_you_mean(name, table)
        )
    return table[name]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix, or an empty string (case does not count: 'url' suggests 'URL')."""
    by_folded = {str(choice).casefold(): str(choice) for choice in choices}
    close = difflib.get_close_matches(value.casefold(), list(by_folded), n=1)
    return f" Did you mean {by_folded[close[0]]!r}?" if close else ""
