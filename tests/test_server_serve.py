"""``mlx-tui serve`` as a real process: it preloads, answers, shows in ``mlx-tui status``, and
exits 0 on SIGTERM; a taken port or an open bind without a key is exit code 2 with a message."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.settings_files import write_isolated_settings

MLX_TUI = str(Path(sys.executable).with_name("mlx-tui"))


@pytest.fixture
def models(model_factory: Callable[..., Any]) -> dict[str, str]:
    return {"alpha": str(model_factory("alpha")), "beta": str(model_factory("beta", seed=1))}


def settings_file(folder: Path, models: dict[str, str], **sections: dict[str, Any]) -> Path:
    """A settings.toml that knows only ``models`` (no folder or Hugging Face scans)."""
    return write_isolated_settings(folder / "settings.toml", models, **sections)


def wait_for(check: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, "mlx-tui serve exited early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def health(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/health", timeout=2).json()
    except httpx.HTTPError:
        return None


def test_serve_preloads_answers_shows_in_status_and_exits_0_on_sigterm(
        tmp_path: Path, models: dict[str, str]) -> None:
    port = free_port()
    settings = settings_file(tmp_path, models, api={"port": port}, cache={"preload": ["alpha"]})
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [MLX_TUI, "--settings", str(settings), "--db", str(tmp_path / "serve.db"), "serve"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: health(url) is not None, process, 60)

        def alpha_loaded() -> bool:
            cached = (health(url) or {}).get("cached_models", [])
            return [(m["name"], m["state"]) for m in cached] == [("alpha", "loaded")]

        wait_for(alpha_loaded, process, 60)
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "alpha", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] > 0

        status = subprocess.run([MLX_TUI, "--settings", str(settings), "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        header, row = status.stdout.splitlines()[3:5]
        assert header.split()[:3] == ["NAME", "STATE", "USES"]
        assert row.split()[:3] == ["alpha", "loaded", "1"]
        as_json = subprocess.run([MLX_TUI, "--settings", str(settings), "status", "--json"],
                                 capture_output=True, text=True, timeout=60)
        assert as_json.returncode == 0
        cached = json.loads(as_json.stdout)["cached_models"]
        assert [(m["name"], m["use_count"]) for m in cached] == [("alpha", 1)]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = log_path.read_text()
    assert "preloaded alpha in" in log_text and "alpha: loaded in" in log_text
    assert "SIGTERM received" in log_text and "Traceback" not in log_text
    assert health(url) is None  # the port is closed


def test_serve_on_a_taken_port_exits_2_with_a_clear_message(
        tmp_path: Path, models: dict[str, str]) -> None:
    settings = settings_file(tmp_path, models)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(  # the common options after the command work too
            [MLX_TUI, "serve", "--settings", str(settings), "--db", str(tmp_path / "serve.db"),
             "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use (another mlx-tui or Ollama?)" in done.stderr
    assert "--port or [api].port" in done.stderr
    assert "without the API" not in done.stderr, "serve is the API: running without it is no advice"
    assert "Traceback" not in done.stderr


def test_serve_beyond_loopback_without_a_key_exits_2(tmp_path: Path, models: dict[str, str]) -> None:
    settings = settings_file(tmp_path, models)
    done = subprocess.run(
        [MLX_TUI, "--settings", str(settings), "--db", str(tmp_path / "serve.db"),
         "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "without an API key" in done.stderr and "[api].api_key" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_on_a_port_that_is_not_one_exits_2_naming_the_port(
        tmp_path: Path, models: dict[str, str], port: str) -> None:
    settings = settings_file(tmp_path, models)
    done = subprocess.run([MLX_TUI, "serve", "--settings", str(settings), "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"argument --port: must be a port number 1-65535, got {port}" in done.stderr
    assert "host" not in done.stderr.split("error:")[1] and "Traceback" not in done.stderr


def test_the_app_and_serve_start_the_api_the_same_way(
        runtime_factory: Callable[..., Any], models: dict[str, str]) -> None:
    from mlx_tui.server.serve import ApiServerError, api_url, start_api

    port = free_port()
    runtime = runtime_factory(models, api={"port": port})
    server = start_api(runtime)
    try:
        assert server.url == api_url("127.0.0.1", port) == f"http://127.0.0.1:{port}"
        assert health(server.url) is not None
        with pytest.raises(ApiServerError, match=f"port {port} on 127.0.0.1 is in use"):
            start_api(runtime)
    finally:
        server.stop()
    assert api_url("0.0.0.0", 8080, connectable=True) == "http://127.0.0.1:8080"
    assert api_url("::", 8080) == "http://[::]:8080"
