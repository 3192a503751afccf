"""Which host the app shows: this machine (the app's own screen) or one of the remotes.

:class:`HostSwitcher` is owned by the app. It makes one :class:`~mlx_tui.remote.host.RemoteHost`
per ``[[remotes]]`` table (and ``--remote`` of this run) when the app has drawn its first frame,
starts their pollers, gives each remote a :class:`~.screens.host.HostScreen` the first time it
is shown (installed, so its chat survives switching away), and shows the fleet overview. Host
1 is this machine, 2.. the remotes in the settings' order: f3 goes to the next one, the fleet
overview (f2) goes to any by number, and the command palette lists them.

Poll reports come from the pollers' threads as :class:`HostReported` messages to the app, which
hands them back here (:meth:`HostSwitcher.reported`) on the event loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from textual.app import SystemCommand
from textual.message import Message

from ..core.settings import Settings
from ..remote.address import RemoteAddress, addresses_from_settings, resolve_remote
from ..remote.documents import reading_from_cache
from ..remote.permissions import key_file_warning
from ..remote.poller import HostReport
from .screens.fleet import FleetRow, FleetScreen
from .screens.host import HostScreen, post_from_thread
from .widgets.chat import ChatInput

if TYPE_CHECKING:
    from ..core.store import Store
    from ..remote.host import RemoteHost
    from .app import MlxTuiApp
    from .widgets.chat import ChatPane

__all__ = ["HostSwitcher", "HostReported", "hosts_of_run", "LOCAL_NAME"]

LOCAL_NAME = "local"
"""How this machine is named beside the remotes (the fleet, ``status --all``)."""

HostFactory = Callable[[RemoteAddress, "Store"], "RemoteHost"]


class HostReported(Message):
    """A remote host was polled (posted from its poller's thread)."""

    def __init__(self, report: HostReport) -> None:
        super().__init__()
        self.report = report


def hosts_of_run(settings: Settings, arguments: Sequence[str] = ()) -> tuple[list[RemoteAddress], str | None]:
    """The remotes of this run: ``[[remotes]]``, then each ``--remote`` not among them; and the
    host to open on (the first ``--remote``). Raises :class:`~mlx_tui.remote.address.UnknownRemote`."""
    addresses = addresses_from_settings(settings.remotes)
    open_on = None
    for argument in arguments:
        address = resolve_remote(argument, addresses)
        if address not in addresses:
            addresses.append(address)
        open_on = open_on or address.name
    return addresses, open_on


class HostSwitcher:
    """The hosts of the app and the one on screen (``current``: 0 is this machine)."""

    def __init__(self, app: "MlxTuiApp", addresses: Sequence[RemoteAddress], *,
                 open_on: str | None = None, host_factory: HostFactory | None = None,
                 clock: Callable[[], float] = time.time,
                 key_clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._now = clock
        self._key_clock = key_clock
        self.addresses = list(addresses)
        self._factory = host_factory
        self._open_on = open_on
        self.hosts: list["RemoteHost"] = []
        self._screens: dict[str, HostScreen] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._fleet: FleetScreen | None = None
        self._started = False
        self.current = 0

    @property
    def remotes(self) -> bool:
        """Whether this run has any remote host (the host keys show only then)."""
        return bool(self.addresses)

    def names(self) -> list[str]:
        return [LOCAL_NAME, *(a.name for a in self.addresses)]

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> None:
        """After the app's first frame (or at the first switch, if sooner): the hosts and
        their pollers; warnings about keys. Once."""
        if self._started:
            return
        self._started = True
        app = self._app
        store = app.runtime.settings_store
        warning = key_file_warning(store.path, store.settings)
        if warning:
            app.notify(warning, title="API keys readable by others", severity="warning", timeout=12)
            app.event_log.add_line("hosts", warning, self._now(), "warning")
        if self._factory is None and self.addresses:
            from ..remote.host import RemoteHost  # httpx: only when there are remotes

            self._factory = RemoteHost
        for address in self.addresses:
            assert self._factory is not None
            host = self._factory(address, app.runtime.store)
            self.hosts.append(host)
            self._unsubscribe.append(host.on_report(self._post))
            if address.security_note:
                app.event_log.add_line("hosts", f"{address.name}: {address.security_note}",
                                       self._now(), "warning")
            host.start()
        if self._open_on in self.names():
            app.call_later(self.go, self.names().index(self._open_on))

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for screen in self._screens.values():
            screen.chat.stop_all()
        for host in self.hosts:
            host.close()

    def poll_all(self) -> None:
        for host in self.hosts:
            host.poll_now()

    # -- news ----------------------------------------------------------------------------------
    def _post(self, report: HostReport) -> None:
        """In a poller's thread: only post a message."""
        post_from_thread(self._app, HostReported(report))

    def reported(self, report: HostReport) -> None:
        """On the event loop: the host's screen and the overview show it; the app's event log
        says when a host went away or came back."""
        screen = self._screens.get(report.host)
        if screen is not None and screen.is_mounted:
            screen.show_report(report)
        if self._fleet is not None and self._fleet.is_mounted:
            self._fleet.refresh_rows()
        if report.reachable and report.since == report.at and report.down_seconds is not None:
            self._app.event_log.add_line("host", f"{report.host} answers again after "
                                         f"{report.down_seconds:.0f} s", report.at, "success")
        elif not report.reachable and report.failures == 1:
            self._app.event_log.add_line("host", f"{report.problem}", report.at, "error")

    def rows(self) -> list[FleetRow]:
        """The overview's rows: this machine, then each remote."""
        app = self._app
        rows = [FleetRow(1, LOCAL_NAME, app.api_text, reading_from_cache(app.runtime.cache),
                         local=True)]
        for number, address in enumerate(self.addresses, start=2):
            host = self._host(address.name)
            report = host.report if host is not None else None
            reading = host.cache.reading if host is not None else None
            rows.append(FleetRow(number, address.name, address.url, reading, report,
                                 address.security_note,
                                 problem_prefix=f"{address.name} ({address.url}): "))
        return rows

    # -- switching -----------------------------------------------------------------------------
    def _host(self, name: str) -> "RemoteHost | None":
        return next((h for h in self.hosts if h.name == name), None)

    def _screen(self, index: int) -> HostScreen:
        host = self.hosts[index - 1]
        if host.name not in self._screens:
            app = self._app
            screen = HostScreen(host, lambda _model: app.params_for(None),
                                key_clock=self._key_clock, clock=self._now)
            app.install_screen(screen, f"host:{host.name}")
            self._screens[host.name] = screen
        return self._screens[host.name]

    def screen_of(self, name: str) -> HostScreen | None:
        """The screen of remote ``name`` once it has been shown."""
        return self._screens.get(name)

    async def go(self, index: int) -> None:
        """Show host ``index`` (0: this machine; 1..: the remotes)."""
        self.start()
        if not 0 <= index <= len(self.hosts):
            return
        app = self._app  # called with no dialog open: the main screen or a host's is on top
        if index == 0:
            if isinstance(app.screen, HostScreen):
                await app.pop_screen()
        else:
            screen = self._screen(index)
            if app.screen is not screen:
                if isinstance(app.screen, HostScreen):
                    await app.switch_screen(screen)
                else:
                    await app.push_screen(screen)
        self.current = index
        name = self.names()[index]
        app.notify(f"Host {index + 1}: {name}" + (" (this machine)" if index == 0 else ""),
                   timeout=2)

    async def next(self) -> None:
        await self.go((self.current + 1) % (len(self.addresses) + 1))

    def show_fleet(self) -> None:
        async def chosen(number: int | None) -> None:
            self._fleet = None
            if number is not None:
                await self.go(number - 1)

        self._fleet = FleetScreen(self)
        self._app.push_screen(self._fleet, chosen)

    def chat_here(self) -> "ChatPane":
        """The chat pane of the host on screen."""
        screen = self._app.screen
        return screen.chat if isinstance(screen, HostScreen) else self._app.chat

    async def open_conversation(self, conversation_id: int) -> None:
        """Go to the host a saved conversation was with, and open it there."""
        app = self._app
        row = next((c for c in app.runtime.store.conversations() if c.id == conversation_id), None)
        host = row.host if row is not None else None
        names = self.names()
        if host is not None and host not in names:
            app.notify(f"This chat was with {host}, which is not among the hosts now; it "
                       "continues on this machine.", severity="warning", timeout=8)
            host = None
        await self.go(names.index(host) if host is not None else 0)
        if host is not None:
            await self._screens[host].open_conversation(conversation_id)
            return
        await app.chat.open_conversation(conversation_id)
        app.table.set_chat_model(app.cache_name(app.chat.model))
        app.query_one(ChatInput).focus()

    def system_commands(self) -> Iterable[SystemCommand]:
        """Palette entries: go to each host."""
        if not self.remotes:
            return
        for index, name in enumerate(self.names()):
            where = "this machine" if index == 0 else self.addresses[index - 1].url
            yield SystemCommand(f"Hosts: go to {index + 1} {name}", f"{where} · f2 then {index + 1}",
                                lambda index=index: self._app.run_worker(self.go(index)))
