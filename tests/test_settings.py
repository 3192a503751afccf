"""settings.toml: a user edits it by hand or through the app; nothing they write is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_tui.core.settings import (
    Settings,
    SettingsChange,
    SettingsError,
    SettingsStore,
    find_settings_path,
    read_settings,
    write_settings,
)

REPO_SETTINGS = Path(__file__).resolve().parent.parent / "settings.toml"


def test_the_shipped_settings_file_is_the_documented_defaults() -> None:
    shipped = read_settings(REPO_SETTINGS)
    assert shipped == Settings()
    assert shipped.memory.warning_threshold == 0.85
    assert shipped.memory.emergency_threshold == 0.98
    assert shipped.memory.background_load_below == 0.70
    assert shipped.memory.keep_on_cleanup == 1
    assert shipped.cache.policy == "value" and shipped.memory.cleanup == "just_enough"
    assert shipped.cache.preload == ("default",)
    assert shipped.models == {"default": "demo"}
    assert shipped.api.port == 11435


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[memory]\nwarning_threshold = 'high'\n", "memory.warning_threshold", "must be a number"),
        ("[memory]\nwarning_threshold = 1.5\n", "memory.warning_threshold", "(0, 1]"),
        ("[memory]\nwarning_threshold = 0\n", "memory.warning_threshold", "(0, 1]"),
        ("[memory]\nwarning_threshold = 0.99\n", "memory.warning_threshold",
         "below memory.emergency_threshold"),
        ("[memory]\nwarnig_threshold = 0.5\n", "memory.warnig_threshold", "unknown key"),
        ("[cache]\npolicy = 'random'\n", "cache.policy", "unknown policy"),
        ("[cache]\npreload = 'default'\n", "cache.preload", "list of strings"),
        ("[cache]\nmax_loaded = -1\n", "cache.max_loaded", "0 or more"),
        ("[memory]\ncleanup = 'all'\n", "memory.cleanup", "keep_best"),
        ("[colours]\n", "[colours]", "unknown section"),
        ("[api]\nport = 70000\n", "api.port", "1-65535"),
        ("[memory\nwarning_threshold = 0.5\n", "", "not valid TOML"),
    ],
)
def test_a_bad_file_gets_a_message_naming_the_file_and_the_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        read_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert problem in message


def test_written_settings_read_back_the_same_with_the_header(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    settings = Settings().replace("memory", warning_threshold=0.8, emergency_threshold=0.9)
    write_settings(settings, path)
    assert read_settings(path) == settings
    assert path.read_text().startswith("# mlx-tui settings.")
    assert not list(tmp_path.glob(".settings.toml.*")), "no temporary file is left behind"


def test_an_invalid_change_from_the_app_is_refused_and_the_file_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    write_settings(Settings(), path)
    before = path.read_bytes()
    store = SettingsStore(path)
    with pytest.raises(SettingsError, match="memory.warning_threshold"):
        store.update({"memory": {"warning_threshold": 0.99}})
    assert path.read_bytes() == before
    assert store.settings.memory.warning_threshold == 0.85


def test_a_broken_file_keeps_the_last_valid_settings_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    write_settings(Settings().replace("memory", warning_threshold=0.8), path)
    store = SettingsStore(path)
    heard: list[SettingsChange] = []
    store.subscribe(heard.append)

    broken = "[memory]\nwarning_threshold = 'eighty'\n"
    path.write_text(broken)
    assert store.reload_if_changed()
    assert store.settings.memory.warning_threshold == 0.8
    assert heard[-1].new is None and "memory.warning_threshold" in str(heard[-1].error)

    with pytest.raises(SettingsError, match="fix the file first"):
        store.update({"memory": {"warning_threshold": 0.7}})
    assert path.read_text() == broken, "the user's text stays as they wrote it"


def test_a_change_on_disk_is_picked_up_and_announced(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    write_settings(Settings(), path)
    store = SettingsStore(path)
    assert not store.reload_if_changed(), "nothing changed yet"
    heard: list[SettingsChange] = []
    store.subscribe(heard.append)
    path.write_text("[memory]\nwarning_threshold = 0.6\nemergency_threshold = 0.9\n")
    assert store.reload_if_changed()
    assert store.settings.memory.warning_threshold == 0.6
    assert heard[-1].new is not None and heard[-1].new.memory.emergency_threshold == 0.9
    assert heard[-1].sections == {"memory"}, "only the section that changed is announced"


def test_a_save_from_the_app_keeps_the_users_comments_and_writes_once(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    text = (REPO_SETTINGS.read_text() + "\n# my own note about the API\n")
    path.write_text(text)
    store = SettingsStore(path)
    heard: list[SettingsChange] = []
    store.subscribe(heard.append)
    store.update({"memory": {"warning_threshold": 0.8}, "ui": {"theme": "mlx-light"}})
    saved = path.read_text()
    assert "# my own note about the API" in saved
    assert "# fraction that unloads every model" in saved, "comments beside values stay"
    assert read_settings(path).memory.warning_threshold == 0.8
    assert read_settings(path).ui.theme == "mlx-light"
    assert len(heard) == 1 and heard[0].sections == {"memory", "ui"}, "one write, one change"


def test_a_percentage_where_a_fraction_belongs_says_how_to_write_it(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[memory]\nwarning_threshold = 85\n")
    with pytest.raises(SettingsError, match="write 0.85 for 85%"):
        read_settings(path)


def test_remotes_are_an_array_of_named_tables(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[[remotes]]\nname = "studio"\nurl = "http://studio.local:11435"\n'
                    '[[remotes]]\nname = "studio"\nurl = "http://other:11435"\n')
    with pytest.raises(SettingsError, match="used twice"):
        read_settings(path)
    path.write_text('[[remotes]]\nname = "studio"\nurl = "http://studio.local:11435"\n')
    assert read_settings(path).remotes[0].url == "http://studio.local:11435"


def test_the_settings_file_is_searched_flag_then_folder_then_user_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    flag = tmp_path / "mine.toml"
    assert find_settings_path(flag, cwd) == (flag, "--settings")
    user = tmp_path / "config" / "mlx-tui" / "settings.toml"
    assert find_settings_path(None, cwd) == (user, "defaults (no file yet)")
    write_settings(Settings(), user)
    assert find_settings_path(None, cwd) == (user, "user config")
    (cwd / "settings.toml").write_text("")
    assert find_settings_path(None, cwd) == (cwd / "settings.toml", "current folder")


def test_a_model_served_across_machines_is_a_models_table(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[models]\nsmall = "demo"\n\n[models.big]\npath = "~/models/qwen3-235b-4bit"\n'
                    'hostfile = "~/hosts.json"\nbackend = "ring"\npipeline = true\n')
    settings = read_settings(path)
    assert settings.models == {"small": "demo", "big": "~/models/qwen3-235b-4bit"}
    assert settings.distributed == {"big": {"hostfile": "~/hosts.json", "backend": "ring", "pipeline": True}}
    assert read_settings(path) == settings.with_changes({"ui": {"theme": "mlx-light"}}).replace("ui", theme="mlx-dark")
    write_settings(settings, tmp_path / "again.toml")
    assert read_settings(tmp_path / "again.toml") == settings, "written back as the same table"
    for text, key in (('[models.big]\nhostfile = "h.json"\n', "models.big"),
                      ('[models.big]\npath = "x"\nhosts = "h.json"\n', "models.big.hosts"),
                      ('[models.big]\npath = "x"\npipeline = "yes"\n', "models.big.pipeline"),
                      ('[models.big]\npath = "x"\npipeline = true\n', "models.big")):
        path.write_text(text)
        with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
            read_settings(path)
