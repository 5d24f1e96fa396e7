"""TLS settings the server and the gateway share: the certificate they present, and for mutual TLS the CA bundle
clients' certificates are checked against. uvicorn does the handshake; this only validates and hands them over."""
from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """HTTPS for a listening socket. Invalid values raise ValueError naming the field."""
    certfile: str                      # PEM certificate chain the server presents
    keyfile: str | None = None         # its private key (None: inside certfile)
    ca_certs: str | None = None        # PEM bundle of the CAs whose client certificates are accepted (mTLS)
    cert_reqs: str = "none"            # client certificates: none, optional or required

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "ca_certs"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: no such file {path!r}")
        if self.cert_reqs not in CERT_REQS:
            raise ValueError(f"cert_reqs: one of {', '.join(CERT_REQS)} expected, got {self.cert_reqs!r}")
        if self.cert_reqs != "none" and self.ca_certs is None:
            raise ValueError("ca_certs: client certificates can be checked only against a CA bundle")

    def uvicorn_options(self) -> dict:
        """The keyword arguments of uvicorn.Config / uvicorn.run."""
        return {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile, "ssl_ca_certs": self.ca_certs,
                "ssl_cert_reqs": CERT_REQS[self.cert_reqs]}


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS (HTTPS)")
    group.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    group.add_argument("--ssl-keyfile", default=None, help="the certificate's private key (PEM)")
    group.add_argument("--ssl-ca-certs", default=None,
                       help="mutual TLS: PEM bundle of the CAs that sign accepted client certificates")
    group.add_argument("--ssl-cert-reqs", default="none", choices=list(CERT_REQS),
                       help="client certificates: none (default), optional or required (with --ssl-ca-certs)")


def tls_config(args: argparse.Namespace) -> TLSConfig | None:
    """The TLSConfig the flags ask for; None without --ssl-certfile. ValueError names the bad field."""
    if args.ssl_certfile is None:
        if args.ssl_keyfile or args.ssl_ca_certs or args.ssl_cert_reqs != "none":
            raise ValueError("certfile: the TLS flags need --ssl-certfile")
        return None
    return TLSConfig(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs, args.ssl_cert_reqs)
