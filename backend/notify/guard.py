"""The outbound URL guard. A notification URL makes the backend send a request where a
user says, so a destination must not reach what only the backend can reach (its own
loopback, the cloud metadata address, the private network) unless the operator allowed it
(IAC_NOTIFY_ALLOW, IAC_NOTIFY_ALLOW_PRIVATE).

The host is resolved when a destination is saved (refused with the reason) and again at
every delivery. Every address it resolves to must pass, and the request then goes to the
address that was checked, with the Host header and the TLS server name (which the
certificate is verified against) set to the host: a name that resolves to a public address
for the check and to a private one for the connection (DNS rebinding) reaches nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from backend.errors import Invalid
from backend.store.validation import check_text

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253  # a DNS name's longest (RFC 1035), so host and port fit in 255
RESOLVE_SECONDS = 10.0
DEFAULT_PORTS = {"http": 80, "https": 443}

# What IAC_NOTIFY_ALLOW_PRIVATE permits: the private ranges of a network (fec0::/10: the
# deprecated IPv6 site-local one), nothing that is the backend's own host (loopback) or
# its cloud's (metadata).
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fec0::/10",
    )
)
# Cloud metadata and host services outside link-local, which no allowlist entry opens
# (link-local itself is never allowed either): AWS's IPv6 instance metadata, Alibaba
# Cloud's metadata, Azure's WireServer.
METADATA = tuple(
    ipaddress.ip_network(n) for n in ("fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32")
)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052, and the
# local-use one of RFC 8215) and the deprecated IPv4-compatible form (::a.b.c.d).
NAT64 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))


class Refused(Exception):
    """The URL's host resolves to an address notifications may not reach (or to none)."""


@dataclass(frozen=True)
class Target:
    """A notification URL taken apart: what is resolved and what the request says."""

    scheme: str
    host: str  # lower case, ASCII (IDNA), no brackets, no trailing dot
    port: int
    path: str  # with the query; never the fragment
    explicit_port: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    @property
    def literal(self) -> IP | None:
        """The host as an address, when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_url(url: str) -> Target:
    """An http(s) URL without credentials in it, or Invalid saying what is wrong."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise Invalid(f"a destination URL is 1 to {MAX_URL_CHARS} characters")
    check_text(url, "the destination URL")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise Invalid("the destination URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"the destination URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise Invalid(
            f"the destination URL must be http:// or https://, not {parts.scheme or 'none'!r}"
        )
    if "@" in parts.netloc:
        raise Invalid(
            "the destination URL may not hold a user or password (user:pass@host): put "
            "a webhook's credential in its path or query, or use the signing secret"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Invalid("the destination URL names no host")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise Invalid(f"the destination URL's host {host!r} is not a valid host name") from None
    if len(host) > MAX_HOST_CHARS:
        raise Invalid(
            f"the destination URL's host is {len(host)} characters: a host name has at "
            f"most {MAX_HOST_CHARS}"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], path, port is not None)


def _forms(ip: IP) -> list[IP]:
    """The address and every IPv4 address it carries: an IPv6 address that a translator,
    tunnel or dual stack delivers to an IPv4 host (::ffff:127.0.0.1, 64:ff9b::7f00:1,
    2002:7f00:1::, Teredo) reaches that host, so each form is checked."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    if ip.ipv4_mapped is not None:  # only a way of writing the IPv4 address
        return [ip.ipv4_mapped]
    if not ip.is_unspecified and not ip.is_loopback and any(ip in n for n in NAT64):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    forms: list[IP] = [ip]
    if ip.sixtofour is not None:
        forms.append(ip.sixtofour)
    if ip.teredo is not None:
        forms.extend(ip.teredo)
    return forms


def _never(ip: IP) -> str | None:
    """Why `ip` is refused whatever the operator allowed: it is no receiver's address."""
    if ip.is_unspecified:
        return "an unspecified address (it reaches the backend's own host)"
    if ip.is_link_local:
        return "a link-local address (where the cloud metadata service answers)"
    if any(ip in n for n in METADATA if n.version == ip.version):
        return "a cloud metadata address"
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a multicast or broadcast address"
    return None


def _classify_one(ip: IP) -> str | None:
    why = _never(ip)
    if why is not None:
        return why
    if ip.is_loopback:
        return "a loopback address"
    if any(ip in network for network in PRIVATE if network.version == ip.version):
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def classify(ip: IP) -> str | None:
    """Why notifications may not reach `ip` by default (None: a public address): the
    first refusal among its forms."""
    for form in _forms(ip):
        why = _classify_one(form)
        if why is not None:
            return why
    return None


def _allow_entry(entry: str) -> Network | str:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    host = entry.lower().rstrip(".")
    if not host or any(c in host for c in "/:@ ") or host.startswith("["):
        raise ValueError(f"IAC_NOTIFY_ALLOW: {entry!r} is neither a host name nor a CIDR")
    return host


@dataclass(frozen=True)
class Policy:
    """What the operator allows beyond public addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    allow_private: bool = False

    @classmethod
    def of(cls, allow: str, allow_private: bool = False) -> Policy:
        """From IAC_NOTIFY_ALLOW ('hooks.internal, 10.1.0.0/16') and
        IAC_NOTIFY_ALLOW_PRIVATE; ValueError names a bad entry."""
        entries = [_allow_entry(e.strip()) for e in allow.split(",") if e.strip()]
        return cls(
            frozenset(e for e in entries if isinstance(e, str)),
            tuple(e for e in entries if not isinstance(e, str)),
            allow_private,
        )

    def refusal(self, host: str, ip: IP) -> str | None:
        """Why `host` may not be reached at `ip` (None: it may). Each form of the address
        must pass: the metadata and link-local ones never do; the others when the host or
        the form is allowed, or when the form is public (private ones too with
        allow_private)."""
        for form in _forms(ip):
            why = _never(form)
            if why is not None:
                return why
        if host in self.hosts:
            return None
        for form in _forms(ip):
            if any(form in n for n in self.networks if n.version == form.version):
                continue
            why = _classify_one(form)
            if why is not None and not (why == "a private address" and self.allow_private):
                return why
        return None


async def resolve(target: Target, policy: Policy, timeout: float = RESOLVE_SECONDS) -> list[IP]:
    """Every address of the target's host, each checked: Refused names the first one that
    may not be reached (or says the host does not resolve, or not within `timeout`)."""
    literal = target.literal
    if literal is not None:
        addresses: list[IP] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except TimeoutError:
            raise Refused(f"host {target.host!r} did not resolve within {timeout:g} s") from None
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise Refused(f"host {target.host!r} does not resolve: {reason}") from None
        addresses = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise Refused(f"host {target.host!r} resolves to no address")
    for ip in addresses:
        why = policy.refusal(target.host, ip)
        if why is not None:
            shown = target.host if literal is not None else f"{target.host} resolves to {ip},"
            raise Refused(
                f"{shown} {why}: notifications may not go there (an operator may allow it "
                "with IAC_NOTIFY_ALLOW)"
            )
    return addresses


@dataclass(frozen=True)
class Pinned:
    """A request to the checked address that reads, to the server, as one to the host."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any] = field(default_factory=dict)


def pin(target: Target, ip: IP) -> Pinned:
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and target.literal is None:
        # The TLS server name, and the name the certificate is verified against.
        extensions["sni_hostname"] = target.host
    return Pinned(
        f"{target.scheme}://{literal}:{target.port}{target.path}",
        {"Host": target.host_header},
        extensions,
    )


async def check_all(url: str, policy: Policy) -> list[Pinned]:
    """Where a request to `url` may go, one request per address of its host, once every
    address passed the guard (Invalid: a malformed URL; Refused: a host that may not be
    reached)."""
    target = parse_url(url)
    return [pin(target, ip) for ip in await resolve(target, policy)]
