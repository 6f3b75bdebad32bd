"""The perfSONAR / owamp `.pfs` key file: the shared secrets a Server accepts, by KeyID.

One entry per line, ``KEYID HEXKEY`` separated by white space (owampd.pfs(5), as written by
`pfstore`): KEYID is the identity a Control-Client sends in Set-Up-Response (RFC 4656 §3.1,
at most 80 octets of UTF-8), HEXKEY the hexadecimal of the passphrase octets, which PBKDF2 turns
into the key (RFC 4656 §3.1). Blank lines and lines whose first non-blank character is ``#`` are
comments; a ``#`` token after the two fields starts a trailing comment.

Every problem raises `ValueError` naming the file and the line number, so that a typo in the
file of a running service is found from one log line. A KeyID listed twice is an error rather
than last-one-wins: the Server could not tell which secret a client means.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterable
from pathlib import Path

from ..constants import KEYID_LEN

__all__ = ["load_keyfile", "load_keys", "parse_keyfile", "pick_key"]


def parse_keyfile(lines: Iterable[str], *, source: str = "key file") -> dict[bytes, bytes]:
    """KeyID -> passphrase octets from the lines of a pfs file (see the module docstring)."""
    keys: dict[bytes, bytes] = {}
    first_seen: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            key_id, passphrase = _entry(fields)
            if key_id in keys:
                raise ValueError(
                    f"KeyID {fields[0]!r} is listed again (first on line {first_seen[key_id]})"
                )
        except ValueError as exc:
            raise ValueError(f"{source}, line {number}: {exc}") from None
        keys[key_id] = passphrase
        first_seen[key_id] = number
    return keys


def _entry(fields: list[str]) -> tuple[bytes, bytes]:
    if len(fields) < 2:
        raise ValueError(f"expected 'KEYID HEXKEY', found only {fields[0]!r}")
    if len(fields) > 2 and not fields[2].startswith("#"):
        raise ValueError(f"expected 'KEYID HEXKEY', found {len(fields)} fields")
    key_id = fields[0].encode("utf-8")
    if len(key_id) > KEYID_LEN:
        # RFC 4656 §3.1: the KeyID field of Set-Up-Response is 80 octets.
        raise ValueError(f"KeyID of {len(key_id)} octets is longer than {KEYID_LEN}")
    try:
        passphrase = binascii.unhexlify(fields[1])
    except (binascii.Error, ValueError):
        raise ValueError(
            f"HEXKEY of KeyID {fields[0]!r} is not an even number of hex digits"
        ) from None
    if not passphrase:
        raise ValueError(f"HEXKEY of KeyID {fields[0]!r} is empty")
    return key_id, passphrase


def load_keyfile(path: str | os.PathLike[str]) -> dict[bytes, bytes]:
    """Read a pfs key file; `ValueError` names the line of a bad entry, `OSError` if unreadable."""
    name = os.fspath(path)
    with open(name, encoding="utf-8", errors="strict") as f:
        try:
            return parse_keyfile(f, source=name)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not UTF-8 text ({exc.reason})") from None


def load_keys(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """KeyID (text) -> passphrase from a pfs key file; any problem is one `ValueError` sentence."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"key file {file} does not exist or is not a file")
    try:
        loaded = load_keyfile(file)
    except OSError as exc:
        raise ValueError(f"cannot read key file {file}: {exc.strerror or exc}") from None
    return {key_id.decode(): passphrase for key_id, passphrase in loaded.items()}


def pick_key(
    key_id: str | None, key_file: str | os.PathLike[str] | None
) -> tuple[str | None, bytes | None]:
    """The (KeyID, passphrase) a Control-Client uses: `key_id` from `key_file`, or its only key.

    (None, None) without a key file (unauthenticated). `ValueError`, one sentence naming the
    option to fix, for a KeyID without a file, a file of several keys and no KeyID, or a KeyID
    the file does not hold. `twamp ping` and `twamp-bench --control` share this choice.
    """
    if key_file is None:
        if key_id is not None:
            raise ValueError("-u KEYID needs the key file (-k FILE) that holds its passphrase")
        return None, None
    keys = load_keys(key_file)
    if key_id is None:
        if len(keys) != 1:
            raise ValueError(f"key file {key_file} holds {len(keys)} keys: choose one with -u")
        ((only_id, secret),) = keys.items()
        return only_id, secret
    if key_id not in keys:
        raise ValueError(f"key file {key_file} has no key {key_id!r}")
    return key_id, keys[key_id]
