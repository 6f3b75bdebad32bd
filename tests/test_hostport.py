"""The one HOST[:PORT] parser behind every target and --listen option."""

import pytest

from twamp.hostport import parse_hostport


@pytest.mark.parametrize(
    ("text", "listen", "expected"),
    [
        ("example.net", False, ("example.net", 862)),
        ("192.0.2.1:4000", False, ("192.0.2.1", 4000)),
        ("[2001:db8::1]:4000", False, ("2001:db8::1", 4000)),
        ("[2001:db8::1]", False, ("2001:db8::1", 862)),
        ("2001:db8::1", False, ("2001:db8::1", 862)),
        (" 10.0.0.1:1 ", False, ("10.0.0.1", 1)),
        (":9000", True, ("", 9000)),
        ("[::]:0", True, ("::", 0)),
        ("[0:0::1]", True, ("::1", 862)),  # listening addresses come back canonical
    ],
)
def test_accepted(text: str, listen: bool, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, 862, listen=listen) == expected


@pytest.mark.parametrize(
    ("text", "listen", "message"),
    [
        ("", False, "empty"),
        (":5", False, "host is missing"),
        ("host:", False, "port must be a number from 1"),
        ("host:0", False, "from 1 to 65535"),
        ("host:70000", False, "from 1 to 65535"),
        ("[::1", False, "[ADDR]:PORT"),
        ("[::1]x", False, "[ADDR]:PORT"),
        ("[]:5", False, "[ADDR]:PORT"),
        ("name:80", True, "not an IP address"),
        ("1.2.3.4:65536", True, "from 0 to 65535"),
    ],
)
def test_rejected(text: str, listen: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_hostport(text, 862, listen=listen)
