"""Large byte strings kept as files of their own beside an SQLite database.

SQLite writes a 10 MB blob through its WAL page by page (and copies it again at
the checkpoint): ~40-70 ms, where a file takes a few. The endpoint's result spool
and the service's task store keep bodies over ``MIN_BYTES`` here and a flag in
their row. Files are named by a hash of their key (keys come off the wire, so a
key can name nothing but a file in this folder), written to a ``.part`` file
and renamed, so a crash leaves a whole file or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

MIN_BYTES = 256 * 1024


class BlobFolder:
    def __init__(self, path: Path) -> None:
        """Raises OSError when the folder cannot be made."""
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def file(self, key: str) -> Path:
        return self.path / hashlib.sha256(key.encode()).hexdigest()

    def write(self, key: str, data: bytes) -> None:
        """Raises OSError (disk full, read-only) having left nothing behind."""
        final = self.file(key)
        part = final.with_name(final.name + ".part")
        try:
            with open(part, "wb") as f:
                f.write(data)
            os.replace(part, final)
        except OSError:
            with contextlib.suppress(OSError):
                part.unlink()
            raise

    def read(self, key: str) -> bytes:
        """Raises OSError when the file is gone or unreadable."""
        return self.file(key).read_bytes()

    def remove(self, keys: Iterable[str]) -> None:
        """Best effort: a file left behind goes at the next ``keep_only``."""
        for key in keys:
            with contextlib.suppress(OSError):
                self.file(key).unlink()

    def keep_only(self, keys: Iterable[str]) -> int:
        """Delete every file but those of ``keys`` (orphans of a crash, half-written
        files); returns how many went."""
        wanted = {self.file(k).name for k in keys}
        gone = 0
        for f in self.path.iterdir():
            if f.name not in wanted:
                with contextlib.suppress(OSError):
                    f.unlink()
                    gone += 1
        return gone
