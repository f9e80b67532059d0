"""The broker's TLS listener with x509 login (issue 12 item 5), on a PRIVATE broker.

The TLS lines of deploy/rabbitmq/rabbitmq.conf (commented there) are uncommented into the
private node's config with the plugin ``rabbitmq_auth_mechanism_ssl``, as deploy/README.md
says; a CA made here signs the server's and a node user's certificates. A node then logs in
by its certificate alone (SASL EXTERNAL, user = the certificate's common name); without a
client certificate the TLS handshake is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pika
import pika.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.broker import PrivateBroker, free_port

CONF = Path(__file__).resolve().parents[1] / "deploy" / "rabbitmq" / "rabbitmq.conf"
NODE_USER = "kpx-bw"


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    folder: Path, cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn) if issuer is None else issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
    )
    if cn == "localhost":
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    cert = builder.sign(key if issuer is None else issuer[1], hashes.SHA256())
    pem, key_pem = folder / f"{cn}.pem", folder / f"{cn}.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_pem.chmod(0o600)
    return cert, key, pem, key_pem


def make_pki(folder: Path) -> Pki:
    ca_cert, ca_key, ca_pem, _ = _issue(folder, "kpx-test-ca", None)
    _, _, server, server_key = _issue(folder, "localhost", (ca_cert, ca_key))
    _, _, client, client_key = _issue(folder, NODE_USER, (ca_cert, ca_key))
    return Pki(ca_pem, (server, server_key), (client, client_key))


def tls_lines(pki: Pki, port: int) -> str:
    """The commented TLS block of deploy/rabbitmq/rabbitmq.conf, uncommented for this node."""
    text = CONF.read_text(encoding="utf-8")
    wanted = re.compile(r"^# ((?:listeners\.ssl|ssl_options|auth_mechanisms|ssl_cert_login)\S*"
                        r" = .*)$", re.M)  # fmt: skip
    lines = wanted.findall(text)
    assert len(lines) >= 8, "deploy/rabbitmq/rabbitmq.conf lost its TLS block"
    paths = {"ca.pem": pki.ca, "server.pem": pki.server[0], "server.key": pki.server[1]}
    out = []
    for line in lines:
        line = re.sub(r"= 5671$", f"= {port}", line)
        for name, path in paths.items():
            line = line.replace(f"/etc/rabbitmq/tls/{name}", str(path))
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[PrivateBroker, Pki, int]]:
    root = Path(tempfile.mkdtemp(prefix="kpxt-tls-"))
    home = root / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    (root / "pki").mkdir()
    pki = make_pki(root / "pki")
    broker = PrivateBroker(
        root / "node", cookie_home=home,
        plugins=("rabbitmq_management", "rabbitmq_auth_mechanism_ssl"),
    )  # fmt: skip
    port = free_port()
    with (broker.root / "rabbitmq.conf").open("a") as conf:
        conf.write(tls_lines(pki, port))
    try:
        broker.start()
        api = httpx.Client(base_url=broker.management_url + "/api", auth=("guest", "guest"))
        # A node user without any password: it can log in by its certificate only.
        api.put(f"/users/{NODE_USER}", json={"password_hash": "", "tags": ""}).raise_for_status()
        nothing = {"configure": "^$", "write": "^$", "read": "^$"}
        api.put(f"/permissions/%2F/{NODE_USER}", json=nothing).raise_for_status()
        api.close()
        yield broker, pki, port
    finally:
        broker.close()
        shutil.rmtree(root, ignore_errors=True)


def connect(pki: Pki, port: int, *, client_cert: bool) -> pika.BlockingConnection:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(str(pki.client[0]), str(pki.client[1]))
    params = pika.ConnectionParameters(
        host="localhost", port=port, virtual_host="/",
        credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1, socket_timeout=10,
    )  # fmt: skip
    return pika.BlockingConnection(params)


def test_a_node_logs_in_over_tls_by_its_certificate_alone(
    tls_broker: tuple[PrivateBroker, Pki, int],
) -> None:
    broker, pki, port = tls_broker
    conn = connect(pki, port, client_cert=True)
    try:
        assert conn.is_open
        conn.channel().close()
    finally:
        conn.close()
    response = httpx.get(broker.management_url + "/api/whoami", auth=("guest", "guest"))
    assert response.status_code == 200  # the management API itself still answers operators


def test_the_tls_listener_refuses_a_client_without_a_certificate(
    tls_broker: tuple[PrivateBroker, Pki, int],
) -> None:
    _, pki, port = tls_broker
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, OSError)):
        connect(pki, port, client_cert=False).close()
