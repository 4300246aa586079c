"""Files only this user may read: passwords, keys, configs that hold them."""
from __future__ import annotations

import os
from pathlib import Path


def private_file(path: Path, data: str | bytes) -> None:
    """Write `data` to `path`, readable by this user only (0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.chmod(path, 0o600)
