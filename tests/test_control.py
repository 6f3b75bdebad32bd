"""The TWAMP-Control state machines, in memory: no sockets, a fake clock.

`ConnectionPair` pumps bytes between a ClientConnection and a ServerConnection, whole or one
octet at a time. `RawClient` drives a ServerConnection with hand-made client messages (sealed
with the session keys in the secure modes) to test how the Server answers what our own client
would never send. Known-answer vectors are hex written out from the message layouts of
RFC 4656 §3 and RFC 5357 §3.
"""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from twamp.constants import AcceptCode, Command, Mode
from twamp.control import (
    ClientConnection,
    ConnectionClosed,
    ControlState,
    Event,
    GreetingReceived,
    LocalProtocolError,
    RequestRefused,
    ServerConnection,
    ServerStarted,
    SessionAccepted,
    SessionRequested,
    SessionsStarted,
    SessionState,
    SetupComplete,
    StartNAcked,
    StartNRequested,
    StartRequested,
    StopNAcked,
    StopNRequested,
    StopRequested,
    make_sid,
)
from twamp.crypto import ControlCipher, derive_key, encrypt_token
from twamp.wire.control import (
    RequestTWSession,
    SetUpResponse,
    encode_request_tw_session,
    encode_set_up_response,
)

NS = 1_000_000_000
KEY_ID = b"alice"
SECRET = b"correct horse"
KEYS = {KEY_ID: SECRET, b"bob": b"other secret"}
ALL_MODES = Mode(0x3FF)  # every mode and feature bit this library knows
SECURE = [Mode.AUTHENTICATED, Mode.ENCRYPTED, Mode.MIXED]
SECURITY = [Mode.UNAUTHENTICATED, *SECURE]
START_NS = 0  # Server-Start Start-Time: the Unix epoch, NTP 0x83AA7E80_00000000

REQUEST = RequestTWSession(
    sender_address=IPv4Address("127.0.0.1"),
    receiver_address=IPv4Address("127.0.0.1"),
    sender_port=5001,
    receiver_port=6001,
    padding_length=27,
    start_time=0,
    timeout=2 << 32,
)
SID_A = bytes.fromhex("7f00000183aa7e8000000000000000aa")
SID_B = bytes.fromhex("7f00000183aa7e8000000000000000bb")
SID_C = bytes.fromhex("7f00000183aa7e8000000000000000cc")
SID_X = bytes.fromhex("ff" * 16)  # never accepted


def drain(conn: ServerConnection | ClientConnection) -> list[Event]:
    events: list[Event] = []
    for _ in range(1000):
        event = conn.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("next_event() did not stop")


class Recorder:
    """A seeded random_bytes that remembers what it handed out."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.calls: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = self._rng.randbytes(n)
        self.calls.append(out)
        return out


class ConnectionPair:
    """A client and a server joined in memory (h11's tests/helpers.py)."""

    def __init__(
        self,
        *,
        offered: Mode = ALL_MODES,
        octetwise: bool = False,
        servwait_ns: int | None = 900 * NS,
        max_count: int = 32768,
        count: int = 1024,
    ) -> None:
        self.now = 0
        self.octetwise = octetwise
        self.server_random = Recorder(1)
        self.client_random = Recorder(2)
        self.server = ServerConnection(
            modes=offered,
            keys=KEYS,
            count=count,
            start_time_ns=START_NS,
            now_ns=0,
            servwait_ns=servwait_ns,
            random_bytes=self.server_random,
        )
        self.client = ClientConnection(
            now_ns=0, max_count=max_count, random_bytes=self.client_random
        )
        self.last_to_client = b""
        self.last_to_server = b""

    def _move(
        self, src: ServerConnection | ClientConnection, dst: ServerConnection | ClientConnection
    ) -> tuple[bytes, list[Event]]:
        data = src.data_to_send()
        events: list[Event] = []
        chunks = [data[i : i + 1] for i in range(len(data))] if self.octetwise else [data]
        for chunk in chunks:
            if chunk:
                dst.receive_data(chunk, self.now)
                events += drain(dst)
        return data, events

    def to_server(self) -> list[Event]:
        self.last_to_server, events = self._move(self.client, self.server)
        return events

    def to_client(self) -> list[Event]:
        self.last_to_client, events = self._move(self.server, self.client)
        return events

    def setup(
        self, mode: Mode, key_id: bytes = KEY_ID, passphrase: bytes = SECRET
    ) -> tuple[list[Event], list[Event]]:
        greeting = self.to_client()
        assert len(greeting) == 1 and isinstance(greeting[0], GreetingReceived)
        self.client.setup(mode, key_id, passphrase)
        server_events = self.to_server()
        return server_events, self.to_client()

    def ready(self, mode: Mode) -> None:
        server_events, client_events = self.setup(mode)
        assert [type(e) for e in server_events] == [SetupComplete]
        assert [type(e) for e in client_events] == [ServerStarted]

    def open_session(self, sid: bytes, req: RequestTWSession = REQUEST, port: int = 7000) -> None:
        self.client.request_session(req)
        (requested,) = self.to_server()
        assert isinstance(requested, SessionRequested)
        self.server.accept_session(port, sid)
        (accepted,) = self.to_client()
        assert isinstance(accepted, SessionAccepted)
        assert accepted.accept_session.accept is AcceptCode.OK


class RawClient:
    """Hand-made client messages to a ServerConnection, sealed in the secure modes."""

    AES = bytes(range(16))
    HMAC = bytes(range(32, 64))
    IV = bytes(range(100, 116))

    def __init__(self, mode: Mode, *, offered: Mode = ALL_MODES, servwait_ns: int = 900 * NS):
        self.server_random = Recorder(7)
        self.server = ServerConnection(
            modes=offered,
            keys=KEYS,
            count=1024,
            start_time_ns=START_NS,
            now_ns=0,
            servwait_ns=servwait_ns,
            random_bytes=self.server_random,
        )
        greeting = self.server.data_to_send()
        challenge, salt = greeting[16:32], greeting[32:48]
        self.tx: ControlCipher | None = None
        self.rx: ControlCipher | None = None
        if mode & (Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED):
            token = encrypt_token(derive_key(SECRET, salt, 1024), challenge, self.AES, self.HMAC)
            response = SetUpResponse(mode, KEY_ID, token, self.IV)
        else:
            response = SetUpResponse(mode)
        self.server.receive_data(encode_set_up_response(response), 0)
        self.setup_events = drain(self.server)
        start = self.server.data_to_send()
        assert len(start) == 48
        if response.key_id and start[15] == 0:
            self.tx = ControlCipher(self.AES, self.IV, self.HMAC, encrypt=True)
            self.rx = ControlCipher(self.AES, start[16:32], self.HMAC, encrypt=False)
            self.rx.mac_update(self.rx.crypt(start[32:]))

    def send(self, message: bytes, now_ns: int = 0) -> list[Event]:
        """One whole client message: HMAC and encryption as a real client would."""
        self.server.receive_data(self.tx.seal(message) if self.tx else message, now_ns)
        return drain(self.server)

    def send_unsealed(self, blocks: bytes, now_ns: int = 0) -> list[Event]:
        """Octets encrypted on the client's stream but not sealed (a partial message)."""
        self.server.receive_data(self.tx.crypt(blocks) if self.tx else blocks, now_ns)
        return drain(self.server)

    def replies(self, *lengths: int) -> list[bytes]:
        """The Server's next messages in plaintext, each HMAC-checked in the secure modes."""
        data = self.server.data_to_send()
        assert len(data) == sum(lengths), f"{len(data)} octets, expected {sum(lengths)}"
        out = []
        for length in lengths:
            chunk, data = data[:length], data[length:]
            if self.rx is not None:
                chunk = self.rx.crypt(chunk)
                self.rx.verify(chunk)
            out.append(chunk)
        return out

    def open_session(self, sid: bytes) -> None:
        (requested,) = self.send(encode_request_tw_session(REQUEST))
        assert isinstance(requested, SessionRequested)
        self.server.accept_session(7000, sid)
        self.replies(48)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# Known answers, from the layouts of RFC 5357 §3 (hex written out by hand).
ACCEPT_SESSION_REFUSED_3 = h("03 00 0000" + "00" * 16 + "00" * 12 + "00" * 16)
START_ACK_1 = h("01" + "00" * 15 + "00" * 16)
SERVER_START_REFUSED = {
    AcceptCode.FAILURE: h("00" * 15 + "01" + "00" * 16 + "00" * 8 + "00" * 8),
    AcceptCode.NOT_SUPPORTED: h("00" * 15 + "03" + "00" * 16 + "00" * 8 + "00" * 8),
}


def summary(events: list[Event]) -> list[tuple[type, AcceptCode, tuple[bytes, ...]]]:
    out: list[tuple[type, AcceptCode, tuple[bytes, ...]]] = []
    for event in events:
        assert isinstance(event, StartNAcked | StopNAcked)
        out.append((type(event), event.ack.accept, event.ack.sids))
    return out


def last_closed(events: list[Event]) -> ConnectionClosed:
    assert events, "no events"
    closed = events[-1]
    assert isinstance(closed, ConnectionClosed), events
    return closed


# -------------------------------------------------------------------------------------------
# Known-answer bytes


def test_greeting_and_mode1_setup_bytes() -> None:
    pair = ConnectionPair(offered=Mode(0x1F))
    challenge, salt = pair.server_random.calls
    greeting = pair.server.data_to_send()
    assert greeting == h("00" * 12 + "0000001f") + challenge + salt + h("00000400" + "00" * 12)
    pair.client.receive_data(greeting, 0)
    assert drain(pair.client) == [GreetingReceived(Mode(0x1F), 1024)]
    pair.client.setup(Mode.UNAUTHENTICATED)
    assert pair.client.data_to_send() == h("00000001" + "00" * 160)
    assert pair.client_random.calls == []  # mode 1 chooses nothing at random
    pair.server.receive_data(h("00000001" + "00" * 160), 0)
    assert drain(pair.server) == [SetupComplete(Mode.UNAUTHENTICATED, b"")]
    # Server-Start: Accept 0, Server-IV zero in mode 1, Start-Time = Unix epoch in NTP format.
    assert pair.server.data_to_send() == h(
        "00" * 15 + "00" + "00" * 16 + "83aa7e80 00000000" + "00" * 8
    )


def test_mode1_command_bytes() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED)
    pair.client.request_session(REQUEST)
    assert (
        pair.client.data_to_send()
        == h(
            "05 04 00 00 00000000 00000000 1389 1771"  # ports 5001, 6001
            "7f000001" + "00" * 12 + "7f000001" + "00" * 12 + "00" * 16 + "0000001b"  # padding 27
            "0000000000000000 0000000200000000 00000000" + "00" * 8 + "00" * 16
        )
    )
    pair.client.receive_data(h("00 00 1b58") + SID_A + h("00" * 12 + "00" * 16), 0)  # port 7000
    (accepted,) = drain(pair.client)
    assert isinstance(accepted, SessionAccepted)
    assert (accepted.accept_session.port, accepted.accept_session.sid) == (7000, SID_A)
    pair.client.start_sessions()
    assert pair.client.data_to_send() == h("02" + "00" * 31)
    pair.client.receive_data(h("00" * 32), 0)
    assert drain(pair.client) == [SessionsStarted(AcceptCode.OK)]
    pair.client.stop_sessions()
    # Number of Sessions = 1, computed by the state machine.
    assert pair.client.data_to_send() == h("03 00 0000 00000001" + "00" * 8 + "00" * 16)


def test_make_sid_layout() -> None:
    # 4 octets IPv4, 8 octets NTP timestamp (epoch + 1.5 s), 4 random octets (RFC 4656 §3.5).
    sid = make_sid(bytes([192, 0, 2, 1]), 1_500_000_000, h("deadbeef"))
    assert sid == h("c0000201 83aa7e81 80000000 deadbeef")
    with pytest.raises(ValueError):
        make_sid(b"\x7f\x00\x00", 0, h("deadbeef"))
    with pytest.raises(ValueError):
        make_sid(b"\x7f\x00\x00\x01", 0, b"")


# -------------------------------------------------------------------------------------------
# Full flows


@pytest.mark.parametrize("octetwise", [False, True], ids=["whole", "octetwise"])
@pytest.mark.parametrize("mode", SECURITY, ids=lambda m: f"mode{int(m)}")
def test_full_flow(mode: Mode, octetwise: bool) -> None:
    pair = ConnectionPair(octetwise=octetwise)
    server_events, client_events = pair.setup(mode)
    assert server_events == [SetupComplete(mode, KEY_ID if mode in SECURE else b"")]
    assert client_events == [ServerStarted(AcceptCode.OK, START_NS)]
    assert pair.server.mode == pair.client.mode == mode

    sids = [SID_A, SID_B, SID_C]
    for i, sid in enumerate(sids):
        req = replace(REQUEST, sender_port=5001 + i, receiver_port=6001 + i)
        pair.client.request_session(req)
        (requested,) = pair.to_server()
        assert isinstance(requested, SessionRequested)
        # Equal but for the HMAC field, which carries the verified HMAC in modes 2, 4, 8.
        assert replace(requested.request, hmac=bytes(16)) == req
        wire_request = pair.last_to_server
        # Secure modes encrypt every command; mode 1 sends it as encoded, HMAC zero.
        assert (wire_request == encode_request_tw_session(req)) is (mode not in SECURE)
        pair.server.accept_session(7000 + i, sid)
        (accepted,) = pair.to_client()
        assert isinstance(accepted, SessionAccepted)
        assert accepted.accept_session.port == 7000 + i
        assert accepted.accept_session.sid == sid
    assert dict(pair.client.sessions) == dict.fromkeys(sids, SessionState.ACCEPTED)

    pair.client.start_sessions()
    assert pair.to_server() == [StartRequested(tuple(sids))]
    pair.server.start_ack(AcceptCode.OK)
    assert pair.to_client() == [SessionsStarted(AcceptCode.OK)]
    assert pair.server.running_sessions == pair.client.running_sessions == 3

    pair.client.stop_sessions()
    assert pair.to_server() == [StopRequested(AcceptCode.OK, tuple(sids))]
    assert pair.server.data_to_send() == b""  # Stop-Sessions has no reply
    assert pair.server.running_sessions == pair.client.running_sessions == 0
    assert dict(pair.server.sessions) == dict.fromkeys(sids, SessionState.STOPPED)

    # The connection goes on after Stop-Sessions: another round.
    pair.open_session(h("01" * 16))
    pair.client.start_sessions()
    assert pair.to_server() == [StartRequested((h("01" * 16),))]
    pair.server.start_ack(AcceptCode.OK)
    pair.to_client()
    pair.client.stop_sessions(AcceptCode.FAILURE)
    assert pair.to_server() == [StopRequested(AcceptCode.FAILURE, (h("01" * 16),))]
    assert pair.server.state is pair.client.state is ControlState.READY

    if mode in SECURE:
        for sid in sids:
            assert pair.server.test_keys(sid) == pair.client.test_keys(sid)
        assert pair.client.test_keys(SID_A) != pair.client.test_keys(SID_B)
        # Independently: test AES key = AES-ECB(key = SID, session AES key) (RFC 4656 §4.1.2).
        aes_key = pair.client_random.calls[0]
        enc = Cipher(algorithms.AES(SID_A), modes.ECB()).encryptor()
        assert pair.server.test_keys(SID_A).aes_key == enc.update(aes_key) + enc.finalize()
    else:
        with pytest.raises(LocalProtocolError):
            pair.server.test_keys(SID_A)

    pair.client.receive_data(b"", pair.now)
    assert drain(pair.client) == [ConnectionClosed("peer closed the connection", None)]
    assert pair.client.closed


@pytest.mark.parametrize("octetwise", [False, True], ids=["whole", "octetwise"])
@pytest.mark.parametrize("mode", SECURITY, ids=lambda m: f"mode{int(m)}")
def test_individual_session_control_flow(mode: Mode, octetwise: bool) -> None:
    pair = ConnectionPair(octetwise=octetwise)
    isc = mode | Mode.INDIVIDUAL_SESSION_CONTROL
    pair.ready(isc)
    for sid in (SID_A, SID_B, SID_C):
        pair.open_session(sid)
    with pytest.raises(LocalProtocolError):
        pair.client.start_sessions()  # commands 2 and 3 are forbidden with RFC 5938
    with pytest.raises(LocalProtocolError):
        pair.client.stop_sessions()

    # Two Start-N-Sessions without waiting; an unknown SID is refused by the server itself.
    pair.client.start_n_sessions([SID_A, SID_B, SID_X])
    pair.client.start_n_sessions([SID_C])
    with pytest.raises(LocalProtocolError):
        pair.client.request_session(REQUEST)  # its reply has no command number: wait
    events = pair.to_server()
    refused = events[0]
    assert isinstance(refused, RequestRefused)
    assert (refused.command, refused.accept) == (Command.START_N_SESSIONS, AcceptCode.FAILURE)
    assert events[1:] == [StartNRequested((SID_A, SID_B))]
    # Answer with two acks, one per Accept value (RFC 5938 §2.1).
    pair.server.start_n_ack(AcceptCode.OK, [SID_A])
    assert pair.server.state is ControlState.AWAIT_START_N_ANSWER
    pair.server.start_n_ack(AcceptCode.TEMPORARY_RESOURCE_LIMIT, [SID_B])
    assert drain(pair.server) == [StartNRequested((SID_C,))]  # the second command, now read
    pair.server.start_n_ack(AcceptCode.OK, [SID_C])
    acks = pair.to_client()
    assert summary(acks) == [
        (StartNAcked, AcceptCode.FAILURE, (SID_X,)),
        (StartNAcked, AcceptCode.OK, (SID_A,)),
        (StartNAcked, AcceptCode.TEMPORARY_RESOURCE_LIMIT, (SID_B,)),
        (StartNAcked, AcceptCode.OK, (SID_C,)),
    ]
    running = {SID_A, SID_C}
    assert {s for s, st in pair.server.sessions.items() if st is SessionState.STARTED} == running
    assert {s for s, st in pair.client.sessions.items() if st is SessionState.STARTED} == running
    assert pair.client.get_timer() is None  # no ack outstanding

    # Stop-N for a running, a not-started and an unknown SID.
    pair.client.stop_n_sessions([SID_A, SID_B, SID_X])
    events = pair.to_server()
    assert isinstance(events[0], RequestRefused)
    assert events[1:] == [StopNRequested((SID_A,))]
    pair.server.stop_n_ack(AcceptCode.OK, [SID_A])
    acks = pair.to_client()
    assert summary(acks) == [
        (StopNAcked, AcceptCode.FAILURE, (SID_B, SID_X)),
        (StopNAcked, AcceptCode.OK, (SID_A,)),
    ]
    assert pair.server.sessions[SID_A] is pair.client.sessions[SID_A] is SessionState.STOPPED
    assert pair.server.running_sessions == pair.client.running_sessions == 1
    # A stopped session does not start again.
    pair.client.start_n_sessions([SID_A])
    assert isinstance(pair.to_server()[0], RequestRefused)
    (ack,) = pair.to_client()
    assert isinstance(ack, StartNAcked) and ack.ack.accept is AcceptCode.FAILURE
    # Requests are fine again once no ack is outstanding.
    pair.open_session(h("02" * 16))


def test_start_n_and_stop_n_need_isc_mode() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED)
    with pytest.raises(LocalProtocolError):
        pair.client.start_n_sessions([SID_A])
    with pytest.raises(LocalProtocolError):
        pair.client.stop_n_sessions([SID_A])


def test_client_api_misuse() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.client.request_session(REQUEST)  # before the greeting
    with pytest.raises(LocalProtocolError):
        pair.client.setup(Mode.UNAUTHENTICATED)  # greeting not yet received
    pair.ready(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    with pytest.raises(ValueError):
        pair.client.start_n_sessions([])
    with pytest.raises(ValueError):
        pair.client.start_n_sessions([SID_A, SID_A])
    with pytest.raises(ValueError):
        pair.client.start_n_sessions([b"short"])
    pair.client.request_session(REQUEST)
    with pytest.raises(LocalProtocolError):
        pair.client.request_session(REQUEST)  # one Accept-Session at a time
    with pytest.raises(LocalProtocolError):
        pair.client.start_n_sessions([SID_A])


def test_server_api_misuse() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED | Mode.REFLECT_OCTETS)
    with pytest.raises(LocalProtocolError):
        raw.server.accept_session(7000, SID_A)  # nothing requested
    with pytest.raises(LocalProtocolError):
        raw.server.start_ack(AcceptCode.OK)
    raw.send(encode_request_tw_session(REQUEST))
    assert raw.server.next_event() is None  # waiting for the application
    with pytest.raises(ValueError):
        raw.server.accept_session(0, SID_A)
    with pytest.raises(ValueError):
        raw.server.accept_session(7000, bytes(16))
    with pytest.raises(ValueError):
        raw.server.reject_session(AcceptCode.OK)
    raw.server.accept_session(7000, SID_A)
    raw.replies(48)
    raw.send(encode_request_tw_session(REQUEST))
    with pytest.raises(ValueError):
        raw.server.accept_session(7001, SID_A)  # SID already used


def test_server_rejects_session() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.ENCRYPTED)
    pair.client.request_session(REQUEST)
    pair.to_server()
    pair.server.reject_session(AcceptCode.TEMPORARY_RESOURCE_LIMIT)
    (accepted,) = pair.to_client()
    assert isinstance(accepted, SessionAccepted)
    assert accepted.accept_session.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT
    assert (accepted.accept_session.port, accepted.accept_session.sid) == (0, bytes(16))
    assert dict(pair.client.sessions) == {}
    pair.open_session(SID_A)  # the connection goes on


def test_start_ack_refusal_starts_nothing() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.AUTHENTICATED)
    pair.open_session(SID_A)
    pair.client.start_sessions()
    pair.to_server()
    pair.server.start_ack(AcceptCode.PERMANENT_RESOURCE_LIMIT)
    assert pair.to_client() == [SessionsStarted(AcceptCode.PERMANENT_RESOURCE_LIMIT)]
    assert pair.server.running_sessions == pair.client.running_sessions == 0
    assert pair.server.sessions[SID_A] is SessionState.ACCEPTED


def test_reflect_octets_negotiated() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED | Mode.REFLECT_OCTETS)
    req = replace(REQUEST, padding_length=40, octets_to_reflect=0xBEEF, padding_to_reflect=12)
    pair.client.request_session(req)
    (requested,) = pair.to_server()
    assert isinstance(requested, SessionRequested) and requested.request.octets_to_reflect == 0xBEEF
    pair.server.accept_session(7000, SID_A, server_octets=0x1234)
    (accepted,) = pair.to_client()
    assert isinstance(accepted, SessionAccepted)
    # RFC 6038 §4.3: the Server copies Octets to be reflected back.
    assert pair.last_to_client[20:24] == h("beef 1234")
    assert accepted.accept_session.reflected_octets == 0xBEEF


def test_rfc6038_fields_ignored_without_reflect_octets() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED)
    req = replace(REQUEST, padding_length=0, octets_to_reflect=0xBEEF, padding_to_reflect=12)
    (requested,) = raw.send(encode_request_tw_session(req))
    assert isinstance(requested, SessionRequested)
    assert (requested.request.octets_to_reflect, requested.request.padding_to_reflect) == (0, 0)
    with pytest.raises(ValueError):
        raw.server.accept_session(7000, SID_A, server_octets=1)
    raw.server.accept_session(7000, SID_A)
    (reply,) = raw.replies(48)
    assert reply[20:24] == bytes(4)


def test_pipelined_commands_wait_for_the_application() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED)
    events = raw.send(encode_request_tw_session(REQUEST) + h("02" + "00" * 31))
    assert [type(e) for e in events] == [SessionRequested]
    assert raw.server.get_timer() is None  # the application owes an answer, not the client
    raw.server.accept_session(7000, SID_A)
    assert drain(raw.server) == [StartRequested((SID_A,))]
    raw.server.start_ack(AcceptCode.OK)
    raw.replies(48, 32)


# -------------------------------------------------------------------------------------------
# Server validation of Set-Up-Response


@pytest.mark.parametrize(
    ("mode", "offered", "accept"),
    [
        (Mode(3), ALL_MODES, AcceptCode.NOT_SUPPORTED),  # two security bits
        (Mode(16), ALL_MODES, AcceptCode.NOT_SUPPORTED),  # no security bit
        (Mode.ENCRYPTED, Mode(3), AcceptCode.NOT_SUPPORTED),  # security bit not offered
        (Mode(1 | 16), Mode(1), AcceptCode.NOT_SUPPORTED),  # feature bit not offered
    ],
)
def test_setup_mode_not_supported(mode: Mode, offered: Mode, accept: AcceptCode) -> None:
    raw = RawClient(mode, offered=offered)
    closed = last_closed(raw.setup_events)
    assert closed.accept is accept
    assert raw.server.closed
    # RawClient already took the Server-Start; check it through a fresh server.
    server = ServerConnection(modes=offered, keys=KEYS, start_time_ns=0, now_ns=0)
    server.data_to_send()
    server.receive_data(encode_set_up_response(SetUpResponse(mode)), 0)
    drain(server)
    assert server.data_to_send() == SERVER_START_REFUSED[accept]


def test_setup_unknown_mode_bits_are_ignored() -> None:
    raw = RawClient(Mode(1 | (1 << 20)))
    assert raw.setup_events == [SetupComplete(Mode.UNAUTHENTICATED, b"")]
    assert raw.server.mode == Mode.UNAUTHENTICATED


def test_setup_mode0_closes_quietly() -> None:
    pair = ConnectionPair()
    pair.to_client()
    pair.client.setup(Mode(0))
    assert pair.client.closed
    assert drain(pair.client) == [ConnectionClosed("declined the server's modes (Mode 0)", None)]
    events = pair.to_server()
    assert pair.last_to_server == bytes(164)
    assert events == [ConnectionClosed("client declined (Mode 0)", None)]
    assert pair.server.data_to_send() == b""  # no Server-Start


@pytest.mark.parametrize("mode", SECURE, ids=lambda m: f"mode{int(m)}")
@pytest.mark.parametrize(
    ("key_id", "passphrase", "what"),
    [(b"mallory", SECRET, "unknown KeyID"), (KEY_ID, b"wrong", "Challenge")],
)
def test_setup_bad_credentials(mode: Mode, key_id: bytes, passphrase: bytes, what: str) -> None:
    pair = ConnectionPair()
    server_events, client_events = pair.setup(mode, key_id, passphrase)
    assert what in last_closed(server_events).reason
    assert last_closed(server_events).accept is AcceptCode.FAILURE
    assert pair.last_to_client == SERVER_START_REFUSED[AcceptCode.FAILURE]
    assert last_closed(client_events).accept is AcceptCode.FAILURE
    assert pair.server.closed and pair.client.closed


def test_client_setup_argument_checks() -> None:
    pair = ConnectionPair(offered=Mode(1 | 2))
    pair.to_client()
    for bad in (Mode(3), Mode(4), Mode(1 | 16), Mode(16)):
        with pytest.raises(ValueError):
            pair.client.setup(bad, KEY_ID, SECRET)
    with pytest.raises(ValueError):
        pair.client.setup(Mode.AUTHENTICATED, b"", SECRET)
    with pytest.raises(ValueError):
        pair.client.setup(Mode.AUTHENTICATED, KEY_ID, b"")
    with pytest.raises(ValueError):
        pair.client.setup(Mode.AUTHENTICATED, b"x" * 81, SECRET)
    assert pair.client.state is ControlState.GREETING_RECEIVED
    assert pair.client.data_to_send() == b""


# -------------------------------------------------------------------------------------------
# Server validation of commands


def _bad_requests() -> list[tuple[str, RequestTWSession]]:
    return [
        ("conf_sender", replace(REQUEST, conf_sender=1)),
        ("conf_receiver", replace(REQUEST, conf_receiver=1)),
        ("schedule_slots", replace(REQUEST, schedule_slots=1)),
        ("num_packets", replace(REQUEST, num_packets=3)),
        ("sid", replace(REQUEST, sid=SID_A)),
        ("phb_id", replace(REQUEST, type_p=0x40000000 | (0x1234 << 14))),
        ("type_p_reserved", replace(REQUEST, type_p=0x80000000)),
        ("type_p_low_bits", replace(REQUEST, type_p=(46 << 24) | 1)),
        ("padding_equal", replace(REQUEST, padding_length=12, padding_to_reflect=12)),
        ("padding_less", replace(REQUEST, padding_length=11, padding_to_reflect=12)),
    ]


@pytest.mark.parametrize("mode", [Mode.UNAUTHENTICATED, Mode.ENCRYPTED], ids=["mode1", "mode4"])
@pytest.mark.parametrize(
    ("why", "req"), _bad_requests(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_request_not_supported(mode: Mode, why: str, req: RequestTWSession) -> None:
    pair = ConnectionPair()
    pair.ready(mode | Mode.REFLECT_OCTETS)
    pair.client.request_session(req)
    (refused,) = pair.to_server()
    assert isinstance(refused, RequestRefused)
    assert (refused.command, refused.accept) == (
        Command.REQUEST_TW_SESSION,
        AcceptCode.NOT_SUPPORTED,
    )
    (accepted,) = pair.to_client()
    assert isinstance(accepted, SessionAccepted)
    assert accepted.accept_session.accept is AcceptCode.NOT_SUPPORTED
    assert accepted.accept_session.port == 0
    if mode is Mode.UNAUTHENTICATED:
        assert pair.last_to_client == ACCEPT_SESSION_REFUSED_3
    # RFC 5357 §3.5: a refusal does not end the connection (and the HMAC chain stays in step).
    assert not pair.server.closed
    pair.open_session(SID_A)


def test_request_accepted_edge_cases() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.AUTHENTICATED | Mode.REFLECT_OCTETS)
    # A DSCP Type-P (EF) and padding just above the padding to reflect are fine; so is IPv6.
    req = replace(REQUEST, type_p=46 << 24, padding_length=13, padding_to_reflect=12)
    pair.open_session(SID_A, req)
    v6 = replace(REQUEST, sender_address=IPv6Address("::1"), receiver_address=IPv6Address("::1"))
    pair.open_session(SID_B, v6)


@pytest.mark.parametrize("mode", [Mode.UNAUTHENTICATED, Mode.AUTHENTICATED], ids=["mode1", "mode2"])
@pytest.mark.parametrize("command", [0, 1, 4, 6, 8, 10, 11, 12, 200, 255])
def test_unknown_command_gets_accept_3_then_close(mode: Mode, command: int) -> None:
    raw = RawClient(mode)
    events = raw.send_unsealed(bytes([command]) + bytes(15))
    closed = last_closed(events)
    assert closed.accept is AcceptCode.NOT_SUPPORTED
    (reply,) = raw.replies(48)
    assert reply[:32] == ACCEPT_SESSION_REFUSED_3[:32]
    if mode is Mode.UNAUTHENTICATED:
        assert reply == ACCEPT_SESSION_REFUSED_3
    assert raw.server.closed
    raw.server.receive_data(b"more", 1)  # ignored after close
    assert raw.server.next_event() is None


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL, h("02" + "00" * 31)),
        (
            Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL,
            h("03 00 0000 00000000" + "00" * 24),
        ),
        (Mode.AUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL, h("02" + "00" * 31)),
        (Mode.UNAUTHENTICATED, h("07" + "00" * 11 + "00000001") + SID_A + bytes(16)),
        (Mode.ENCRYPTED, h("09" + "00" * 11 + "00000001") + SID_A + bytes(16)),
    ],
)
def test_command_forbidden_in_mode(mode: Mode, message: bytes) -> None:
    raw = RawClient(mode)
    closed = last_closed(raw.send(message))
    assert closed.accept is AcceptCode.NOT_SUPPORTED
    (reply,) = raw.replies(48)
    assert reply[:32] == ACCEPT_SESSION_REFUSED_3[:32]


@pytest.mark.parametrize("mode", [Mode.UNAUTHENTICATED, Mode.MIXED], ids=["mode1", "mode8"])
@pytest.mark.parametrize("claimed", [0, 2, 5])
def test_stop_sessions_count_mismatch_closes(mode: Mode, claimed: int) -> None:
    raw = RawClient(mode)
    raw.open_session(SID_A)
    assert raw.send(h("02" + "00" * 31)) == [StartRequested((SID_A,))]
    raw.server.start_ack(AcceptCode.OK)
    raw.replies(32)
    stop = h(f"03 00 0000 {claimed:08x}" + "00" * 24)
    closed = last_closed(raw.send(stop))
    assert closed.accept is AcceptCode.FAILURE
    assert "Number of Sessions" in closed.reason
    assert raw.server.data_to_send() == b""  # Stop-Sessions is never answered


def test_stop_sessions_count_match() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED)
    raw.open_session(SID_A)
    raw.open_session(SID_B)
    raw.send(h("02" + "00" * 31))
    raw.server.start_ack(AcceptCode.OK)
    raw.replies(32)
    assert raw.send(h("03 00 0000 00000002" + "00" * 24)) == [
        StopRequested(AcceptCode.OK, (SID_A, SID_B))
    ]
    assert not raw.server.closed


@pytest.mark.parametrize("mode", [Mode.UNAUTHENTICATED, Mode.ENCRYPTED], ids=["mode1", "mode4"])
def test_start_sessions_with_nothing_to_start(mode: Mode) -> None:
    pair = ConnectionPair()
    pair.ready(mode)
    pair.client.start_sessions()
    (refused,) = pair.to_server()
    assert isinstance(refused, RequestRefused) and refused.accept is AcceptCode.FAILURE
    assert pair.to_client() == [SessionsStarted(AcceptCode.FAILURE)]
    if mode is Mode.UNAUTHENTICATED:
        assert pair.last_to_client == START_ACK_1
    pair.open_session(SID_A)  # the connection goes on


def test_n_command_with_zero_sessions_closes() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    closed = last_closed(raw.send_unsealed(h("07" + "00" * 11 + "00000000")))
    assert closed.accept is AcceptCode.FAILURE
    assert raw.server.data_to_send() == b""


def test_request_with_bad_ipvn_is_refused_then_closed() -> None:
    raw = RawClient(Mode.AUTHENTICATED)
    message = bytearray(encode_request_tw_session(REQUEST))
    message[1] = 0x05
    closed = last_closed(raw.send(bytes(message)))
    assert closed.accept is AcceptCode.FAILURE
    (reply,) = raw.replies(48)
    assert reply[0] == AcceptCode.FAILURE and reply[1:32] == bytes(31)


@pytest.mark.parametrize("mode", SECURE, ids=lambda m: f"mode{int(m)}")
def test_server_closes_on_bad_hmac(mode: Mode) -> None:
    raw = RawClient(mode)
    assert raw.tx is not None
    sealed = bytearray(raw.tx.seal(encode_request_tw_session(REQUEST)))
    sealed[-1] ^= 0x80  # in the HMAC block
    raw.server.receive_data(bytes(sealed), 0)
    closed = last_closed(drain(raw.server))
    assert closed.accept is AcceptCode.FAILURE and "HMAC" in closed.reason
    assert raw.server.data_to_send() == b""  # the forged request was not acted on


@pytest.mark.parametrize("mode", SECURE, ids=lambda m: f"mode{int(m)}")
def test_client_closes_on_bad_hmac(mode: Mode) -> None:
    pair = ConnectionPair()
    pair.ready(mode)
    pair.client.request_session(REQUEST)
    pair.to_server()
    pair.server.accept_session(7000, SID_A)
    wire = bytearray(pair.server.data_to_send())
    wire[5] ^= 0x01  # a SID octet
    pair.client.receive_data(bytes(wire), 0)
    events = drain(pair.client)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert last_closed(events).accept is AcceptCode.FAILURE
    assert dict(pair.client.sessions) == {}


# -------------------------------------------------------------------------------------------
# Client checks


@pytest.mark.parametrize(
    ("modes", "count", "max_count", "why"),
    [
        (Mode(1), 512, 32768, "Count"),
        (Mode(15), 65536, 32768, "Count"),
        (Mode(15), 2048, 1024, "Count"),
        (Mode(0), 1024, 32768, "Modes 0"),
        (Mode(16), 1024, 32768, "no security mode"),
        (Mode(2), 512, 32768, "count"),  # the codec refuses it (a secure mode needs 1024)
    ],
)
def test_client_refuses_greeting(modes: Mode, count: int, max_count: int, why: str) -> None:
    greeting = h("00" * 12 + f"{int(modes):08x}") + bytes(32) + h(f"{count:08x}" + "00" * 12)
    client = ClientConnection(now_ns=0, max_count=max_count)
    client.receive_data(greeting, 0)
    closed = last_closed(drain(client))
    assert why in closed.reason
    assert client.closed and client.data_to_send() == b""


def test_client_accepts_count_limits() -> None:
    for count, max_count in ((1024, 32768), (32768, 32768)):
        greeting = h("00" * 12 + "00000001") + bytes(32) + h(f"{count:08x}" + "00" * 12)
        client = ClientConnection(now_ns=0, max_count=max_count)
        client.receive_data(greeting, 0)
        assert drain(client) == [GreetingReceived(Mode(1), count)]


def test_server_with_modes_0_says_go_away() -> None:
    server = ServerConnection(modes=Mode(0), keys={}, start_time_ns=0, now_ns=0)
    assert server.closed
    greeting = server.data_to_send()
    assert greeting[12:16] == bytes(4) and len(greeting) == 64
    assert drain(server) == [ConnectionClosed("no modes offered (Modes 0)", None)]
    client = ClientConnection(now_ns=0)
    client.receive_data(greeting, 0)
    assert "Modes 0" in last_closed(drain(client)).reason


def test_server_count_must_be_power_of_two() -> None:
    for count in (512, 1000, 3000):
        with pytest.raises(ValueError):
            ServerConnection(modes=Mode(1), keys={}, count=count, start_time_ns=0, now_ns=0)


def test_client_closes_on_unexpected_server_data() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED)
    pair.client.receive_data(bytes(32), 0)
    closed = last_closed(drain(pair.client))
    assert "no message was due" in closed.reason


def test_client_closes_on_unsolicited_n_ack_sids() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.open_session(SID_A)
    pair.client.start_n_sessions([SID_A])
    pair.client.data_to_send()
    pair.client.receive_data(h("08 00 0000" + "00" * 8 + "00000001") + SID_B + bytes(16), 0)
    assert "not asked for" in last_closed(drain(pair.client)).reason


def test_client_closes_on_wrong_ack_command() -> None:
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.open_session(SID_A)
    pair.client.start_n_sessions([SID_A])
    pair.client.receive_data(h("0a 00 0000" + "00" * 8 + "00000001") + SID_A + bytes(16), 0)
    assert "expected 8" in last_closed(drain(pair.client)).reason


def test_peer_close_mid_message() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED)
    raw.server.receive_data(encode_request_tw_session(REQUEST)[:50], 0)
    assert drain(raw.server) == []
    raw.server.receive_data(b"", 1)
    closed = last_closed(drain(raw.server))
    assert "mid-message" in closed.reason and closed.accept is None


# -------------------------------------------------------------------------------------------
# Nothing remote raises


def _random_streams(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    streams = []
    for _ in range(count):
        n = rng.choice([1, 15, 16, 31, 32, 47, 48, 111, 112, 200, 600])
        data = bytearray(rng.randbytes(n))
        if rng.random() < 0.6:
            data[0] = rng.choice([2, 3, 5, 7, 9])  # a plausible command number
        streams.append(bytes(data))
    return streams


@pytest.mark.parametrize("mode", SECURITY, ids=lambda m: f"mode{int(m)}")
def test_garbage_after_setup_never_raises(mode: Mode) -> None:
    for i, stream in enumerate(_random_streams(int(mode), 150)):
        raw = RawClient(mode | Mode.INDIVIDUAL_SESSION_CONTROL if i % 2 else mode)
        raw.server.receive_data(stream, 0)
        for event in drain(raw.server):
            if isinstance(event, SessionRequested):
                raw.server.reject_session(AcceptCode.FAILURE)
            elif isinstance(event, StartNRequested | StopNRequested):
                pass  # left unanswered: next_event() must simply return None
        raw.server.receive_data(b"", 1)
        drain(raw.server)


def test_garbage_setup_and_greeting_never_raise() -> None:
    rng = random.Random(99)
    for _ in range(200):
        server = ServerConnection(modes=ALL_MODES, keys=KEYS, count=1024, start_time_ns=0, now_ns=0)
        server.receive_data(rng.randbytes(rng.choice([10, 164, 200, 400])), 0)
        events = drain(server)
        assert all(
            isinstance(
                e,
                SetupComplete
                | ConnectionClosed
                | RequestRefused
                | SessionRequested
                | StartRequested
                | StopRequested,
            )
            for e in events
        )
        client = ClientConnection(now_ns=0)
        client.receive_data(rng.randbytes(rng.choice([10, 64, 100])), 0)
        for event in drain(client):
            assert isinstance(event, GreetingReceived | ConnectionClosed)


# -------------------------------------------------------------------------------------------
# Timers


def test_servwait_idle_after_greeting() -> None:
    server = ServerConnection(
        modes=ALL_MODES, keys=KEYS, start_time_ns=0, now_ns=5 * NS, servwait_ns=60 * NS
    )
    assert server.get_timer() == 65 * NS
    server.handle_timer(64 * NS)
    assert drain(server) == [] and server.state is ControlState.AWAIT_SETUP
    server.handle_timer(65 * NS)
    assert server.closed
    closed = last_closed(drain(server))
    assert "SERVWAIT" in closed.reason and closed.accept is None


def test_servwait_half_message_stall() -> None:
    raw = RawClient(Mode.AUTHENTICATED, servwait_ns=60 * NS)
    raw.open_session(SID_A)  # whole messages at t = 0
    assert raw.tx is not None
    message = raw.tx.seal(encode_request_tw_session(REQUEST))
    raw.server.receive_data(message[:40], 30 * NS)  # half a message does not reset SERVWAIT
    assert drain(raw.server) == []
    assert raw.server.get_timer() == 60 * NS
    raw.server.handle_timer(60 * NS)
    assert raw.server.closed


def test_servwait_suspended_while_sessions_run() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED, servwait_ns=60 * NS)
    events = raw.send(encode_request_tw_session(REQUEST), now_ns=10 * NS)
    assert [type(e) for e in events] == [SessionRequested]
    assert raw.server.get_timer() is None  # the application owes the answer
    raw.server.accept_session(7000, SID_A)
    assert raw.server.get_timer() == 70 * NS
    raw.send(h("02" + "00" * 31), now_ns=20 * NS)
    raw.server.start_ack(AcceptCode.OK)
    assert raw.server.get_timer() is None  # a session runs
    raw.server.handle_timer(10_000 * NS)
    assert not raw.server.closed
    raw.send(h("03 00 0000 00000001" + "00" * 24), now_ns=10_000 * NS)
    assert raw.server.get_timer() == 10_060 * NS


def test_servwait_disabled() -> None:
    server = ServerConnection(modes=Mode(1), keys={}, start_time_ns=0, now_ns=0, servwait_ns=None)
    assert server.get_timer() is None
    server.handle_timer(10**15)
    assert not server.closed


def test_client_response_timeouts() -> None:
    pair = ConnectionPair()
    assert pair.client.get_timer() == 30 * NS  # waiting for the greeting since t = 0
    pair.to_client()
    assert pair.client.get_timer() is None  # our application's turn
    pair.client.setup(Mode.UNAUTHENTICATED, now_ns=100 * NS)
    assert pair.client.get_timer() == 130 * NS
    pair.now = 101 * NS
    pair.to_server()
    pair.to_client()
    assert pair.client.get_timer() is None
    pair.client.request_session(REQUEST, now_ns=200 * NS)
    assert pair.client.get_timer() == 230 * NS
    pair.client.handle_timer(229 * NS)
    assert not pair.client.closed
    pair.client.handle_timer(230 * NS)
    closed = last_closed(drain(pair.client))
    assert "await-accept-session" in closed.reason


def test_client_response_timeout_configurable_and_for_n_acks() -> None:
    client = ClientConnection(now_ns=0, response_timeout_ns=5 * NS)
    assert client.get_timer() == 5 * NS
    pair = ConnectionPair()
    pair.ready(Mode.UNAUTHENTICATED | Mode.INDIVIDUAL_SESSION_CONTROL)
    pair.open_session(SID_A)
    pair.client.start_n_sessions([SID_A], now_ns=50 * NS)
    assert pair.client.get_timer() == 80 * NS
    pair.client.handle_timer(80 * NS)
    assert pair.client.closed


def test_client_timeout_when_server_never_starts() -> None:
    client = ClientConnection(now_ns=0, random_bytes=Recorder(3))
    server = ServerConnection(modes=ALL_MODES, keys=KEYS, start_time_ns=0, now_ns=0)
    client.receive_data(server.data_to_send(), 1 * NS)
    drain(client)
    client.setup(Mode.AUTHENTICATED, KEY_ID, SECRET)
    assert client.get_timer() == 31 * NS
    client.handle_timer(31 * NS)
    assert "await-server-start" in last_closed(drain(client)).reason


def test_peer_close_reported_after_the_pending_answer() -> None:
    raw = RawClient(Mode.UNAUTHENTICATED)
    stream = encode_request_tw_session(REQUEST) + h("02" + "00" * 31)
    raw.server.receive_data(stream, 0)
    raw.server.receive_data(b"", 1)
    assert [type(e) for e in drain(raw.server)] == [SessionRequested]
    raw.server.accept_session(7000, SID_A)
    # The buffered Start-Sessions is still read, then the close is reported.
    assert drain(raw.server) == [StartRequested((SID_A,))]
    raw.server.start_ack(AcceptCode.OK)
    closed = last_closed(drain(raw.server))
    assert closed.reason == "peer closed the connection" and closed.accept is None
