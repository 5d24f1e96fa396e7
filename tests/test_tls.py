"""HTTPS end to end with certificates made here (`cryptography`): a real `llmfleet serve` over TLS, a real
`llmfleet gateway` that verifies it with `--replica-ca-certs` and asks its own clients for certificates (mutual
TLS); a gateway without the CA bundle refuses the replica; the flags' errors name their field."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from types import SimpleNamespace

import httpx
import pytest

from llmfleet.entrypoints.cli import build_parser
from llmfleet.protocol.tls import TLSConfig, tls_config

try:
    from fleet_procs import gateway_proc, replica, wait_until
except ImportError:  # tests/ imported as a package
    from tests.fleet_procs import gateway_proc, replica, wait_until


def _issue(folder, name: str, issuer=None, server: bool = True):
    """A key and certificate (PEM files); self-signed CA when `issuer` is None, else signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1)))
    if issuer is None:
        builder = builder.issuer_name(subject).add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        signer = key
    else:
        builder = builder.issuer_name(issuer.cert.subject)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False)
        signer = issuer.key
    cert = builder.sign(signer, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return SimpleNamespace(key=key, cert=cert, cert_path=str(cert_path), key_path=str(key_path))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue(folder, "test-ca")
    return SimpleNamespace(ca=ca, server=_issue(folder, "server", ca), client=_issue(folder, "client", ca, False))


def _context(pki, with_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca.cert_path)
    if with_client_cert:
        context.load_cert_chain(pki.client.cert_path, pki.client.key_path)
    return context


def test_https_replica_behind_a_mutual_tls_gateway(tiny_checkpoint, pki):
    tls = ("--ssl-certfile", pki.server.cert_path, "--ssl-keyfile", pki.server.key_path)
    rep = replica(tiny_checkpoint("llama"), kv_events=False, extra=tls, scheme="https",
                  verify=_context(pki, False)).start()
    gateways = []
    try:
        rep.wait_ready(240)
        with pytest.raises(httpx.ConnectError):  # a client that does not know the CA refuses the replica
            httpx.get(rep.url + "/health", timeout=5)
        mtls = ("--ssl-ca-certs", pki.ca.cert_path, "--ssl-cert-reqs", "required")
        gw = gateway_proc([rep.url], "--replica-ca-certs", pki.ca.cert_path, *tls, *mtls, scheme="https",
                          verify=_context(pki, True))
        gateways.append(gw.start())
        gw.wait_ready(60)
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 3, "ignore_eos": True}
        answer = httpx.post(gw.url + "/v1/completions", json=body, verify=_context(pki, True), timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(gw.url + "/v1/completions", json=body, verify=_context(pki, False), timeout=10)
        blind = gateway_proc([rep.url])  # no CA bundle: the replica's certificate does not verify
        gateways.append(blind.start())
        wait_until(lambda: _status(blind.url) == 503, 30, poll=0.2)
        assert _status(blind.url) == 503 and httpx.get(blind.url + "/health").status_code == 200
    finally:
        for proc in [rep, *gateways]:
            proc.kill()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_tls_flags_and_their_errors(tmp_path, pki):
    args = build_parser().parse_args(["gateway", "--replica", "https://r:1", "--ssl-certfile", pki.server.cert_path,
                                      "--ssl-keyfile", pki.server.key_path])
    assert tls_config(args).uvicorn_options()["ssl_certfile"] == pki.server.cert_path
    with pytest.raises(ValueError, match="^certfile"):
        tls_config(build_parser().parse_args(["gateway", "--ssl-keyfile", pki.server.key_path]))
    with pytest.raises(ValueError, match="^keyfile"):
        TLSConfig(pki.server.cert_path, str(tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="^ca_certs"):
        TLSConfig(pki.server.cert_path, pki.server.key_path, cert_reqs="required")
    from llmfleet.gateway.config import GatewayConfig, ReplicaConfig

    with pytest.raises(ValueError, match="^replica_ca_certs"):
        GatewayConfig(replicas=(ReplicaConfig("https://r:1"),), replica_ca_certs=str(tmp_path / "none.pem"))
