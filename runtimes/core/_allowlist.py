"""Which URLs a web task may reach: rules parsed into scheme, host, port and path, never prefixes.

A task lists ``allowed_urls``; its ``start_url``'s origin, its MiniWoB site and adp's own sites
are added. A task that lists nothing gets only those, never the whole network, so private and
loopback addresses are reachable only when a task names them. Hosts are compared in their
canonical form (``http://0x7f.1/``, ``http://2130706433/`` and ``http://127.0.0.1/`` are one
host), a URL with user information (``http://allowed@other/``) or a backslash is refused
outright, and every refusal is recorded in :attr:`Allowlist.blocked`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from runtimes.core._errors import InvalidURLError

# The URL schemes a rule may name; ws(s) share their origin with http(s).
RULE_SCHEMES = ("http", "https", "ws", "wss", "file")
_SAME_ORIGIN_SCHEME = {"ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALWAYS_ALLOWED_SCHEMES = {"about", "data", "blob"}
_NUMERIC_IPV4 = re.compile(r"^[0-9a-fx.]+$")


@dataclass(frozen=True)
class Endpoint:
    """A URL reduced to what the allowlist compares."""

    scheme: str  # http or https (ws and wss are folded in), or file
    host: str  # canonical: lower case, IDNA, IPv4 dotted quad, IPv6 compressed without brackets
    port: int
    path: str


def canonical_host(host: str) -> str:
    """``host`` as Chromium puts it on the wire: IPv4 in any notation as a dotted quad, IPv6
    compressed, names lower-cased in IDNA form.

    Raises:
        InvalidURLError: the host is empty or not a valid name.
    """
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        raise InvalidURLError("no host")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    if _NUMERIC_IPV4.match(host) and not host.replace(".", "").isalpha():
        try:  # inet_aton reads the forms URL parsers accept: 127.1, 0x7f.0.0.1, 2130706433
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidURLError(f"invalid host {host!r}") from exc


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint ``url`` names.

    Raises:
        InvalidURLError: not an absolute http(s)/ws(s)/file URL, or one with user information,
            a backslash, whitespace or control characters (which browsers and Python parse
            differently).
    """
    if any(ch <= " " or ch == "\\" for ch in url):
        raise InvalidURLError("contains whitespace, a control character or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURLError(str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in RULE_SCHEMES:
        raise InvalidURLError(f"scheme {scheme or '(none)'!r} is not one of {', '.join(RULE_SCHEMES)}")
    if "@" in parts.netloc:
        raise InvalidURLError("contains user information (user@host)")
    if scheme == "file":
        return Endpoint("file", "", 0, parts.path or "/")
    scheme = _SAME_ORIGIN_SCHEME.get(scheme, scheme)
    return Endpoint(scheme, canonical_host(parts.hostname or ""), port or _DEFAULT_PORTS[scheme], parts.path or "/")


def _path_within(path: str, rule: str) -> bool:
    if rule in ("", "/") or path == rule:
        return True
    return path.startswith(rule if rule.endswith("/") else rule + "/")


@dataclass
class Allowlist:
    """The rules of one task, and every URL it was refused."""

    rules: list[Endpoint]
    blocked: list[str] = field(default_factory=list)

    @classmethod
    def from_urls(cls, urls: Iterable[str]) -> Allowlist:
        """Rules from URLs; a rule's path is a prefix at ``/`` boundaries (``/a`` allows ``/a/b``, not ``/ab``).

        Raises:
            InvalidURLError: a URL cannot be a rule.
        """
        return cls(rules=[parse_endpoint(url) for url in urls])

    def allows(self, url: str) -> bool:
        """Whether the task may load ``url`` (about:, data: and blob: URLs are the page's own)."""
        if urlsplit(url).scheme.lower() in _ALWAYS_ALLOWED_SCHEMES:
            return True
        try:
            target = parse_endpoint(url)
        except InvalidURLError:
            return False
        return any(
            rule.scheme == target.scheme
            and rule.host == target.host
            and rule.port == target.port
            and _path_within(target.path, rule.path)
            for rule in self.rules
        )

    def allows_host(self, host: str, port: int) -> bool:
        """Whether any rule reaches ``host:port`` (what a proxy sees of a CONNECT tunnel)."""
        try:
            host = canonical_host(host)
        except InvalidURLError:
            return False
        return any(rule.host == host and rule.port == port for rule in self.rules if rule.scheme != "file")

    def check(self, url: str) -> bool:
        """:meth:`allows`, recording ``url`` in :attr:`blocked` when it does not."""
        if self.allows(url):
            return True
        self.blocked.append(url)
        return False
