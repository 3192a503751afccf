"""Where another mlx-tui instance answers, and the key it wants: one :class:`RemoteAddress`.

A remote comes from a ``[[remotes]]`` table of settings.toml (name, url, api_key) or from
``mlx-tui --remote NAME|URL`` for one run. The key travels only in the ``Authorization`` header
of requests to that address: it is kept out of every ``repr``, message and log line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit

from ..core.settings import RemoteSettings

__all__ = ["RemoteAddress", "UnknownRemote", "normalise_url", "is_loopback_host",
           "addresses_from_settings", "resolve_remote"]

PLAIN_HTTP_NOTE = "plain HTTP over the network: key and chats unencrypted (use https or an SSH tunnel)"
"""What the fleet and ``status --all`` say of an ``http://`` remote that is not on loopback."""


class UnknownRemote(ValueError):
    """``--remote NAME`` where no ``[[remotes]]`` table has that name (and NAME is no URL)."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        listed = ", ".join(known) if known else "none are configured"
        super().__init__(f"--remote {name!r}: no [[remotes]] table has that name ({listed}); "
                         "give a URL (http://studio.local:11435) or add a [[remotes]] table "
                         "with name, url and api_key to settings.toml")
        self.name = name


def normalise_url(url: str) -> str:
    """``127.0.0.1:9999`` -> ``http://127.0.0.1:9999``; no trailing ``/``."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.x.x.x`` and ``::1``: names only this machine reaches."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RemoteAddress:
    """One remote instance: the name the app shows, its base URL, and its API key.

    Plain frozen data, safe to hand to any thread. ``api_key`` is left out of ``repr`` so that a
    logged or printed address never shows it; :meth:`headers` is the only way it leaves.
    """

    name: str
    url: str
    api_key: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def plain_over_network(self) -> bool:
        """``http://`` to an address other machines can see: the key and chats go unencrypted."""
        return urlsplit(self.url).scheme == "http" and not is_loopback_host(self.host)

    @property
    def security_note(self) -> str | None:
        return PLAIN_HTTP_NOTE if self.plain_over_network else None

    def headers(self) -> dict[str, str]:
        """The request headers this remote needs (its key, when it has one)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def addresses_from_settings(remotes: Sequence[RemoteSettings]) -> list[RemoteAddress]:
    """The ``[[remotes]]`` tables as addresses, in the file's order."""
    return [RemoteAddress(r.name, normalise_url(r.url), r.api_key) for r in remotes]


def _looks_like_url(text: str) -> bool:
    return "://" in text or ":" in text or "/" in text or "." in text


def resolve_remote(argument: str, configured: Sequence[RemoteAddress]) -> RemoteAddress:
    """What ``--remote ARGUMENT`` names: a configured remote by name, or a URL (a configured
    remote with that URL brings its key; any other URL has none). Raises :class:`UnknownRemote`."""
    argument = argument.strip()
    for address in configured:
        if address.name == argument:
            return address
    if not _looks_like_url(argument):
        raise UnknownRemote(argument, [a.name for a in configured])
    url = normalise_url(argument)
    for address in configured:
        if address.url == url:
            return address
    parts = urlsplit(url)
    return RemoteAddress(parts.netloc or url, url)
