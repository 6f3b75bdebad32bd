"""`twamp ping` from the command line (click's CliRunner): wrong arguments, reports, JSON.

A wrong argument must end in one sentence and a non-zero exit status, never a traceback. The
runs that work go to an in-process TWAMP Light reflector, and to `TwampServer` when it is
importable. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import twamp
from twamp import dataplane
from twamp.cli.main import cli
from twamp.cli.ping import ping
from twamp.constants import TestMode
from twamp.dataplane.sockets import open_test_socket
from twamp.net.server import ServerConfig, TwampServer
from twamp.wire.packets import TestFormat

PURE = dataplane.implementations()["python"]

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(twamp.__file__).parent / "schemas" / "ping.schema.json").read_text())
SECRET = b"open sesame"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(ping, list(args))


def assert_one_sentence_error(result: Result, fragment: str) -> None:
    assert result.exit_code != 0
    # Only click's own exit: no exception escaped the command.
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], errors[0]


def closed_tcp_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "keys.pfs"
    path.write_text(f"# test keys\nalice {SECRET.hex()}\nbob {b'other'.hex()}\n")
    return path


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["127.0.0.1:99999"], "port must be a number from 1 to 65535"),
        (["[::1"], "write an IPv6 address as [ADDR]:PORT"),
        (["host:"], "port must be a number"),
        (["127.0.0.1", "-A", "X"], "unknown mode letter 'X'"),
        (["127.0.0.1", "-A", ""], "mode list is empty"),
        (["127.0.0.1", "-c", "-1"], "count must be at least 1"),
        (["127.0.0.1", "-c", "many"], "'many' is not a valid integer"),
        (["127.0.0.1", "-i", "-0.5"], "interval must be 0 or more"),
        (["127.0.0.1", "-D", "64"], "DSCP must be 0-63"),
        (["127.0.0.1", "-s", "-1"], "padding must be"),
        (["127.0.0.1", "--timeout", "0"], "timeout must be positive"),
        (["127.0.0.1", "-u", "alice"], "-u alice needs its passphrase: give the key file"),
        (["127.0.0.1", "-k", "/nonexistent/keys.pfs"], "does not exist"),
        (["127.0.0.1", "--light", "-A", "E"], "--light is unauthenticated only"),
        (["127.0.0.1", "--no-such-option"], "No such option"),
    ],
)
def test_wrong_arguments(args: list[str], fragment: str) -> None:
    assert_one_sentence_error(invoke(*args), fragment)


def test_key_file_problems(keyfile: Path, tmp_path: Path) -> None:
    assert_one_sentence_error(invoke("127.0.0.1", "-k", str(keyfile)), "holds 2 keys")
    assert_one_sentence_error(
        invoke("127.0.0.1", "-k", str(keyfile), "-u", "carol"), "has no key 'carol'"
    )
    bad = tmp_path / "bad.pfs"
    bad.write_text("alice not-hex\n")
    assert_one_sentence_error(invoke("127.0.0.1", "-k", str(bad), "-u", "alice"), "line 1")


def test_connection_refused_is_one_sentence() -> None:
    result = invoke(f"127.0.0.1:{closed_tcp_port()}", "-c", "1", "--timeout", "3")
    assert_one_sentence_error(result, "connection refused")
    assert result.exit_code == 2


# -- working runs ---------------------------------------------------------------------------------


@contextlib.contextmanager
def light_reflector(host: str = "127.0.0.1", **kw: Any) -> Iterator[tuple[Any, int]]:
    sock = open_test_socket(host, 0)
    policy = PURE.LightPolicy(TestFormat(TestMode.OPEN), stateful=False, **kw)
    reflector = PURE.Reflector(sock, light=policy)
    try:
        with reflector:
            yield reflector, sock.getsockname()[1]
    finally:
        sock.close()


def test_human_report() -> None:
    with light_reflector(dscp=10) as (_, port):
        result = invoke("--light", f"127.0.0.1:{port}", "-c", "20", "-i", "0.005f")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mode light, 20 packets, schedule 0.005f (periodic), padding 27" in out
    assert "20 sent, 20 received, 0.0% loss" in out
    assert "loss (forward" not in out  # a stateless reflector: no loss split
    assert "round trip  min " in out and " ms" in out
    assert "hops        forward 0 (consistently), backward 0 (consistently)" in out
    assert "the time away minus the reflector's residence" in out  # what RTT includes, once
    assert out.count("residence") >= 2
    assert "reply TOS   DSCP 10 x20" in out
    assert "Traceback" not in out


def test_json_output_validates() -> None:
    with light_reflector("::1") as (_, port):
        result = invoke("--light", f"[::1]:{port}", "-c", "10", "-i", "0.005", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert document["summary"]["counts"]["received"] == 10
    assert document["mode"] == "light"
    assert document["session"]["reflector_port"] == port


def test_no_reply_exits_1_with_report() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        result = invoke(
            "--light", f"127.0.0.1:{silent.getsockname()[1]}", "-c", "2", "-i", "0.01", "-L", "0.2"
        )
    finally:
        silent.close()
    assert result.exit_code == 1
    assert "2 sent, 0 received, 100.0% loss" in result.output


def test_ctrl_c_prints_the_summary_so_far(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    with light_reflector() as (_, port):
        timer.start()
        try:
            result = invoke(
                "--light", f"127.0.0.1:{port}", "-c", "1000", "-i", "0.01", "--raw", str(raw)
            )
        finally:
            timer.cancel()
    assert result.exit_code == 0, result.output
    assert "(interrupted)" in result.output
    lines = [json.loads(line) for line in raw.read_text().splitlines()]
    sent = int(result.output.split("packets     ")[1].split(" sent")[0])
    assert 0 < sent < 1000
    assert len(lines) == sent
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


# -- against TwampServer, with a key file -------------------------------------------------------


@contextlib.contextmanager
def twamp_server() -> Iterator[int]:
    server = TwampServer(
        ServerConfig(listen=(("127.0.0.1", 0),), keys={b"alice": SECRET}, count=1024)
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.addresses[0][1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.stop())
        loop.close()


@pytest.mark.parametrize(("letters", "mode"), [("E", "encrypted"), ("A", "authenticated")])
def test_secure_ping_with_key_file(keyfile: Path, letters: str, mode: str) -> None:
    with twamp_server() as port:
        args = [f"127.0.0.1:{port}", "-A", letters, "-u", "alice", "-k", str(keyfile)]
        result = invoke(*args, "-c", "10", "-i", "0.005", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    assert document["mode"] == mode
    assert document["session"]["padding"] == 64
    assert document["summary"]["counts"]["lost"] == 0
    assert document["summary"]["counts"]["forward_lost"] == 0


def test_wrong_key_is_one_sentence(keyfile: Path) -> None:
    with twamp_server() as port:
        result = invoke(
            f"127.0.0.1:{port}", "-A", "E", "-u", "bob", "-k", str(keyfile), "--timeout", "5"
        )
    assert_one_sentence_error(result, "wrong key or passphrase?")


def test_twamp_group_lists_ping_and_reflect() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "ping" in result.output and "reflect" in result.output


def test_human_report_splits_loss_with_full_twamp() -> None:
    with twamp_server() as port:
        result = invoke(f"127.0.0.1:{port}", "-c", "10", "-i", "0.005")
    assert result.exit_code == 0, result.output
    assert "mode open, 10 packets" in result.output
    assert "10 sent, 10 received, 0.0% loss (forward 0, backward 0)" in result.output
