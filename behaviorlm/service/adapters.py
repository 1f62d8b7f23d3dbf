"""Which adapters the service loads, under which names, and which one is the default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from behaviorlm.errors import InputError
from behaviorlm.manifest import MANIFEST_FILE
from behaviorlm.service.settings import PREFERRED_DEFAULTS


def discover_adapters(models_dir: Path, wanted: Sequence[str]) -> dict[str, Path]:
    """Served name -> adapter directory.

    ``wanted`` entries are 'name=path' or a path relative to ``models_dir`` (named by that
    path). Without entries: every ``models_dir/*/manifest.json`` and
    ``models_dir/*/*/manifest.json``, named by their directory relative to ``models_dir``
    (e.g. 'demo', 'ct-pj-demo/stage2').
    """
    if wanted:
        out: dict[str, Path] = {}
        for entry in wanted:
            name, sep, raw = entry.partition("=")
            path = resolve_inside(models_dir, raw if sep else entry)
            if not (path / MANIFEST_FILE).exists():
                raise InputError(f"BEHAVIORLM_ADAPTERS: {entry!r}: no {MANIFEST_FILE} in {path}")
            out[name if sep else entry.strip("/")] = path
        return out
    if not models_dir.is_dir():
        raise InputError(f"BEHAVIORLM_MODELS_DIR: {models_dir} is not a directory")
    manifests = sorted(models_dir.glob(f"*/{MANIFEST_FILE}")) + sorted(
        models_dir.glob(f"*/*/{MANIFEST_FILE}")
    )
    return {m.parent.relative_to(models_dir).as_posix(): m.parent for m in manifests}


def pick_default(names: Sequence[str], configured: str | None) -> str:
    """The configured default (must be loaded), else a preferred demo name, else the first."""
    if not names:
        raise InputError("no adapters loaded")
    if configured is not None:
        if configured not in names:
            raise InputError(
                f"BEHAVIORLM_DEFAULT_ADAPTER: {configured!r} is not loaded; loaded: {sorted(names)}"
            )
        return configured
    for name in PREFERRED_DEFAULTS:
        if name in names:
            return name
    stage2 = sorted(n for n in names if n.endswith("/stage2"))
    return stage2[0] if stage2 else sorted(names)[0]


def resolve_inside(models_dir: Path, raw: str) -> Path:
    """An adapter path: relative to ``models_dir``, or absolute but inside it (the admin API
    must not load arbitrary files from the server's disk)."""
    root = models_dir.resolve()
    path = Path(raw)
    path = (path if path.is_absolute() else root / path).resolve()
    if path != root and root not in path.parents:
        raise InputError(f"adapter path {raw!r} is outside the models directory {root}")
    return path
