"""LSDB entries (ages computed from the install time) and the DR election function."""

from __future__ import annotations

from ipaddress import IPv4Address

from twamp.ospf.events import NS
from twamp.ospf.interface import Candidate, elect
from twamp.ospf.lsdb import Lsdb, LsdbEntry
from twamp.ospf.wire import MAX_AGE, AsExternalLsaBody, lsa_checksum_ok, make_lsa

A = IPv4Address
ZERO = A(0)


def _entry(age: int = 0, installed: int = 0) -> LsdbEntry:
    lsa, raw = make_lsa(5, A("198.18.0.0"), A("192.0.2.2"), 1, AsExternalLsaBody(A(0), 1), age=age)
    return LsdbEntry(lsa, raw, installed, True)


def test_age_grows_with_time_held_and_caps_at_maxage() -> None:
    e = _entry(age=10, installed=5 * NS)
    assert e.age(5 * NS) == 10
    assert e.age(5 * NS + NS - 1) == 10
    assert e.age(8 * NS) == 13
    assert e.age(10_000 * NS) == MAX_AGE
    assert e.header(8 * NS).age == 13 and e.header(8 * NS).seq == e.lsa.header.seq


def test_flooded_octets_add_inf_trans_delay_and_keep_the_checksum() -> None:
    e = _entry(age=10)
    raw = e.wire(2 * NS, 1)
    assert int.from_bytes(raw[:2], "big") == 13
    assert raw[2:] == e.raw[2:] and lsa_checksum_ok(raw)
    assert int.from_bytes(_entry(age=MAX_AGE).wire(0, 1)[:2], "big") == MAX_AGE


def test_lsdb_install_returns_the_replaced_copy() -> None:
    db = Lsdb()
    first, second = _entry(installed=0), _entry(installed=NS)
    assert db.install(first) is None
    assert db.install(second) is first
    assert len(db) == 1 and db[first.key] is second and first.key in db
    assert db.remove(first.key) is second and db.get(first.key) is None


def _c(rid: str, prio: int = 1, dr: str = "0.0.0.0", bdr: str = "0.0.0.0") -> Candidate:
    addr = A(rid.replace("10.0.0.", "203.0.113."))
    return Candidate(A(rid), addr, prio, A(dr), A(bdr))


def test_election_fresh_segment_highest_priority_then_router_id() -> None:
    me = _c("10.0.0.1")
    dr, bdr = elect(me, [_c("10.0.0.9"), _c("10.0.0.5", prio=2)])
    # Nobody declares a DR: the BDR is elected first (10.0.0.5 by priority), then it is DR;
    # step 4 does not re-run for us (we were and stay neither), and the result is DR = BDR.
    assert dr == bdr == A("203.0.113.5")


def test_election_keeps_a_declared_dr_and_never_elects_priority_zero() -> None:
    me = _c("10.0.0.99", prio=0)
    others = [
        _c("10.0.0.3", dr="203.0.113.3"),
        _c("10.0.0.7", dr="203.0.113.3", bdr="203.0.113.7"),
        _c("10.0.0.8", dr="203.0.113.3"),
    ]
    assert elect(me, others) == (A("203.0.113.3"), A("203.0.113.7"))  # no pre-emption
    assert elect(me, []) == (ZERO, ZERO)


def test_election_step_four_when_we_become_dr() -> None:
    # We (highest priority) already declared ourselves BDR and the DR is gone: the first pass
    # makes us DR via BDR promotion; the second pass then elects a new BDR among the others.
    me = _c("10.0.0.9", prio=5, bdr="203.0.113.9")
    dr, bdr = elect(me, [_c("10.0.0.2"), _c("10.0.0.4")])
    assert dr == A("203.0.113.9") and bdr == A("203.0.113.4")
