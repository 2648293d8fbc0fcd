"""The outbound URL guard on its own: which URLs and addresses notifications may reach, and
the request pinned to the address that was checked (a real HTTPS server on loopback shows
the certificate is verified against the host, not the address)."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend.errors import Invalid
from backend.notify import guard
from backend.notify.deliver import NotifyOptions, send
from backend.store.deliveries import Due
from tests.certs import make_ca

pytestmark = pytest.mark.anyio
NOBODY = guard.Policy()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast or broadcast address"),
        ("255.255.255.255", "a multicast or broadcast address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("fec0::1", "a private address"),
        # IPv4 addresses carried in IPv6 ones: the IPv4 host is what they reach.
        ("64:ff9b::7f00:1", "a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),
        ("64:ff9b:1::a00:1", "a private address"),
        ("::127.0.0.1", "a loopback address"),
        ("2002:7f00:1::1", "a loopback address"),
        ("2002:a9fe:a9fe::1", "a link-local address"),
        ("2002:a00:1::1", "a private address"),
        ("64:ff9b::808:808", None),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("fd00::1", "a private address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.2.1", "not a public address"),
        ("93.184.215.14", None),
        ("2606:4700::1", None),
    ],
)
def test_addresses_are_classified(address: str, why: str | None) -> None:
    found = guard.classify(ipaddress.ip_address(address))
    if why is None:
        assert found is None
    else:
        assert found is not None and found.startswith(why), found


def test_the_allowlist_and_allow_private() -> None:
    policy = guard.Policy.of(" hooks.internal., 127.0.0.1 ,10.9.0.0/16")
    assert policy.hosts == frozenset({"hooks.internal"})
    ip = ipaddress.ip_address
    assert policy.refusal("x", ip("127.0.0.1")) is None
    assert policy.refusal("x", ip("::ffff:127.0.0.1")) is None  # the same address
    assert policy.refusal("x", ip("127.0.0.2")) == "a loopback address"
    assert policy.refusal("x", ip("10.9.3.4")) is None
    assert policy.refusal("x", ip("10.8.3.4")) == "a private address"
    assert policy.refusal("hooks.internal", ip("10.8.3.4")) is None
    private = guard.Policy.of("", allow_private=True)
    assert private.refusal("x", ip("10.8.3.4")) is None
    assert private.refusal("x", ip("fd00::1")) is None
    # Never the backend's own host or its cloud's metadata without the allowlist.
    assert private.refusal("x", ip("127.0.0.1")) == "a loopback address"
    assert (private.refusal("x", ip("169.254.169.254")) or "").startswith("a link-local")
    assert private.refusal("x", ip("2002:a00:1::1")) is None  # 6to4 of 10.0.0.1
    assert policy.refusal("x", ip("64:ff9b::7f00:1")) is None  # NAT64 of 127.0.0.1


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.170.2",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
    ],
)
def test_metadata_and_unspecified_addresses_are_never_allowed(address: str) -> None:
    """No allowlist opens them: not every address, not the host's own name, not
    IAC_NOTIFY_ALLOW_PRIVATE (a name rebound to one of them reaches nothing)."""
    everything = guard.Policy.of("0.0.0.0/0, ::/0, hooks.internal", allow_private=True)
    assert everything.refusal("hooks.internal", ipaddress.ip_address(address)) is not None
    assert everything.refusal("x", ipaddress.ip_address("10.1.2.3")) is None
    with pytest.raises(ValueError, match="'http://x' is neither"):
        guard.Policy.of("http://x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "must be http:// or https://"),
        ("file:///etc/passwd", "must be http:// or https://"),
        ("https://user:pw@example.com/x", "may not hold a user or password"),
        ("https://token@example.com/x", "may not hold a user or password"),
        ("https:///path", "names no host"),
        ("https://example.com:99999/", "malformed"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("", "1 to 2048 characters"),
    ],
)
def test_malformed_urls_are_invalid(url: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        guard.parse_url(url)


def test_a_url_taken_apart() -> None:
    target = guard.parse_url("HTTPS://Hooks.Example.COM./a/b?c=1#frag")
    assert (target.scheme, target.host, target.port, target.path) == (
        "https", "hooks.example.com", 443, "/a/b?c=1"
    )  # fmt: skip
    assert target.host_header == "hooks.example.com"
    pinned = guard.pin(target, ipaddress.ip_address("93.184.215.14"))
    assert pinned.url == "https://93.184.215.14:443/a/b?c=1"
    assert pinned.headers == {"Host": "hooks.example.com"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}
    v6 = guard.parse_url("http://[2606:4700::1]:8080/")
    assert v6.host_header == "[2606:4700::1]:8080"
    assert guard.pin(v6, ipaddress.ip_address("2606:4700::1")).url == "http://[2606:4700::1]:8080/"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://localhost:9/x", "a loopback address"),
        ("http://127.0.0.1:9/x", "127.0.0.1 a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 a link-local address"),
        ("http://[::ffff:169.254.169.254]/", "a link-local address"),
        ("http://10.0.0.1/", "10.0.0.1 a private address"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ],
)
async def test_internal_hosts_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(guard.Refused) as refused:
        await guard.check_all(url, NOBODY)
    assert fragment in str(refused.value), str(refused.value)


async def test_the_allowlist_lets_loopback_through() -> None:
    allowed = await guard.check_all("http://127.0.0.1:9/x", guard.Policy.of("127.0.0.1"))
    assert [p.url for p in allowed] == ["http://127.0.0.1:9/x"]
    by_name = await guard.check_all("http://localhost:9/x", guard.Policy.of("localhost"))
    assert "http://127.0.0.1:9/x" in [p.url for p in by_name]
    assert by_name[0].headers == {"Host": "localhost:9"}


def leaf_for(directory: Path, ca: tuple[Path, Path], dns_name: str) -> tuple[Path, Path]:
    """A server certificate for `dns_name` alone (no address in it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
    ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{dns_name}.pem", directory / f"{dns_name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[dict[str, Any]]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for the name 'localhost' only,
    recording each request's Host header and TLS server name."""
    ca = make_ca(tmp_path, "ca")
    cert, key = leaf_for(tmp_path, ca, "localhost")
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append({"host": self.headers["Host"], "sni": getattr(self.server, "sni", None)})
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server.sni = name  # type: ignore[attr-defined]

    context.sni_callback = remember  # type: ignore[assignment]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(ca[0]))
    try:
        yield server.server_port, client, seen
    finally:
        server.shutdown()
        server.server_close()


def due(url: str) -> Due:
    from backend.models import utcnow

    return Due(1, utcnow(), 0, "test", {"event": "test"}, "webhook", url, "s" * 32)


async def test_https_goes_to_the_checked_address_named_as_the_host(
    tls_server: tuple[int, ssl.SSLContext, list[dict[str, Any]]],
) -> None:
    port, client, seen = tls_server
    options = NotifyOptions("b1", "http://iac.example", guard.Policy.of("localhost, 127.0.0.1"))
    outcome = await send(due(f"https://localhost:{port}/hook"), options, verify=client)
    assert outcome.error == "" and outcome.status_code == 204, outcome
    # Connected to 127.0.0.1, which the certificate does not name: it was verified
    # against the host, sent as the TLS server name.
    assert seen == [{"host": f"localhost:{port}", "sni": "localhost"}]
    by_address = await send(due(f"https://127.0.0.1:{port}/hook"), options, verify=client)
    assert "certificate verify failed" in by_address.error, by_address
    refused = await send(due(f"https://localhost:{port}/hook"), NotifyOptions("b1", "x", NOBODY))
    assert re.match(r"refused: localhost resolves to (127\.0\.0\.1|::1), a loopback", refused.error)
    assert len(seen) == 1, "a refused destination is never sent anything"
