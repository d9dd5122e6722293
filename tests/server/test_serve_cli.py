"""``evstate serve`` as a process (config, flags, signals) and bearer-token auth."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import evstate
from evstate.config import Config
from tests.cli.cli_helpers import ServeProcess
from tests.server.harness import WAIT, Raw, Served

CONFIG = """\
workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 1
      auth_token: {token}
  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./served
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def factory(*args: str) -> ServeProcess:
        process = ServeProcess(*args, cwd=tmp_path, port=False)
        started.append(process)
        return process

    yield factory
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.stop()


def call(url: str, function_id: str, data: Any, headers: dict[str, str] | None = None) -> Any:
    with connect(url, open_timeout=WAIT, additional_headers=headers, compression=None) as ws:
        assert json.loads(ws.recv(timeout=WAIT))["type"] == "workerregistered"
        ws.send(
            json.dumps(
                {
                    "type": "invokefunction",
                    "function_id": function_id,
                    "data": data,
                    "invocation_id": "cli-1",
                }
            )
        )
        return json.loads(ws.recv(timeout=WAIT))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_config_until_signal(
    tmp_path: Path, serve: Callable[..., ServeProcess], sig: int
) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG.format(token="t0ken"))
    process = serve("--config", "config.yaml", "--host", "127.0.0.1", "--port", "0")
    url = process.url()
    auth = {"Authorization": "Bearer t0ken"}
    acknowledged = []
    with connect(url, open_timeout=WAIT, additional_headers=auth, compression=None) as ws:
        assert json.loads(ws.recv(timeout=WAIT))["type"] == "workerregistered"
        for i in range(300):  # pipelined: many calls in flight when the signal comes
            ws.send(
                json.dumps(
                    {
                        "type": "invokefunction",
                        "function_id": "state::set",
                        "data": {"scope": "cli", "key": f"k{i}", "value": i},
                        "invocation_id": str(i),
                    }
                )
            )
        with contextlib.suppress(ConnectionClosed):
            while True:
                answer = json.loads(ws.recv(timeout=WAIT))
                assert "error" not in answer
                acknowledged.append(int(answer["invocation_id"]))
                if len(acknowledged) == 20:
                    process.proc.send_signal(sig)  # stop while calls are in flight
    assert process.stop(sig) == 0  # SIGINT and SIGTERM: a clean exit
    assert len(acknowledged) >= 20
    with evstate.open(tmp_path / "served") as store:  # every acknowledged write is there
        stored = store.list("cli")
        assert all(f"k{i}" in stored for i in acknowledged)


def test_serve_defaults_to_a_file_store_in_data(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    process = serve("--port", "0")
    url = process.url()
    assert url.startswith("ws://127.0.0.1:")  # loopback by default
    assert call(url, "state::set", {"scope": "d", "key": "k", "value": 1})["result"]
    assert process.stop() == 0
    with evstate.open(tmp_path / "data") as store:
        assert store.get("d", "k") == 1


def test_serve_reports_problems_and_exits_1(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    (tmp_path / "bad.yaml").write_text("workers: [{name: iii-state, config: {fsync: sometimes}}]\n")
    process = serve("--config", "bad.yaml")
    assert process.proc.wait(WAIT) == 1
    process.stop()
    assert any("fsync" in line for line in process.lines)
    busy = serve("--port", "0")
    port = busy.url().rsplit(":", 1)[1]
    (tmp_path / "other.yaml").write_text(
        "workers: [{name: iii-state, config: {adapter: {name: kv, "
        "config: {store_method: in_memory}}}}]\n"
    )
    in_use = serve("--port", port, "--config", "other.yaml")
    assert in_use.proc.wait(WAIT) == 1
    in_use.stop()
    assert any("cannot listen" in line for line in in_use.lines)


# ---- auth ---------------------------------------------------------------------------------


def test_bearer_token_required(make_server: Callable[..., Served], raw: Callable[..., Raw]) -> None:
    served = make_server(auth_token="s3cret")
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        with pytest.raises(InvalidStatus) as info:
            connect(served.url, open_timeout=WAIT, additional_headers=headers).close()
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            connect(served.url + "/otel", open_timeout=WAIT, additional_headers=headers).close()
    assert served.store.revision == 0 and not served.hub.connections
    client = raw(served.url, additional_headers={"Authorization": "Bearer s3cret"})
    assert client.call("state::set", {"scope": "a", "key": "k", "value": 1})["result"]


def test_sdk_sends_iii_token(
    make_server: Callable[..., Served],
    workers: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = make_server(config=Config(store_method="in_memory", server_auth_token="from-config"))
    monkeypatch.setenv("III_TOKEN", "from-config")
    worker = workers(served.url)
    assert worker.trigger({"function_id": "state::list_groups", "payload": {}}) == {"groups": []}


def test_token_from_the_environment(
    make_server: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTATE_AUTH_TOKEN", "from-env")
    served = make_server()
    with pytest.raises(InvalidStatus):
        connect(served.url, open_timeout=WAIT).close()
    assert call(served.url, "state::list_groups", {}, {"Authorization": "Bearer from-env"})[
        "result"
    ] == {"groups": []}
