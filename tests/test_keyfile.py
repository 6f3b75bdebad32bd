"""The perfSONAR pfs key file parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from twamp.net.keyfile import load_keyfile, parse_keyfile, pick_key


def test_entries_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "twamp.pfs"
    path.write_text(
        "# perfSONAR pass-phrase store\n"
        "\n"
        "alice 6f70656e20736573616d65\n"  # "open sesame"
        "   # indented comment\n"
        "bob\t00ff10  # trailing comment\n"
        "carol AbCd\n"
    )
    keys = load_keyfile(path)
    assert keys == {
        b"alice": b"open sesame",
        b"bob": b"\x00\xff\x10",
        b"carol": b"\xab\xcd",
    }


def test_utf8_key_id_and_80_octet_limit() -> None:
    k80 = "k" * 80
    assert parse_keyfile([f"{k80} 01"]) == {k80.encode(): b"\x01"}
    assert parse_keyfile(["clé 02"]) == {"clé".encode(): b"\x02"}
    with pytest.raises(ValueError, match=r"line 2: KeyID of 81 octets"):
        parse_keyfile(["ok 01", "k" * 81 + " 01"])
    # 40 two-octet characters: 80 octets; one more is 82.
    assert len(parse_keyfile(["é" * 40 + " 03"])) == 1
    with pytest.raises(ValueError, match="82 octets"):
        parse_keyfile(["é" * 41 + " 03"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "found only 'alice'"),
        ("alice 0102 extra", "3 fields"),
        ("alice 123", "even number of hex digits"),
        ("alice zz", "even number of hex digits"),
        ("alice 0x12", "even number of hex digits"),
        ("alice 1é", "even number of hex digits"),
    ],
)
def test_bad_line_names_its_number(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"keys\.pfs, line 3: ") as info:
        parse_keyfile(["# header", "good 00", line], source="keys.pfs")
    assert message in str(info.value)


def test_duplicate_key_id_is_an_error() -> None:
    again = r"line 4: KeyID 'bob' is listed again \(first on line 2\)"
    with pytest.raises(ValueError, match=again):
        parse_keyfile(["alice 01", "bob 02", "", "bob 03"])


def test_empty_file_has_no_keys(tmp_path: Path) -> None:
    path = tmp_path / "empty.pfs"
    path.write_text("# nothing here\n\n")
    assert load_keyfile(path) == {}


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_keyfile(tmp_path / "missing.pfs")
    bad = tmp_path / "latin1.pfs"
    bad.write_bytes(b"caf\xe9 01\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_keyfile(bad)
    typo = tmp_path / "typo.pfs"
    typo.write_text("alice 01\nbob 0g\n")
    with pytest.raises(ValueError, match=rf"{typo.name}, line 2"):
        load_keyfile(typo)


# -- pick_key: the KeyID choice `twamp ping` and `twamp-bench --control` share -----------------


def test_pick_key_choices(tmp_path: Path) -> None:
    one = tmp_path / "one.pfs"
    one.write_text("alice 736563726574\n")
    two = tmp_path / "two.pfs"
    two.write_text("alice 736563726574\nbob 6f74686572\n")
    assert pick_key(None, None) == (None, None)
    assert pick_key(None, one) == ("alice", b"secret")
    assert pick_key("bob", two) == ("bob", b"other")
    with pytest.raises(ValueError, match="-u KEYID needs the key file"):
        pick_key("alice", None)
    with pytest.raises(ValueError, match="holds 2 keys: choose one with -u"):
        pick_key(None, two)
    with pytest.raises(ValueError, match="has no key 'carol'"):
        pick_key("carol", two)
    with pytest.raises(ValueError, match="does not exist"):
        pick_key(None, tmp_path / "missing.pfs")
