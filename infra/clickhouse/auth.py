"""Users of the embedded ClickHouse server and how a request names one, as ClickHouse accepts it.

Credentials come in exactly one of three ways: ``X-ClickHouse-User`` /
``X-ClickHouse-Key`` headers, HTTP basic auth, or ``user`` / ``password`` URL
parameters (none: user ``default``, empty password). Mixing them is refused, as
ClickHouse refuses it. A user's ``readonly`` level is the floor of every request
and session it opens, so a read-only (dashboard) user can never write.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Mapping, Protocol

from pydantic import SecretStr

from infra.clickhouse.errors import ClickHouseError


@dataclass(frozen=True)
class User:
    name: str
    password: SecretStr | None
    readonly: int = 0

    def __repr__(self) -> str:  # never show the secret, not even masked lengths
        return f"User({self.name!r}, readonly={self.readonly})"


def users_from_settings(ch) -> dict[str, User]:
    """The configured writer (``clickhouse.user`` / ``password``) plus ``clickhouse.server_users``."""
    users = {name: User(name, spec.password, spec.readonly) for name, spec in ch.server_users.items()}
    users[ch.user] = User(ch.user, ch.password, 0)
    return users


def _failed(user: str, why: str = "password is incorrect, or there is no user with such name") -> ClickHouseError:
    return ClickHouseError(f"Code: 516. DB::Exception: {user}: Authentication failed: {why}. (AUTHENTICATION_FAILED)",
                           516, "AUTHENTICATION_FAILED")


class Headers(Protocol):
    """What ``credentials`` reads of request headers: an ``http.client.HTTPMessage`` or a plain dict."""

    def __contains__(self, name: str, /) -> bool: ...
    def get(self, name: str, /) -> str | None: ...


def credentials(headers: Headers, params: Mapping[str, str]) -> tuple[str, str]:
    """``(user, password)`` from the one way the request gives them."""
    ways = []
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        ways.append((headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key") or ""))
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "basic":
            raise _failed("default", f"unsupported HTTP authorization scheme {scheme!r} (use Basic)")
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise _failed("default", "malformed Basic authorization header") from exc
        ways.append((user or "default", password))
    if "user" in params or "password" in params:
        ways.append((params.get("user") or "default", params.get("password") or ""))
    if len(ways) > 1:
        raise _failed(ways[0][0], "it is not allowed to use more than one authentication method at once "
                      "(X-ClickHouse-User/Key headers, Authorization header, user/password parameters)")
    return ways[0] if ways else ("default", "")


def authenticate(users: Mapping[str, User], name: str, password: str) -> User:
    """The user, when the password matches (compared in constant time)."""
    user = users.get(name)
    expected = user.password.get_secret_value() if user and user.password else ""
    if user is None or not hmac.compare_digest(expected.encode(), password.encode()):
        raise _failed(name)
    return user
