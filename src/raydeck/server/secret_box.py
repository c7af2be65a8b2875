"""Encryption at rest for stored secrets: connection secrets and clusters' Ray auth tokens
(Fernet: AES-128-CBC + HMAC-SHA256).

The key lives in ``$RAYDECK_SECRET_KEY_FILE`` (default ``$RAYDECK_HOME/secret.key``, mode 600),
created on first use. Server replicas sharing one database must share this file; losing it
makes stored secrets unreadable (connections then need their secret set again).
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from raydeck.core.errors import FailedPreconditionError

__all__ = ["SecretBox", "secret_box"]


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR
                )
            except FileExistsError:
                pass  # another process created it first: use theirs
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise FailedPreconditionError(
                "a stored secret cannot be decrypted with this server's key "
                "(RAYDECK_SECRET_KEY_FILE changed?); set the connection's secret again "
                "(a cluster's Ray token: recreate the cluster)",
                field="secret",
            ) from exc


@lru_cache(maxsize=4)
def secret_box(key_path: Path) -> SecretBox:
    """The box for the key at ``key_path`` (created on first use), one per key file."""
    return SecretBox.from_key_file(key_path)
