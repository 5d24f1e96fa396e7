"""How the gateway reaches the Kubernetes API server: in a pod, with its service account; outside, through a URL.

In a pod the API server is https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, verified with the service
account's ca.crt, and every request carries the account's token, read again before each list or watch because
bound tokens rotate (about hourly) while the process lives on. `LLMFLEET_KUBERNETES_API` (for example the
`kubectl proxy` address http://127.0.0.1:8001) points the gateway at an API server from outside the cluster;
`LLMFLEET_KUBERNETES_TOKEN_FILE` adds a bearer token to that.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SCHEME = "k8s://"
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")   # what Service names must be (RFC 1035)
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """A Kubernetes Service whose ready endpoints are replicas: `SERVICE[.NAMESPACE]`, or `k8s://` and that."""
    name: str
    namespace: str | None = None        # None: the gateway's own namespace

    @classmethod
    def parse(cls, text: str, field: str = "discover_k8s") -> "ServiceRef":
        """ValueError names `field` when `text` is no Service name."""
        if not isinstance(text, str):
            raise ValueError(f"{field}: must be a Service name SERVICE[.NAMESPACE], got {text!r}")
        name, _, namespace = text.removeprefix(SCHEME).partition(".")
        if not _DNS_LABEL.fullmatch(name) or (namespace and not _NAMESPACE.fullmatch(namespace)):
            raise ValueError(f"{field}: {text!r} is not SERVICE[.NAMESPACE] (lower-case DNS labels)")
        return cls(name, namespace or None)

    @property
    def source(self) -> str:
        """How replicas found through this Service are tagged, and how fleet.yaml's versions name it."""
        return SCHEME + self.name + (f".{self.namespace}" if self.namespace else "")


@dataclass(frozen=True, slots=True)
class KubernetesAPI:
    base_url: str                       # https://10.96.0.1:443, or http://127.0.0.1:8001 (kubectl proxy)
    token_file: str | None = None       # a bearer token, re-read for every list and watch
    ca_file: str | None = None          # the API server's CA bundle (None: the system's, or plain http)
    namespace: str = "default"          # the pod's own: services named without a namespace are looked up there

    def headers(self) -> dict[str, str]:
        """Request headers with the current token (a rotated token is picked up here)."""
        headers = {"accept": "application/json"}
        if self.token_file is not None:
            token = Path(self.token_file).read_text(encoding="utf-8").strip()
            headers["authorization"] = f"Bearer {token}"
        return headers

    def verify(self) -> bool | str:
        return self.ca_file if self.ca_file is not None else True

    def endpoint_slices_path(self, namespace: str) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None,
                         account: Path = SERVICE_ACCOUNT) -> "KubernetesAPI":
        """The API server this process should use; ValueError when it is neither in a pod nor pointed at one."""
        env = os.environ if environ is None else environ
        namespace_file = account / "namespace"
        namespace = namespace_file.read_text(encoding="utf-8").strip() if namespace_file.is_file() else "default"
        url = env.get("LLMFLEET_KUBERNETES_API")
        if url:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"LLMFLEET_KUBERNETES_API: must start with http:// or https://, got {url!r}")
            return cls(url.rstrip("/"), env.get("LLMFLEET_KUBERNETES_TOKEN_FILE") or None, None, namespace)
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("discover_k8s: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset) and "
                             "LLMFLEET_KUBERNETES_API names no API server")
        token, ca = account / "token", account / "ca.crt"
        if not token.is_file():
            raise ValueError(f"discover_k8s: no service-account token at {token} (automountServiceAccountToken "
                             "must stay on for the gateway's pod)")
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", str(token), str(ca) if ca.is_file() else None, namespace)
