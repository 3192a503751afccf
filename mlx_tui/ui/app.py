"""The mlx-tui app: memory gauge, cached-models table, chat and event log on one screen.

The app owns no model state: it subscribes to the cache, whose listeners run in the cache's
threads and only post a :class:`CacheEventPosted` message; the handler on the event loop hands
the news to the widget that shows it. Settings come the same way, from the runtime's watch of
settings.toml, only for the sections the app shows (``[ui]``, ``[memory]``, ``[cache]``).
Loads, evictions and replies run in threads; the app only renders, so it stays usable while a
model loads or a reply streams.

``run_app(args)`` is what ``mlx-tui`` runs: it builds the runtime, runs the app (which starts
the cache's monitor and preloads after its first frame) and closes everything on the way out.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.theme import Theme
from textual.timer import Timer
from textual.widgets import Footer

from ..core.cache import ModelState
from ..core.catalog import UnknownModel
from ..core.chat import GenerationParams
from ..core.events import CacheEvent, EventKind
from ..core.runtime import Runtime
from ..core.settings import Settings
from ..remote.address import RemoteAddress, UnknownRemote, addresses_from_settings
from .api import start_app_api
from .hosts import HostReported, HostSwitcher, hosts_of_run
from .keys import binding_groups, key_rows, keys_markdown, unknown_binding_ids
from .messages import ApiStatus, CacheEventPosted, SettingsChanged
from .names import ShownNames, first_model
from .palette import palette_commands, without_duplicates
from .theming import AppThemes
from .themes import theme_dirs
from .widgets.chat import ChatInput, ChatPane, params_with_defaults
from .widgets.event_log import LOGGED, EventLog
from .widgets.memory_gauge import MemoryGauge
from .widgets.models_table import ModelsTable

if TYPE_CHECKING:
    from .screens.chat_options import ChatOptions

__all__ = ["MlxTuiApp", "run_app"]

_BUSY = (ModelState.LOADING, ModelState.QUEUED, ModelState.EVICTING)
CHAT_REPLY_LINES = 8
"""The chat keeps at least this many lines for the conversation; the table gives way first."""
TABLE_MIN_HEIGHT, TABLE_MAX_HEIGHT = 4, 12  # with its border: a header and a row, up to 9 rows


class MlxTuiApp(App[int]):
    """One screen over one :class:`Runtime`. The caller owns the runtime and closes it.

    ``params`` fixes the generation options of every chat (tests); without it each chat starts
    with its model's own defaults (``generation_config.json``). ``clock`` stamps the event log;
    ``key_clock`` tells the models table single key presses from bursts of typing. ``remotes``
    are the other instances it shows beside this one (default: ``[[remotes]]``), ``open_on``
    the one to show first (see :mod:`.hosts`).
    """

    CSS_PATH = "app.tcss"
    TITLE = "mlx-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (28, "-tall")]  # short: no gauge history line
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="help",
                tooltip="Every key, and what each part of the screen shows"),
        Binding("ctrl+n", "new_chat", "New", id="new-chat",
                tooltip="Start a new conversation (a reply under way is still saved)"),
        Binding("ctrl+o", "past_chats", "Chats", id="past-chats",
                tooltip="Saved conversations: open one to continue it, or delete it"),
        Binding("ctrl+t", "chat_options", "Options", id="chat-options",
                tooltip="System prompt, temperature, top p, max tokens and seed of this chat"),
        Binding("ctrl+r", "copy_reply", "Copy", id="copy-reply",
                tooltip="Copy the last reply to the clipboard (OSC 52: works over SSH)"),
        Binding("ctrl+s", "settings", "Settings", id="settings",
                tooltip="Thresholds, clean-up, policy, polling, theme; saved to settings.toml"),
        Binding("ctrl+l", "toggle_log", "Events", id="toggle-log",
                tooltip="Show or hide the event log"),
        Binding("ctrl+g,k", "prompt_caches", "Prompts", id="prompt-caches", show=False,
                tooltip="Prompt caches: each one's model, tokens, memory or disk, value; drop one"),
        Binding("f2", "fleet", "Hosts", id="fleet",
                tooltip="Fleet overview: every host's memory, models and requests (with [[remotes]])"),
        Binding("f3", "next_host", "Next host", id="next-host", show=False,
                tooltip="Go to the next host: this machine, then each remote in turn"),
        Binding("ctrl+f", "zoom", "Zoom", id="zoom",
                tooltip="Make the focused pane fill the screen, or restore it"),
        Binding("ctrl+q,ctrl+c", "quit", "Quit", id="quit", priority=True, key_display="^q",
                tooltip="Quit (also in the middle of a load or a reply)"),
        Binding("ctrl+p", "command_palette", "Palette", id="palette",
                tooltip="Command palette: every action by name, and \"Change theme\""),
    ]

    def __init__(self, runtime: Runtime, *, model: str | None = None, api: bool = True,
                 params: GenerationParams | None = None, preload: bool = True,
                 clock: Callable[[], float] = time.time,
                 key_clock: Callable[[], float] = time.monotonic,
                 remotes: Sequence[RemoteAddress] | None = None,
                 open_on: str | None = None) -> None:
        super().__init__()
        self._now = clock
        self._key_clock = key_clock
        self.runtime = runtime
        self.names = ShownNames()
        self._requested_model = model
        self._want_api = api
        self._preload = preload
        self._params = params
        self._unsubscribe: list[Callable[[], None]] = []
        self._ticker: Timer | None = None
        self._expected_theme: str | None = None
        self._startup_problems: list[str] = []
        self._applied_keys: dict[str, str] = {}
        self._settings_ok = runtime.settings_store.error is None
        self._wide = True  # 100 columns or more: the event log beside the chat
        self.themes: AppThemes | None = None
        self.api_server: Any = None
        self.api_text = "API off (--no-api)" if not api else "API starting…"
        if remotes is None:
            remotes = addresses_from_settings(runtime.settings_store.settings.remotes)
        self.hosts = HostSwitcher(self, remotes, open_on=open_on, clock=clock, key_clock=key_clock)

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        cache = self.runtime.cache
        self.gauge = MemoryGauge(cache.thresholds.warning, cache.thresholds.emergency, id="gauge")
        self.table = ModelsTable(cache, self.names, clock=self._key_clock, id="models")
        self.chat = ChatPane(self.runtime, self._initial_model(), self.params_for, id="chat")
        self.event_log = EventLog(id="log")
        yield self.gauge
        yield self.table
        with Horizontal(id="lower"):
            yield self.chat
            yield self.event_log
        # The palette key is one of ours (below), not Textual's docked one, which overlaps the
        # last key shown when the footer is too narrow for all of them.
        yield Footer(compact=True, show_command_palette=False)

    def _initial_model(self) -> str | None:
        """The model to chat with first, by the name the user gave (``--model demo``)."""
        model, problem = first_model(self.runtime.cache, self._requested_model, self.names)
        if problem:
            self._startup_problems.append(problem)
        return model

    def cache_name(self, name: str | None) -> str | None:
        """The cache's own name for a model the app knows by ``name`` (None if unknown)."""
        if name is None:
            return None
        try:
            return self.runtime.cache.get(name).name
        except UnknownModel:
            return None

    def params_for(self, model: str | None) -> GenerationParams:
        """The options a new chat with ``model`` starts with: the app's, or the model's own."""
        if self._params is not None:
            return self._params
        try:
            view = self.runtime.cache.get(model) if model else None
        except UnknownModel:
            view = None
        return params_with_defaults(getattr(view, "generation_defaults", None) or {})

    def on_mount(self) -> None:
        settings = self.runtime.settings_store.settings
        store = self.runtime.settings_store
        self.themes = AppThemes(self, theme_dirs(store.path), lambda message, title: self.notify(
            message, title=title, severity="error", timeout=10))
        self.themes.load()
        self._use_theme(settings.ui.theme)
        self.set_keymap(dict(settings.ui.keys))
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self._wide = self.size.width >= 100
        self.query_one("#lower").set_class(self._wide, "show-log")
        self._fit_table(self.size.height)
        self.watch(self.screen, "maximized", lambda _: self._fit_table(self.size.height))
        self.gauge.show_snapshot(self.runtime.cache.memory())
        self._update_subtitle()
        self.table.sync()
        self.table.set_chat_model(self.cache_name(self.chat.model), select=True)
        self._ticker = self.set_interval(0.5, self._models_changed, pause=True)
        self.set_interval(settings.memory.poll_seconds, self._watch_files)
        self._unsubscribe = [
            self.runtime.cache.subscribe(self._on_cache_event),
            self.runtime.on_settings(self._on_settings_change, sections=("ui", "memory", "cache")),
        ]
        self.event_log.add_line("settings", f"using {store.path.name} ({store.source}); "
                                f"ctrl+s shows the full path", self._now())
        if store.error is not None:
            self.event_log.add_line("settings", f"{store.error}; using defaults until it is "
                                    "fixed", self._now(), "error")
            self._startup_problems.append(f"settings not applied, using defaults: {store.error}")
        for problem in [*self.runtime.problems, *self._startup_problems]:
            self.notify(problem, severity="error", timeout=10)
        self.query_one(ChatInput).focus()
        self.call_after_refresh(self._start_background)

    def _start_background(self) -> None:
        """After the first frame: the memory monitor, the preloads and the HTTP API."""
        self._apply_keys(self.runtime.settings_store.settings)  # imports the screens
        self.runtime.start(preload=self._preload)
        # mlx_lm costs about a second to import; pay it soon, not when the first message waits,
        # but not while the first screen is still being finished (it competes for the GIL).
        self.set_timer(1.0, lambda: threading.Thread(target=_warm_up, name="import-mlx-lm",
                                                     daemon=True).start())
        if self._want_api:
            self.run_worker(self._start_api, thread=True, name="api", exit_on_error=False)
        self.hosts.start()

    def on_resize(self, event: Any) -> None:
        """Across 100 columns the log goes beside the chat or gives it back its place; the
        table is as tall as it may be with 8 lines left for the reply."""
        wide = event.size.width >= 100
        if wide != self._wide:
            self.query_one("#lower").set_class(wide, "show-log")
        self._wide = wide
        self._fit_table(event.size.height)

    def _fit_table(self, height: int) -> None:
        gauge = 5 if height < 28 else 6  # the CSS of MemoryGauge for -short and -tall
        room = height - 1 - gauge - (2 + CHAT_REPLY_LINES + 3)  # footer; chat borders, input
        zoomed = self.screen.maximized is self.table
        self.table.styles.max_height = None if zoomed else max(
            TABLE_MIN_HEIGHT, min(TABLE_MAX_HEIGHT, room))  # zoomed: the stylesheet's 100%

    def on_unmount(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.chat.stop_all()
        self.hosts.stop()
        if self.api_server is not None:
            try:
                self.api_server.stop()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """A toast. Always plain text: messages carry names, paths and settings sections
        (``[foo]``) that must not be read as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # -- the HTTP API --------------------------------------------------------------------------------
    def _start_api(self) -> None:
        """In a worker thread: start the API as ``mlx-tui serve`` does, or say why not."""
        self.api_server, status = start_app_api(self.runtime)
        self.post_message(status)

    def on_api_status(self, message: ApiStatus) -> None:
        self.api_text = message.text
        self._update_subtitle()
        if message.problem:
            self.notify(message.problem, title=message.text, severity="warning", timeout=8)
        self.event_log.add_line("api", message.problem or message.text, self._now(),
                                "warning" if message.problem else "success")

    def _update_subtitle(self) -> None:
        store = self.runtime.settings_store
        marker = " ✗ not valid" if store.error is not None else ""
        self.gauge.border_subtitle = Content(
            f"{self.api_text} · {store.path.name}{marker} ({store.source})")

    def _watch_files(self) -> None:
        """Each poll: theme files that changed, and whether settings.toml became valid again."""
        assert self.themes is not None
        self.themes.poll()
        ok = self.runtime.settings_store.error is None
        if ok != self._settings_ok:
            self._settings_ok = ok
            self._update_subtitle()

    # -- cache news --------------------------------------------------------------------------------
    def _on_cache_event(self, event: CacheEvent) -> None:
        """Called in whatever thread the event happened in: only post a message."""
        try:
            self.post_message(CacheEventPosted(event))
        except RuntimeError:  # the event loop is gone: the app is closing
            pass

    def on_cache_event_posted(self, message: CacheEventPosted) -> None:
        event = message.event
        if event.kind is EventKind.MEMORY:
            self.gauge.show_snapshot(event.data["snapshot"])
            return
        text = self.names.message(event.model, event.message)  # the name the user knows
        if event.kind is EventKind.CLEANUP:
            self.gauge.mark_cleanup(str(event.data.get("cleanup", "normal")))
        elif event.kind is EventKind.LOAD_FAILED:
            self.notify(text, title="Load failed", severity="error", timeout=10)
        elif event.kind is EventKind.REFUSED:
            self.notify(text, title="Load refused", severity="error", timeout=10)
        if event.kind in LOGGED:
            self.event_log.add(event, text)
        self._models_changed()

    def _models_changed(self) -> None:
        """Re-read the models; keep a 0.5 s tick only while something loads (progress, ETA)."""
        views = self.runtime.cache.models()
        self.table.sync(views)
        self.chat.update_progress()
        assert self._ticker is not None
        if any(v.state in _BUSY for v in views):
            self._ticker.resume()
        else:
            self._ticker.pause()

    def _on_settings_change(self, change: Any) -> None:
        """Called in the settings watch (or saving) thread: only post a message."""
        try:
            self.post_message(SettingsChanged(change))
        except RuntimeError:  # the event loop is gone: the app is closing
            pass

    def on_settings_changed(self, message: SettingsChanged) -> None:
        """The app's sections of settings.toml changed (a save, an edit): apply them once."""
        self._settings_ok = message.change.error is None
        self._update_subtitle()
        error = message.change.error
        if error is not None:
            self.notify(f"{error}\nThe last valid settings stay in force.",
                        title="settings.toml not applied", severity="error", timeout=12)
            return
        settings = message.change.new
        assert settings is not None
        self.gauge.set_thresholds(settings.memory.warning_threshold,
                                  settings.memory.emergency_threshold)
        if settings.ui.theme != self.theme:
            self._use_theme(settings.ui.theme)
        self._apply_keys(settings)
        self.table.set_sort(self.table.sort_column, self.table.sort_reverse)  # policy may differ

    # -- themes and keys -------------------------------------------------------------------------------
    def _validate_theme(self, theme_name: str) -> str:
        """Every switch of theme comes here first: one that cannot be drawn is refused with a
        notification, and the theme in use stays (Textual would end the app)."""
        name = super()._validate_theme(theme_name)
        return self.themes.guard(name) if self.themes is not None else name

    def _use_theme(self, name: str) -> None:
        """Switch to ``name`` as the settings ask (not saved back); unknown -> the default."""
        assert self.themes is not None
        self._expected_theme = self.themes.choose(name)
        self.theme = self._expected_theme

    def _on_theme_changed(self, theme: Theme) -> None:
        """A theme picked in the app (command palette, settings screen) is saved."""
        if theme.name in (self._expected_theme, self.runtime.settings_store.settings.ui.theme):
            return
        self._expected_theme = theme.name

        def save() -> None:
            try:
                self.runtime.settings_store.update({"ui": {"theme": theme.name}})
            except Exception as exc:  # noqa: BLE001 - the theme still applies for this session
                self.call_from_thread(self.notify, str(exc), title="Theme not saved",
                                      severity="error")

        self.run_worker(save, thread=True, name="save theme", exit_on_error=False)

    def _apply_keys(self, settings: Settings) -> None:
        keys = dict(settings.ui.keys)
        if keys == self._applied_keys:
            return  # nothing to remap: skip a keymap change that recomposes the footer
        self._applied_keys = keys
        unknown = unknown_binding_ids(keys, binding_groups())
        if unknown:
            self.notify(f"[ui.keys]: unknown binding id {', '.join(unknown)} (see f1 for the ids)",
                        severity="warning", timeout=10)
        self.set_keymap({k: v for k, v in keys.items() if k not in unknown})

    # -- actions -----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("fleet", "next_host") and not self.hosts.remotes:
            return False  # one host: no host keys in the footer
        if action in ("quit", "command_palette") or action not in _OWN_ACTIONS:
            return True  # Textual's own (tab's focus_next...) work everywhere
        # Screens over the main one have their own keys; the main screen's wait behind them.
        return not isinstance(self.screen, ModalScreen)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        keymap = dict(self.runtime.settings_store.settings.ui.keys)
        self.push_screen(HelpScreen(keys_markdown(key_rows(binding_groups(), keymap))))

    async def action_new_chat(self) -> None:
        chat = self.hosts.chat_here()  # the chat, keys and options act on the host on screen
        await chat.new_chat()
        chat.query_one(ChatInput).focus()

    def action_past_chats(self) -> None:
        from .screens.conversations import ConversationsScreen

        async def opened(conversation_id: int | None) -> None:
            if conversation_id:  # on the host the conversation was with
                await self.hosts.open_conversation(conversation_id)

        self.push_screen(ConversationsScreen(self.runtime.store), opened)

    def action_chat_options(self) -> None:
        from .screens.chat_options import ChatOptionsScreen

        chat = self.hosts.chat_here()

        def chosen(options: ChatOptions | None) -> None:
            if options is not None:
                chat.set_options(options.system_prompt, options.params)

        self.push_screen(ChatOptionsScreen(chat.system_prompt, chat.params), chosen)

    def action_copy_reply(self) -> None:
        reply = self.hosts.chat_here().last_reply()
        if reply is None:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(reply)
        self.notify(f"Copied the last reply ({len(reply)} characters).")

    def action_settings(self) -> None:
        from .screens.settings import SettingsScreen

        self.push_screen(SettingsScreen(self.runtime.settings_store, sorted(self.available_themes)))

    def action_prompt_caches(self) -> None:
        from .screens.prompt_caches import PromptCachesScreen

        if getattr(self.screen, "table", self.table) is not self.table:  # a remote host's screen
            self.notify("The prompt-cache view lists this machine's prompt caches; a remote "
                        "host's are in its models table (the Prompt cache column).",
                        title="Prompt caches", timeout=8)
            return
        self.push_screen(PromptCachesScreen(self.runtime.cache, self.names, model=self.table.selected))

    def action_toggle_log(self) -> None:
        self.query_one("#lower").toggle_class("show-log")

    def action_zoom(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        elif self.focused is not None:
            self.screen.maximize(self.focused)

    def action_fleet(self) -> None:
        self.hosts.show_fleet()

    async def action_next_host(self) -> None:
        await self.hosts.next()

    def on_host_reported(self, message: HostReported) -> None:
        self.hosts.reported(message.report)

    async def action_quit(self) -> None:
        self.chat.stop_all()
        self.exit(0)

    def on_models_table_chat_with(self, message: ModelsTable.ChatWith) -> None:
        shown = self.names.shown(message.name)
        self.chat.set_model(shown)
        self.table.set_chat_model(message.name)
        self.query_one(ChatInput).focus()
        self.notify(f"Chatting with {shown}.")

    def on_models_table_confirm_emergency(self, message: ModelsTable.ConfirmEmergency) -> None:
        from .screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.table.emergency_cleanup()

        self.push_screen(ConfirmScreen(
            "Emergency clean-up",
            "Unload every model now? Models in use unload when their reply ends."), answered)

    def on_chat_pane_reply_ended(self, message: ChatPane.ReplyEnded) -> None:
        self._models_changed()  # the reply's lease ended: "in use" -> "loaded"
        if message.saved and not message.on_screen:
            self.notify(f"The reply from {message.model} was saved in “{message.title}” (ctrl+o).",
                        title="Reply ready")

    # -- command palette ---------------------------------------------------------------------------
    def action_focus_and_run(self, widget_id: str, action: str) -> None:
        """Run a widget's action from the palette, as if its key were pressed there."""
        widget = self.query_one(f"#{widget_id}")
        widget.focus()
        self.call_later(widget.run_action, action)

    def action_stop_reply(self) -> None:
        self.hosts.chat_here().action_stop()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from without_duplicates(super().get_system_commands(screen))
        for command in palette_commands(self.BINDINGS, ModelsTable.BINDINGS):
            yield SystemCommand(command.title, command.help,
                                lambda action=command.action: self.run_action(action))
        yield from self.hosts.system_commands()


_OWN_ACTIONS = frozenset(b.action for b in MlxTuiApp.BINDINGS if isinstance(b, Binding))


def _warm_up() -> None:
    try:
        import mlx_lm  # noqa: F401
    except Exception:  # noqa: BLE001 - the first load will report it properly
        pass


def run_app(args: argparse.Namespace) -> int:
    """``mlx-tui``: build the runtime, run the app, close everything (even mid-load)."""
    from ..distributed.wiring import build_runtime_with_hosts  # plain build_runtime unless configured

    runtime, stop_hosts = build_runtime_with_hosts(getattr(args, "settings", None),
                                                   db_path=getattr(args, "db", None))
    try:
        try:
            remotes, open_on = hosts_of_run(runtime.settings_store.settings,
                                            getattr(args, "remote", None) or ())
        except UnknownRemote as exc:
            print(f"mlx-tui: {exc}", file=sys.stderr)
            return 2
        app = MlxTuiApp(runtime, model=getattr(args, "model", None),
                        api=not getattr(args, "no_api", False), remotes=remotes, open_on=open_on)
        result = app.run()
    finally:
        runtime.close()
        stop_hosts()
    return int(result or 0)
