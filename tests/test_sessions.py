"""The session table (`twamp.sessions`), without sockets, threads or sleeps.

Every policy of the Server is decided here, given `now_ns`; `tests/test_server.py` keeps the
end-to-end tests of the asyncio glue over real sockets.
"""

from __future__ import annotations

import dataclasses
import itertools
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest

from twamp.constants import AcceptCode, Mode, TestMode
from twamp.sessions import BindResult, Limits, Refused, SessionState, SessionTable
from twamp.timestamps import NS, ntp_interval_from_ns
from twamp.wire.control import RequestTWSession

CLIENT = "192.0.2.10"
LOCAL = "192.0.2.1"
OPEN = Mode.UNAUTHENTICATED
S = NS
SID_IP = bytes([198, 51, 100, 7])


class Binder:
    """A fake `bind`: ports in `busy` are taken by someone else, `foreign` addresses not ours."""

    def __init__(self, busy: set[int] | None = None, foreign: set[str] | None = None) -> None:
        self.busy = busy or set()
        self.foreign = foreign or set()
        self.calls: list[tuple[str, int]] = []

    def __call__(self, ip: str, port: int, peer: tuple[str, int]) -> BindResult:
        self.calls.append((ip, port))
        if ip in self.foreign:
            return BindResult.NOT_LOCAL
        if port in self.busy:
            return BindResult.BUSY
        return BindResult.BOUND


def table(**limits: Any) -> SessionTable:
    counter = itertools.count()
    return SessionTable(
        Limits(**{"port_range": (20000, 20009), **limits}),
        sid_ipv4=SID_IP,
        random4=lambda: next(counter).to_bytes(4, "big"),
    )


def req(
    sender: str = "0.0.0.0",
    port: int = 5000,
    *,
    receiver: str = "0.0.0.0",
    receiver_port: int = 0,
    timeout_ns: int = 2 * S,
    **extra: Any,
) -> RequestTWSession:
    return RequestTWSession(
        sender_address=ip_address(sender),
        receiver_address=ip_address(receiver),
        sender_port=port,
        receiver_port=receiver_port,
        padding_length=extra.pop("padding_length", 0),
        start_time=0,
        timeout=ntp_interval_from_ns(timeout_ns),
        type_p=0,
        **extra,
    )


def connect(t: SessionTable, conn: object = "c1", ip: str = CLIENT, now: int = 0) -> object:
    t.open_connection(conn, ip, now)
    return conn


def refused(call: Any, *args: Any, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as info:
        call(*args, **kwargs)
    return info.value


# -- control connections -------------------------------------------------------------------------


def test_connection_caps_total_and_per_address() -> None:
    t = table(max_connections=5, max_connections_per_address=2)
    connect(t, "a1", "192.0.2.1")
    connect(t, "a2", "192.0.2.1")
    r = refused(t.open_connection, "a3", "::ffff:192.0.2.1", 0)  # v4-mapped is the same address
    assert r.counter == "connections_refused_per_address" and "192.0.2.1" in r.reason
    for i in range(3):
        connect(t, f"b{i}", f"192.0.2.{20 + i}")
    r = refused(t.open_connection, "c", "192.0.2.99", 0)
    assert r.counter == "connections_refused" and "5 control connections" in r.reason
    assert t.counters["connections_refused_per_address"] == 1
    assert t.counters["connections_refused"] == 1
    # Closing one frees that address's slot.
    t.close_connection("a1", 0)
    t.close_connection("b0", 0)
    connect(t, "a3", "192.0.2.1")
    assert t.connections == 4


def test_connection_allow_list() -> None:
    t = table(allow=("192.0.2.0/28",))
    connect(t, "in", "192.0.2.5")
    r = refused(t.open_connection, "out", "198.51.100.1", 0)
    assert "allow-list" in r.reason
    assert t.connections == 1


def test_setup_deadline_until_the_first_command() -> None:
    t = table(setup_timeout_ns=10 * S, servwait_ns=900 * S)
    connect(t, now=5 * S)
    # SERVWAIT (the state machine's timer) is later: the set-up deadline comes first.
    assert t.connection_deadline("c1", 905 * S, 5 * S) == (
        15 * S,
        "set-up not completed within 10 s",
    )
    assert t.connection_due("c1", 14 * S, 905 * S, 5 * S) is None
    assert t.connection_due("c1", 15 * S, 905 * S, 5 * S) == "set-up not completed within 10 s"
    assert t.counters["setup_timeouts"] == 1
    t.command_seen("c1")
    assert t.connection_deadline("c1", 905 * S, 5 * S) == (905 * S, "")
    assert t.connection_due("c1", 905 * S, 905 * S, 5 * S) == ""  # the machine's own timer


def test_setup_deadline_can_be_disabled() -> None:
    t = table(setup_timeout_ns=None)
    connect(t)
    assert t.connection_deadline("c1", None, 0) is None


# -- reserve: addresses ----------------------------------------------------------------------------


def test_zero_addresses_are_the_control_connections() -> None:
    t = table()
    connect(t)
    sess, new_port = t.reserve("c1", LOCAL, OPEN, req(), wall_ns=0, bind=Binder())
    assert sess.peer == (CLIENT, 5000) and sess.receiver == (LOCAL, 20000) and new_port
    assert sess.sid[:4] == SID_IP
    assert sess.fmt.test_mode is TestMode.OPEN and sess.state is SessionState.ACCEPTED


def test_zero_address_of_the_other_ip_version_gets_accept_3() -> None:
    t = table()
    connect(t)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req("::", receiver="::"), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.NOT_SUPPORTED and "IPv6 request over an IPv4" in r.reason


@pytest.mark.parametrize("sender", ["224.0.0.1", "240.0.0.1", "ff02::1"])
def test_multicast_or_reserved_sender_gets_accept_3(sender: str) -> None:
    t = table(allow_third_party_sender=True)
    connect(t)
    receiver = "::" if ":" in sender else "0.0.0.0"
    r = refused(
        t.reserve, "c1", "::1" if ":" in sender else LOCAL, OPEN, req(sender, receiver=receiver),
        wall_ns=0, bind=Binder(),
    )  # fmt: skip
    assert r.accept is AcceptCode.NOT_SUPPORTED and "not unicast" in r.reason


def test_third_party_sender_is_refused_unless_allowed() -> None:
    """Amplification: replies are up to 3.1 x the request; only the client may receive them."""
    t = table()
    connect(t)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req("203.0.113.9"), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.FAILURE and "third-party" in r.reason
    assert t.counters["third_party_sender"] == 1 and t.counters["sessions_refused"] == 1
    assert not t.sessions and not t.ports
    # The client's own address, given explicitly, is fine; so is any with the switch.
    t.reserve("c1", LOCAL, OPEN, req(CLIENT), wall_ns=0, bind=Binder())
    t2 = table(allow_third_party_sender=True)
    connect(t2)
    sess, _ = t2.reserve("c1", LOCAL, OPEN, req("203.0.113.9"), wall_ns=0, bind=Binder())
    assert sess.peer == ("203.0.113.9", 5000)


def test_sender_outside_the_allow_list_gets_accept_1() -> None:
    t = table(allow=("192.0.2.0/24",), allow_third_party_sender=True)
    connect(t)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req("198.51.100.3"), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.FAILURE and "allow-list" in r.reason


def test_sender_port_0_gets_accept_3() -> None:
    t = table()
    connect(t)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req(port=0), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.NOT_SUPPORTED


def test_receiver_address_not_ours_gets_accept_3() -> None:
    t = table()
    connect(t)
    r = refused(
        t.reserve, "c1", LOCAL, OPEN, req(receiver="192.0.2.200"), wall_ns=0,
        bind=Binder(foreign={"192.0.2.200"}),
    )  # fmt: skip
    assert r.accept is AcceptCode.NOT_SUPPORTED and "not an address of ours" in r.reason


# -- reserve: RFC 6038, ports, SIDs ------------------------------------------------------------


def test_reflect_octets_room_check() -> None:
    t = table()
    connect(t)
    mode = OPEN | Mode.REFLECT_OCTETS
    # Open mode: sender header 14, reflector header 41: 27 octets of padding are eaten.
    r = refused(
        t.reserve, "c1", LOCAL, mode,
        req(padding_length=30, octets_to_reflect=0, padding_to_reflect=10),
        wall_ns=0, bind=Binder(),
    )  # fmt: skip
    assert r.accept is AcceptCode.NOT_SUPPORTED and "leaves 3 octets" in r.reason
    t.reserve(
        "c1", LOCAL, mode, req(padding_length=37, padding_to_reflect=10), wall_ns=0, bind=Binder()
    )


def test_port_choice() -> None:
    t = table()
    connect(t)
    bind = Binder(busy={20003})
    a, new = t.reserve("c1", LOCAL, OPEN, req(port=1, receiver_port=20005), wall_ns=0, bind=bind)
    assert a.receiver[1] == 20005 and new
    # The same port for another sender: shared, nothing bound.
    b, new = t.reserve("c1", LOCAL, OPEN, req(port=2, receiver_port=20005), wall_ns=0, bind=bind)
    assert b.receiver[1] == 20005 and not new
    # The same sender again: another port. Busy or outside the range: the next free one.
    c, _ = t.reserve("c1", LOCAL, OPEN, req(port=1, receiver_port=20005), wall_ns=0, bind=bind)
    d, _ = t.reserve("c1", LOCAL, OPEN, req(port=3, receiver_port=20003), wall_ns=0, bind=bind)
    e, _ = t.reserve("c1", LOCAL, OPEN, req(port=4, receiver_port=862), wall_ns=0, bind=bind)
    assert (c.receiver[1], d.receiver[1], e.receiver[1]) == (20000, 20001, 20002)
    assert len({s.sid for s in (a, b, c, d, e)}) == 5
    assert t.ports[(LOCAL, 20005)] == {(CLIENT, 1), (CLIENT, 2)}


def test_no_free_port_gets_accept_5() -> None:
    t = table(port_range=(20000, 20001))
    connect(t)
    bind = Binder(busy={20001})
    t.reserve("c1", LOCAL, OPEN, req(port=1), wall_ns=0, bind=bind)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req(port=1), wall_ns=0, bind=bind)
    assert r.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT and t.counters["no_port"] == 1


# -- limits ----------------------------------------------------------------------------------------


def test_session_limits_accept_5_and_4() -> None:
    t = table(max_sessions=2, max_sessions_per_client=1)
    connect(t)
    connect(t, "c2", "192.0.2.11")
    connect(t, "c3", "192.0.2.12")
    t.reserve("c1", LOCAL, OPEN, req(), wall_ns=0, bind=Binder())
    r = refused(t.reserve, "c1", LOCAL, OPEN, req(port=2), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT and "for 192.0.2.10" in r.reason
    t.reserve("c2", LOCAL, OPEN, req(), wall_ns=0, bind=Binder())
    r = refused(t.reserve, "c3", LOCAL, OPEN, req(), wall_ns=0, bind=Binder())
    assert "2 sessions in all" in r.reason
    t0 = table(max_sessions=0)
    connect(t0)
    r = refused(t0.reserve, "c1", LOCAL, OPEN, req(), wall_ns=0, bind=Binder())
    assert r.accept is AcceptCode.PERMANENT_RESOURCE_LIMIT


def test_back_to_back_short_sessions_are_never_refused() -> None:
    """A stopped session no longer counts against its client's own limit (issue: the 65th)."""
    t = table(max_sessions_per_client=1, max_sessions=1000, port_range=(20000, 21999))
    connect(t)
    now = 0
    for i in range(500):
        sess, _ = t.reserve("c1", LOCAL, OPEN, req(port=1000 + i), wall_ns=now, bind=Binder())
        t.start([sess.sid], now)
        now += S // 10
        assert t.stop([sess.sid], now) == [sess]
    assert t.counters["sessions_refused"] == 0
    assert len(t.sessions) == 500  # still counted in all until freed (they hold ports)
    t.expire(now + 10 * S, lambda s: 0)
    assert not t.sessions and not t.ports


# -- timeout cap, stop, end of control, REFWAIT ----------------------------------------------------


def test_timeout_is_capped_and_a_session_ends_that_long_after_stop() -> None:
    t = table(max_timeout_ns=30 * S, linger_ns=S)
    connect(t)
    # The landed code kept a session with this Timeout reflecting for 136 years after Stop.
    raw = dataclasses.replace(req(), timeout=0xFFFFFFFF_FFFFFFFF)
    sess, _ = t.reserve("c1", LOCAL, OPEN, raw, wall_ns=0, bind=Binder())
    assert sess.timeout_ns == 30 * S and t.counters["timeouts_capped"] == 1
    t.start([sess.sid], 0)
    t.stop([sess.sid], 100 * S)
    assert sess.reflect_until_ns == 130 * S and sess.free_at_ns == 131 * S
    assert t.expire(131 * S - 1, lambda s: 0) == []
    (freed,) = t.expire(131 * S, lambda s: 0)
    assert freed.session is sess and freed.close_port == (LOCAL, 20000)


def test_end_of_control_stops_running_sessions_and_frees_the_others() -> None:
    """A client that Starts and leaves: its session reflects for at most the cap, then goes."""
    t = table(max_timeout_ns=5 * S, linger_ns=S)
    connect(t)
    a, _ = t.reserve("c1", LOCAL, OPEN, req(port=1, timeout_ns=60 * S), wall_ns=0, bind=Binder())
    b, _ = t.reserve("c1", LOCAL, OPEN, req(port=2), wall_ns=0, bind=Binder())
    t.start([a.sid], 0)
    freed, stopped = t.close_connection("c1", 10 * S)
    assert [f.session for f in freed] == [b] and stopped == [a]
    assert a.state is SessionState.STOPPING and a.reflect_until_ns == 15 * S and a.owner is None
    assert t.connections == 0
    (f,) = t.expire(16 * S, lambda s: 0)
    assert f.session is a and not t.sessions and not t.ports


def test_refwait_frees_idle_sessions_and_servwait_resumes() -> None:
    t = table(refwait_ns=10 * S, servwait_ns=20 * S, setup_timeout_ns=None)
    connect(t)
    t.command_seen("c1")
    idle, _ = t.reserve("c1", LOCAL, OPEN, req(port=1), wall_ns=0, bind=Binder())
    busy, _ = t.reserve("c1", LOCAL, OPEN, req(port=2), wall_ns=0, bind=Binder())
    t.start([idle.sid, busy.sid], 0)
    last = {idle.sid: 0, busy.sid: 8 * S}
    assert t.expire(9 * S, lambda s: last[s.sid]) == []
    (f,) = t.expire(10 * S, lambda s: last[s.sid])
    assert f.session is idle and "REFWAIT" in f.why and t.counters["refwait_expired"] == 1
    # One session still runs: no SERVWAIT yet.
    assert t.connection_deadline("c1", None, 0, sessions_running=True) is None
    t.expire(18 * S, lambda s: last[s.sid])
    assert not t.sessions
    deadline = t.connection_deadline("c1", None, 0, sessions_running=True)
    assert deadline is not None and deadline[0] == 38 * S and "REFWAIT" in deadline[1]


# -- key derivation --------------------------------------------------------------------------------


def test_key_derivation_rate_limit_per_address() -> None:
    t = table(kdf_per_s=2.0, kdf_burst=3, max_pending_kdf=100)
    connect(t)
    connect(t, "other", "192.0.2.77")
    for _ in range(3):
        t.begin_key_derivation("c1", 0)
    r = refused(t.begin_key_derivation, "c1", 0)
    assert r.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT and t.counters["kdf_refused_rate"] == 1
    t.begin_key_derivation("other", 0)  # another address is not affected
    t.begin_key_derivation("c1", S // 2)  # 2 a second: one token after half a second
    refused(t.begin_key_derivation, "c1", S // 2)


def test_key_derivations_queued_in_all_are_bounded() -> None:
    t = table(max_pending_kdf=2, kdf_burst=10)
    connect(t)
    t.begin_key_derivation("c1", 0)
    t.begin_key_derivation("c1", 0)
    r = refused(t.begin_key_derivation, "c1", 0)
    assert "queued" in r.reason and t.counters["kdf_refused"] == 1
    t.end_key_derivation()
    t.begin_key_derivation("c1", 0)


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="max_timeout_ns"):
        Limits(max_timeout_ns=-1)
    with pytest.raises(ValueError, match="setup_timeout_ns"):
        Limits(setup_timeout_ns=0)
    with pytest.raises(ValueError, match="port range"):
        Limits(port_range=(10, 5))


def test_ipv6_control_connection() -> None:
    t = table()
    connect(t, ip="2001:db8::10")
    sess, _ = t.reserve(
        "c1", "2001:db8::1", OPEN, req("::", receiver="::"), wall_ns=0, bind=Binder()
    )
    assert sess.peer == ("2001:db8::10", 5000) and sess.receiver == ("2001:db8::1", 20000)
    assert isinstance(ip_address(sess.peer[0]), IPv6Address)
    assert not isinstance(ip_address(sess.receiver[0]), IPv4Address)


def test_ports_are_not_shared_when_sockets_are_connected() -> None:
    """`share_ports=False`: one session per test port (a connect()ed socket has one peer)."""
    t = table(share_ports=False, port_range=(20000, 20001))
    connect(t)
    bind = Binder()
    a, _ = t.reserve("c1", LOCAL, OPEN, req(port=1, receiver_port=20000), wall_ns=0, bind=bind)
    b, new = t.reserve("c1", LOCAL, OPEN, req(port=2, receiver_port=20000), wall_ns=0, bind=bind)
    assert (a.receiver[1], b.receiver[1], new) == (20000, 20001, True)
    r = refused(t.reserve, "c1", LOCAL, OPEN, req(port=3), wall_ns=0, bind=bind)
    assert r.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT
