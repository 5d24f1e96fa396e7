"""`llmfleet deploy render --config fleet.yaml --out DIR [--overlay cpu|gpu|multi-gpu] [--built]`.

Writes DIR/base and DIR/overlays/OVERLAY (every overlay unless --overlay names some) for `kubectl apply -k
DIR/overlays/OVERLAY`; --built also writes DIR/built/OVERLAY.yaml, base and overlay merged, for `kubectl apply -f`
where no kustomize is at hand. Import-light: PyYAML and the deploy modules load only in `run`.
"""
from __future__ import annotations

import argparse
import sys

OVERLAY_NAMES = ("cpu", "gpu", "multi-gpu")


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help="Kubernetes manifests for the fleet",
                                   description="Deployment files built from fleet.yaml.")
    actions = parser.add_subparsers(dest="action", required=True)
    render = actions.add_parser("render", help="write the kustomize base and overlays",
                                description="Write Kubernetes manifests (kustomize base and overlays) from "
                                            "fleet.yaml's gateway settings and its deployment section.")
    render.add_argument("--config", required=True, help="fleet.yaml (gateway settings and `deployment:`)")
    render.add_argument("--out", required=True, help="folder to write base/ and overlays/ into")
    render.add_argument("--overlay", action="append", choices=OVERLAY_NAMES, default=None,
                        help="overlay to write (repeat; default: all three)")
    render.add_argument("--built", action="store_true",
                        help="also write built/OVERLAY.yaml: base and overlay merged, for kubectl apply -f")
    return parser


def run(args: argparse.Namespace) -> int:
    """0 when written; 2 when fleet.yaml is invalid (the message names the field)."""
    from llmfleet.deploy.render import built, dump, load, tree, write

    overlays = tuple(dict.fromkeys(args.overlay or OVERLAY_NAMES))
    try:
        spec, text = load(args.config)
    except (ValueError, OSError) as exc:
        print(f"llmfleet deploy: error: {exc}", file=sys.stderr)
        return 2
    files = tree(spec, text, overlays)
    if args.built:
        files.update({f"built/{o}.yaml": dump(built(spec, text, o)) for o in overlays})
    written = write(args.out, files, overlays)
    print(f"wrote {len(written)} files under {args.out}: kubectl apply -k {args.out}/overlays/{overlays[0]}")
    return 0
