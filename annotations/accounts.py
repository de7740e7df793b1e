"""Analyst accounts for the app: a users file of names, roles and salted scrypt password hashes.

One line per user, ``name:role:hash``, where role is ``annotator`` (labels, saves, marks "needs
work") or ``reviewer`` (also accepts and rejects) and hash is
``scrypt$N$r$p$salt$digest`` (base64). ``translandseg add-user FILE NAME --role reviewer`` writes
a line; passwords are never stored.
"""

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

ROLES = ("annotator", "reviewer")
REVIEWER_ONLY = ("accepted", "rejected")  # review statuses only a reviewer may give
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AccountError(ValueError):
    """A users file or account that cannot be used; the message says why."""


def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str


class Accounts:
    """The users of one app, read from a users file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.users: Dict[str, Account] = {}
        try:
            lines = self.path.read_text().splitlines()
        except OSError as error:
            raise AccountError(f"cannot read the users file {self.path}: {error.strerror}") from error
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                account = _parse(line, f"{self.path.name} line {number}")
                self.users[account.name] = account
        if not self.users:
            raise AccountError(f"{self.path} names no user; add one with `translandseg add-user`")

    def login(self, name: str, password: str) -> bool:
        """Gradio's ``auth`` callable: does ``password`` open ``name``'s account?"""
        account = self.users.get(name)
        return account is not None and password_matches(password, account.password_hash)

    def may_review(self, name: str, status: Optional[str]) -> bool:
        """Whether ``name`` may give review ``status`` (None: a plain save)."""
        if status not in REVIEWER_ONLY:
            return name in self.users
        return name in self.users and self.users[name].role == "reviewer"


def _parse(line: str, where: str) -> Account:
    parts = line.strip().split(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise AccountError(f"{where}: expected name:role:hash")
    name, role, password_hash = parts
    if role not in ROLES:
        raise AccountError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    return Account(name, role, password_hash)


def add_user(path: Path, name: str, role: str, password: str) -> None:
    """Add ``name`` to the users file (or replace its line), creating the file when missing."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or ":" in name or name != name.strip():
        raise AccountError("a user name needs at least one character and no ':' or surrounding spaces")
    if len(password) < 8:
        raise AccountError("a password needs at least 8 characters")
    path = Path(path)
    lines = path.read_text().splitlines() if path.is_file() else []
    lines = [line for line in lines if line.split(":", 1)[0] != name]
    lines.append(f"{name}:{role}:{hash_password(password)}")
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_text("\n".join(lines) + "\n")
    os.chmod(partial, 0o600)
    partial.replace(path)
