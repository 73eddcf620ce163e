"""Secrets generated on first start of the embedded default, kept 0600 under IOU_DATA_DIR."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_secret(data_dir: Path, name: str, prefix: str = "") -> str:
    """Read ``data_dir/name``, creating it (mode 0600, never overwritten) when missing."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / name
    value = prefix + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
