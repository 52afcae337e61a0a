"""Where a webhook may go: the URL a task names, judged when the task is created, and the addresses its host has,
judged at every send, just before the socket opens to one of them (docs/api.md, "Webhooks").

A webhook is a request arkflow's functions make to a place a user names, from inside AWS: pointed at a private,
loopback or link-local address (the instance metadata service above all), it would reach what no user may. So a URL
must be https on a public host name or public IP literal, and at send time the name is resolved here and every
address it has must be public (IPv4 and IPv6, IPv4 carried inside IPv6 included), and the connection goes to that
very address (`PinnedBackend`): a DNS answer that changes between the check and the connect (rebinding) reaches
nothing unchecked. TLS still verifies the certificate for the name, which httpcore sends as SNI.

The local stack's receivers (a script, a test's server) listen on loopback: `WEBHOOK_ALLOW_LOOPBACK` lets a
webhook reach `127.0.0.0/8`, `::1` and `localhost`, over http too. Nothing else private is ever allowed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the host has (IP literals as text); the system's resolver unless a test gives one.
Resolver = Callable[[str, int], list[str]]

MAX_URL_CHARS = 2048
MAX_PORT = 65535
# Cloud instance metadata services: link-local or private already, named so that no rule change ever lets them in.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(address) for address in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"))
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Names that only mean something inside some network: no public receiver is called that.
INTERNAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan", ".intranet")
# RFC 6052's well-known NAT64 prefix: its addresses are IPv4 addresses reached through a translator.
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


class UnsafeDestination(Exception):
    """A webhook's host is, or resolves to, an address a webhook may not reach."""


def url_problem(url: str, *, allow_loopback: bool) -> str | None:
    """Why `url` cannot be a webhook URL, in words for the caller (None: it can). Judged from the URL alone: its
    host's addresses are judged again at every send (`vetted_addresses`)."""
    if len(url) > MAX_URL_CHARS:
        return f"must be at most {MAX_URL_CHARS} characters"
    if _UNPRINTABLE.search(url):
        return "must not contain spaces or control characters"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "must be an absolute https URL"
    if parsed.scheme not in ("https", "http") or not parsed.raw_host:
        return "must be an absolute https URL"
    if parsed.userinfo:
        return "must not carry a user name or password"
    if parsed.port is not None and not 0 < parsed.port <= MAX_PORT:
        return f"must name a port from 1 to {MAX_PORT}"
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if is_loopback_host(host):
        return None if allow_loopback else "must name a public host, not this machine"
    if parsed.scheme != "https":
        return "must be an https URL"
    literal = ip_literal(host)
    if literal is not None:
        return None if address_allowed(literal, allow_loopback=False) else "must name a public address"
    return host_name_problem(host)


def host_name_problem(host: str) -> str | None:
    """Why `host` (lower case, no trailing dot) is no public DNS name (None: it may be one)."""
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "must name a valid host"
    if len(labels) < 2 or labels[-1].isdigit():
        # A bare name resolves through search domains (the network's own hosts); a numeric last label is an IP
        # address in another spelling (`127.1`, `0x7f.1`).
        return "must name a public host (a fully qualified domain name)"
    if f".{host}".endswith(INTERNAL_SUFFIXES):
        return "must name a public host, not one of a private network"
    return None


def is_loopback_host(host: str) -> bool:
    literal = ip_literal(host)
    return host in LOOPBACK_NAMES or (literal is not None and literal.is_loopback)


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _carried(address: IPAddress) -> Iterator[IPAddress]:
    """The address, and any IPv4 address it carries: IPv4-mapped, NAT64, 6to4, Teredo (its client)."""
    yield address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            yield address.ipv4_mapped
        if address in NAT64_PREFIX:
            yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            yield address.sixtofour
        if address.teredo is not None:
            yield address.teredo[1]


def address_allowed(address: IPAddress, *, allow_loopback: bool) -> bool:
    """Whether a webhook may connect to `address`: a public unicast address (loopback too, when allowed)."""
    if allow_loopback and address.is_loopback:
        return True
    return all(
        candidate not in METADATA_ADDRESSES and candidate.is_global and not candidate.is_multicast
        and not candidate.is_private and not candidate.is_reserved and not candidate.is_link_local
        and not candidate.is_loopback and not candidate.is_unspecified
        # fec0::/10, deprecated but still routed inside some networks, which Python counts as global.
        and not (isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local)
        for candidate in _carried(address)
    )


def system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def vetted_addresses(host: str, port: int, resolver: Resolver, *, allow_loopback: bool) -> list[str]:
    """The addresses to connect to for `host`: every one it resolves to must be allowed, or none is used (a name
    that mixes a public address with a private one is refused, whichever would be tried first)."""
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = list(dict.fromkeys(ipaddress.ip_address(found.split("%", 1)[0])
                                           for found in resolver(host, port)))
        except (OSError, UnicodeError) as error:
            raise httpcore.ConnectError(f"could not resolve {host}") from error
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
    refused = [address for address in addresses if not address_allowed(address, allow_loopback=allow_loopback)]
    if refused:
        raise UnsafeDestination(f"{host} resolves to an address webhooks may not reach ({refused[0]})")
    return [str(address) for address in addresses]


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's sockets, opened only to addresses `vetted_addresses` allowed at that moment: the host httpcore asks
    for is resolved and judged here, then the connection goes to the judged address itself."""

    def __init__(self, resolver: Resolver, *, allow_loopback: bool,
                 inner: httpcore.NetworkBackend | None = None) -> None:
        self._resolver = resolver
        self._allow_loopback = allow_loopback
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = vetted_addresses(host, port, self._resolver, allow_loopback=self._allow_loopback)
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:  # the next address of the host may answer
                error = failed
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise UnsafeDestination("webhooks use TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
