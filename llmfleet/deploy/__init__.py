"""Deployment beside the request path: Kubernetes manifests (kustomize base and overlays) rendered from fleet.yaml."""
