"""``mlx-tui status``: the cached models of a running instance, or, without one, a clear
"nothing answers at ADDRESS" (exit 1) followed by what this machine has."""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from mlx_tui.core.runtime import Runtime
from mlx_tui.core.settings import ApiSettings
from mlx_tui.devtools.ports import free_port
from mlx_tui.server.serve import ApiServer
from mlx_tui.status import instance_url, run_status


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Any]) -> Runtime:
    return runtime_factory({
        "alpha": str(model_factory("alpha")),
        "beta": str(model_factory("beta", seed=1)),
        "gamma": str(model_factory("gamma", seed=2)),
    })


def status_args(tmp_path: Path, url: str | None, as_json: bool = False,
                port: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(settings=tmp_path / "settings.toml", db=None, url=url, json=as_json,
                              port=port)


def use(url: str, model: str, times: int, headers: dict[str, str] | None = None) -> None:
    for _ in range(times):
        reply = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text


def test_status_prints_cached_models_by_use_count_with_load_times(
        runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ApiServer(runtime, "127.0.0.1", 0) as server:
        use(server.url, "beta", 1)
        use(server.url, "alpha", 3)
        runtime.cache.pin("alpha")
        assert run_status(status_args(tmp_path, server.url)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"mlx-tui 0.1.0 at {server.url}: normal"
    assert out[1].startswith("memory ") and "warning 85%, emergency 98%" in out[1]
    header, first, second = out[3:6]
    assert header.split() == ["NAME", "STATE", "USES", "LAST", "USED", "LOADED", "LOAD", "TIME", "SIZE"]
    assert first.split()[:3] == ["alpha", "loaded", "3"] and first.endswith("pinned")
    assert second.split()[:3] == ["beta", "loaded", "1"]
    assert "s ago" in first and " s " in first and "KB" in first  # last used, load time, size
    assert out[-1] == "also known, not loaded (2): demo, gamma"


def test_status_json_is_the_document_of_get_root(
        runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ApiServer(runtime, "127.0.0.1", 0) as server:
        use(server.url, "alpha", 2)
        assert run_status(status_args(tmp_path, server.url, as_json=True)) == 0
        served = httpx.get(f"{server.url}/").json()
    printed = json.loads(capsys.readouterr().out)
    assert printed["cached_models"] == served["cached_models"]
    assert [(m["name"], m["use_count"]) for m in printed["cached_models"]] == [("alpha", 2)]


def test_status_sends_the_api_key_of_the_settings(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    keyed = runtime_factory({"alpha": str(model_factory("alpha"))}, api={"api_key": "s3cret"})
    with ApiServer(keyed, "127.0.0.1", 0, api_key="s3cret") as server:
        assert run_status(status_args(tmp_path, server.url)) == 0
        runtime_factory({"alpha": str(model_factory("alpha"))})  # the same file, no key now
        assert run_status(status_args(tmp_path, server.url)) == 1
    err = capsys.readouterr().err
    assert f"{server.url} answered 401" in err and "Bearer" in err


def test_status_without_an_instance_says_so_and_shows_local_models_and_memory(
        runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    assert run_status(status_args(tmp_path, url)) == 1
    captured = capsys.readouterr()
    assert f"no mlx-tui instance answers at {url}" in captured.err
    assert "mlx-tui serve" in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "models on this machine (none loaded):"
    rows = {line.split()[0]: line for line in lines[2:] if line and not line.startswith("memory")}
    assert {"alpha", "beta", "gamma", "demo"} <= set(rows)
    assert "ready to load" in rows["alpha"] and "KB" in rows["alpha"]
    assert lines[-1].startswith("memory ") and "% of " in lines[-1]

    assert run_status(status_args(tmp_path, url, as_json=True)) == 1
    local = json.loads(capsys.readouterr().out)
    assert local["url"] == url and "no mlx-tui instance answers" in local["error"]
    assert {"alpha", "beta", "gamma"} <= {m["name"] for m in local["models"]}
    assert 0 < local["memory"]["used_fraction"] < 1 and local["memory"]["total_bytes"] > 0


def test_status_tells_another_server_from_an_instance(
        runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Other) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_address[1]}"
        assert run_status(status_args(tmp_path, url)) == 1
        other.shutdown()
    captured = capsys.readouterr()
    assert f"{url} answered 200: not an mlx-tui instance ('Ollama is running')" in captured.err
    assert captured.out.startswith("models on this machine")


def test_instance_url_reaches_a_wildcard_bind_through_loopback() -> None:
    assert instance_url(ApiSettings()) == "http://127.0.0.1:11435"
    assert instance_url(ApiSettings(host="0.0.0.0", port=8080)) == "http://127.0.0.1:8080"
    assert instance_url(ApiSettings(host="::", port=8080)) == "http://[::1]:8080"


def test_status_finds_an_instance_by_address_without_http_or_by_port(
        runtime: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ApiServer(runtime, "127.0.0.1", 0) as server:
        use(server.url, "alpha", 1)
        assert run_status(status_args(tmp_path, f"127.0.0.1:{server.port}")) == 0
        assert capsys.readouterr().out.startswith(f"mlx-tui 0.1.0 at {server.url}: ")
        assert run_status(status_args(tmp_path, None, port=server.port)) == 0
        assert capsys.readouterr().out.startswith(f"mlx-tui 0.1.0 at {server.url}: ")


def test_status_on_the_command_line_takes_its_options_after_the_command(
        runtime: Runtime, tmp_path: Path) -> None:
    from mlx_tui.cli import main

    with ApiServer(runtime, "127.0.0.1", 0) as server:
        assert main(["status", "--settings", str(tmp_path / "settings.toml"),
                     "--url", f"127.0.0.1:{server.port}"]) == 0
