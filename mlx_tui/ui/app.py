"""The mlx-tui app: memory gauge, cached-models table, chat and event log on one screen.

The app owns no model state: it subscribes to the cache, whose listeners run in the cache's
threads and only post a :class:`CacheEventPosted` message; the handler on the event loop hands
the news to the widget that shows it. Loads, evictions and replies run in threads; the app
only renders, so it stays usable while a model loads or a reply streams.

``run_app(args)`` is what ``mlx-tui`` runs: it builds the runtime, runs the app (which starts
the cache's monitor and preloads after its first frame) and closes everything on the way out.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen, Screen
from textual.theme import Theme
from textual.timer import Timer
from textual.widgets import Footer

from ..core.cache import ModelState
from ..core.catalog import UnknownModel
from ..core.chat import GenerationParams
from ..core.events import CacheEvent, EventKind
from ..core.runtime import Runtime, build_runtime
from ..core.settings import Settings
from .keys import display_key, key_rows, keys_markdown, unknown_binding_ids
from .messages import ApiStatus, CacheEventPosted, SettingsChanged
from .themes import DEFAULT_THEME, scan_themes, theme_dirs
from .widgets.chat import ChatInput, ChatPane
from .widgets.event_log import LOGGED, EventLog
from .widgets.memory_gauge import MemoryGauge
from .widgets.models_table import ModelsTable

if TYPE_CHECKING:
    from .screens.chat_options import ChatOptions

__all__ = ["MlxTuiApp", "run_app", "binding_groups"]

_BUSY = (ModelState.LOADING, ModelState.QUEUED, ModelState.EVICTING)


@dataclass(frozen=True)
class _Command:
    """One palette entry: what it is called and which action it runs."""

    title: str
    help: str
    action: str


class MlxTuiApp(App[int]):
    """One screen over one :class:`Runtime`. The caller owns the runtime and closes it."""

    CSS_PATH = "app.tcss"
    TITLE = "mlx-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
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
        Binding("ctrl+f", "zoom", "Zoom", id="zoom",
                tooltip="Make the focused pane fill the screen, or restore it"),
        Binding("ctrl+q,ctrl+c", "quit", "Quit", id="quit", priority=True, key_display="^q",
                tooltip="Quit (also in the middle of a load or a reply)"),
        Binding("ctrl+p", "command_palette", "Palette", id="palette",
                tooltip="Command palette: every action by name, and \"Change theme\""),
    ]

    def __init__(self, runtime: Runtime, *, model: str | None = None, api: bool = True,
                 params: GenerationParams | None = None, preload: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._now = clock
        self.runtime = runtime
        self._requested_model = model
        self._want_api = api
        self._preload = preload
        self._params = params or GenerationParams()
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker: Timer | None = None
        self._expected_theme: str | None = None
        self._startup_problems: list[str] = []
        self._applied_keys: dict[str, str] = {}
        self.api_server: Any = None
        self.api_text = "API off (--no-api)" if not api else "API starting…"

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        cache = self.runtime.cache
        self.gauge = MemoryGauge(cache.thresholds.warning, cache.thresholds.emergency, id="gauge")
        self.table = ModelsTable(cache, id="models")
        self.chat = ChatPane(self.runtime, self._initial_model(), self._params, id="chat")
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
        cache = self.runtime.cache
        wanted = self._requested_model
        if wanted:
            try:
                return cache.get(wanted).name
            except UnknownModel as exc:
                self._startup_problems.append(str(exc))
        for candidate in ("default", "demo"):
            try:
                view = cache.get(candidate)
            except UnknownModel:
                continue
            if not view.error:
                return view.name
        views = cache.models()
        usable = [v for v in views if not v.error]
        return (usable or views)[0].name if views else None

    def on_mount(self) -> None:
        settings = self.runtime.cache.settings
        self._load_themes(settings)
        self.set_keymap(dict(settings.ui.keys))
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        wide = self.size.width >= 100
        self.query_one("#lower").set_class(wide, "show-log")
        self.gauge.show_snapshot(self.runtime.cache.memory())
        self._update_subtitle()
        self.table.set_chat_model(self.chat.model)
        self.table.sync()
        self._ticker = self.set_interval(0.5, self._models_changed, pause=True)
        self._unsubscribe = self.runtime.cache.subscribe(self._on_cache_event)
        self._unsubscribe_settings = self.runtime.on_settings(
            self._on_settings_change, sections=("ui", "memory", "cache"))
        store = self.runtime.settings_store
        self.event_log.add_line("settings", f"using {store.path.name} ({store.source}); "
                                f"ctrl+s shows the full path", self._now())
        if store.error is not None:
            self._startup_problems.append(f"settings not applied, using defaults: {store.error}")
        for problem in self._startup_problems:
            self.notify(problem, severity="error", timeout=10)
        self.query_one(ChatInput).focus()
        self.call_after_refresh(self._start_background)

    def _start_background(self) -> None:
        """After the first frame: the memory monitor, the preloads and the HTTP API."""
        self._apply_keys(self.runtime.cache.settings)  # imports the screens: after the frame
        self.runtime.start(preload=self._preload)
        # mlx_lm costs about a second to import; pay it soon, not when the first message waits,
        # but not while the first screen is still being finished (it competes for the GIL).
        self.set_timer(1.0, lambda: threading.Thread(target=_warm_up, name="import-mlx-lm",
                                                     daemon=True).start())
        if self._want_api:
            self.run_worker(self._start_api, thread=True, name="api", exit_on_error=False)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe_settings()
        self.chat.stop_all()
        if self.api_server is not None:
            try:
                self.api_server.stop()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass

    # -- the HTTP API --------------------------------------------------------------------------------
    def _start_api(self) -> None:
        """In a worker thread: start the API server of ``mlx_tui.server`` if it is there."""
        api = self.runtime.cache.settings.api
        if not api.enabled:
            self.post_message(ApiStatus("API off (settings)"))
            return
        try:
            from ..server.serve import ApiServer, PortInUse
        except ImportError as exc:
            self.post_message(ApiStatus("API unavailable", f"API unavailable: {exc}"))
            return
        server = ApiServer(self.runtime, api.host, api.port, api_key=api.api_key)
        try:
            server.start()
        except PortInUse as exc:
            self.post_message(ApiStatus(f"API off: port {api.port} in use", str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - the app works without its API
            self.post_message(ApiStatus("API failed", f"API failed to start: {exc}"))
            return
        self.api_server = server
        self.post_message(ApiStatus(f"API {server.url}"))

    def on_api_status(self, message: ApiStatus) -> None:
        self.api_text = message.text
        self._update_subtitle()
        if message.problem:
            self.notify(message.problem, title=message.text, severity="warning", timeout=8)
        self.event_log.add_line("api", message.problem or message.text, self._now(),
                                "warning" if message.problem else "success")

    def _update_subtitle(self) -> None:
        store = self.runtime.settings_store
        self.gauge.border_subtitle = f"{self.api_text} · {store.path.name} ({store.source})"

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
        if event.kind is EventKind.CLEANUP:
            self.gauge.mark_cleanup(str(event.data.get("cleanup", "normal")))
        elif event.kind is EventKind.LOAD_FAILED:
            self.notify(event.message, title="Load failed", severity="error", timeout=10)
        elif event.kind is EventKind.REFUSED:
            self.notify(event.message, title="Load refused", severity="error", timeout=10)
        if event.kind in LOGGED:
            self.event_log.add(event)
        self._models_changed()

    def _models_changed(self) -> None:
        """Re-read the models; keep a 0.5 s tick only while something loads (progress, ETA)."""
        views = self.runtime.cache.models()
        self.table.sync(views)
        self.chat.update_progress()
        busy = any(v.state in _BUSY for v in views)
        assert self._ticker is not None
        if busy:
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
    def _load_themes(self, settings: Settings) -> None:
        scan = scan_themes(theme_dirs(self.runtime.settings_store.path))
        for theme in scan.themes.values():
            self.register_theme(theme)
        for problem in scan.errors:
            self.notify(problem, title="Theme file ignored", severity="error", timeout=10)
        self._use_theme(settings.ui.theme)

    def _use_theme(self, name: str) -> None:
        """Switch to ``name`` as the settings ask (not saved back); unknown -> the default."""
        if name not in self.available_themes:
            self.notify(f"theme {name!r} not found (known: {', '.join(sorted(self.available_themes))}); "
                        f"using {DEFAULT_THEME}", title="Theme", severity="error", timeout=10)
            name = DEFAULT_THEME
        self._expected_theme = name
        self.theme = name

    def _on_theme_changed(self, theme: Theme) -> None:
        """A theme picked in the app (command palette, settings screen) is saved."""
        if theme.name == self._expected_theme or theme.name == self.runtime.cache.settings.ui.theme:
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
        if action in ("quit", "command_palette"):
            return True
        # Screens over the main one have their own keys; the main screen's wait behind them.
        return not isinstance(self.screen, ModalScreen)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        keymap = dict(self.runtime.cache.settings.ui.keys)
        self.push_screen(HelpScreen(keys_markdown(key_rows(binding_groups(), keymap))))

    async def action_new_chat(self) -> None:
        await self.chat.new_chat()
        self.query_one(ChatInput).focus()

    def action_past_chats(self) -> None:
        from .screens.conversations import ConversationsScreen

        async def opened(conversation_id: int | None) -> None:
            if conversation_id:
                await self.chat.open_conversation(conversation_id)
                self.table.set_chat_model(self.chat.model)
                self.query_one(ChatInput).focus()

        self.push_screen(ConversationsScreen(self.runtime.store), opened)

    def action_chat_options(self) -> None:
        from .screens.chat_options import ChatOptionsScreen

        def chosen(options: ChatOptions | None) -> None:
            if options is not None:
                self.chat.set_options(options.system_prompt, options.params)

        self.push_screen(ChatOptionsScreen(self.chat.system_prompt, self.chat.params), chosen)

    def action_copy_reply(self) -> None:
        reply = self.chat.last_reply()
        if reply is None:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(reply)
        self.notify(f"Copied the last reply ({len(reply)} characters).")

    def action_settings(self) -> None:
        from .screens.settings import SettingsScreen

        self.push_screen(SettingsScreen(self.runtime.settings_store, sorted(self.available_themes)))

    def action_toggle_log(self) -> None:
        self.query_one("#lower").toggle_class("show-log")

    def action_zoom(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        elif self.focused is not None:
            self.screen.maximize(self.focused)

    async def action_quit(self) -> None:
        self.chat.stop_all()
        self.exit(0)

    def on_models_table_chat_with(self, message: ModelsTable.ChatWith) -> None:
        self.chat.set_model(message.name)
        self.table.set_chat_model(message.name)
        self.query_one(ChatInput).focus()
        self.notify(f"Chatting with {message.name}.")

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
        self.chat.action_stop()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for command in _palette_commands():
            yield SystemCommand(command.title, command.help,
                                lambda action=command.action: self.run_action(action))


def _warm_up() -> None:
    try:
        import mlx_lm  # noqa: F401
    except Exception:  # noqa: BLE001 - the first load will report it properly
        pass


def _palette_commands() -> list[_Command]:
    """Every action of the app and of the models table, for the command palette."""
    commands = [_Command(b.tooltip, f"{b.description} · {display_key(b.key)}", b.action)
                for b in MlxTuiApp.BINDINGS if isinstance(b, Binding) and b.id not in ("quit", "palette")]
    commands += [_Command(f"Models: {b.tooltip}", f"{b.description} · {display_key(b.key)} in the table",
                          f"focus_and_run('models', '{b.action}')")
                 for b in ModelsTable.BINDINGS if isinstance(b, Binding) and b.show]
    commands.append(_Command("Stop the reply being generated", "Stop · esc", "stop_reply"))
    return commands


def binding_groups() -> list[tuple[str, type]]:
    """Where each binding works, in the order the help screen and docs/ui.md list them."""
    from .screens.chat_options import ChatOptionsScreen
    from .screens.confirm import ConfirmScreen
    from .screens.conversations import ConversationsScreen
    from .screens.help import HelpScreen
    from .screens.settings import SettingsScreen

    return [
        ("Everywhere", MlxTuiApp),
        ("Writing a message", ChatInput),
        ("Chat", ChatPane),
        ("Models table (tab to reach it)", ModelsTable),
        ("Settings screen", SettingsScreen),
        ("Chat options screen", ChatOptionsScreen),
        ("Saved chats screen", ConversationsScreen),
        ("Questions", ConfirmScreen),
        ("Help screen", HelpScreen),
    ]


def run_app(args: argparse.Namespace) -> int:
    """``mlx-tui``: build the runtime, run the app, close everything (even mid-load)."""
    runtime = build_runtime(getattr(args, "settings", None), db_path=getattr(args, "db", None))
    try:
        app = MlxTuiApp(runtime, model=getattr(args, "model", None),
                        api=not getattr(args, "no_api", False))
        result = app.run()
    finally:
        runtime.close()
    return int(result or 0)
