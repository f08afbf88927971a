"""Writing files: the one :func:`atomic_write`.

A reader never sees a half-written file, an interrupted or failed write leaves the old file (or none) and no
temporary file behind, a new file gets the mode the umask gives (``0o666 & ~umask``, like ``open``), and an
overwritten file keeps its mode.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, "hi").read_text()
    'hi'
    >>> atomic_write(p, lambda tmp: tmp.write_bytes(b"by a writer")).read_bytes()
    b'by a writer'
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], data: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    ``data`` is text (UTF-8), bytes, or a function that fills the temporary path it is given (for writers that
    want a file name: ``fig.savefig``, ``safetensors.save_file``). The temporary file lies beside ``path`` (same
    file system, so the final rename is atomic); missing parent directories are created.

    Raises:
        TypeError: ``data`` is none of the three.
        OSError: the directory cannot be written (nothing is left behind).
    """
    if not isinstance(data, str | bytes) and not callable(data):
        raise TypeError(f"atomic_write needs str, bytes or a writer function, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str | bytes):
                f.write(data.encode() if isinstance(data, str) else data)
        if callable(data):
            data(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
