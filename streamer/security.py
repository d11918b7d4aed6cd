"""ZeroMQ CURVE encryption and authentication for n2a's sockets, from ``zmq.auth`` key files.

A key directory (made by :func:`make_keys` or ``n2a-stream --make-keys DIR``) holds::

    server.key, server.key_secret        the publishing side of each link (n2a-replay or the
                                         acquisition program; n2a-stream's output socket)
    client.key, client.key_secret        the connecting side (n2a-stream's input; viewers)
    authorized_clients/*.key             public keys a server lets in

Servers run a ZAP authenticator that admits only the public keys in ``authorized_clients/``; every
byte on an authenticated link is encrypted. A client without the right keys never completes the
handshake and receives nothing.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["CurveKeys", "make_keys", "start_authenticator"]


@dataclass(frozen=True)
class CurveKeys:
    """The keys of one key directory (secret keys are ``None`` when their file is absent)."""

    directory: Path
    server_public: bytes
    server_secret: bytes | None
    client_public: bytes | None
    client_secret: bytes | None

    @property
    def authorized_dir(self) -> Path:
        return self.directory / "authorized_clients"

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CurveKeys:
        """Read a key directory; needs at least ``server.key``.

        Raises
        ------
        FileNotFoundError
            When the directory or ``server.key`` is missing, naming what was expected.
        """
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq has no CURVE support (expected zmq.has('curve'))")
        d = Path(directory)
        if not (d / "server.key").is_file() and not (d / "server.key_secret").is_file():
            raise FileNotFoundError(
                f"--curve-keys {d}: expected server.key (and client.key_secret / "
                f"server.key_secret as the role needs; make them with n2a-stream --make-keys DIR) "
                f"(got {sorted(p.name for p in d.iterdir()) if d.is_dir() else 'no such directory'})")

        def pair(name: str) -> tuple[bytes | None, bytes | None]:
            secret_file, public_file = d / f"{name}.key_secret", d / f"{name}.key"
            if secret_file.is_file():
                return zmq.auth.load_certificate(secret_file)
            if public_file.is_file():
                return zmq.auth.load_certificate(public_file)
            return None, None

        server_public, server_secret = pair("server")
        client_public, client_secret = pair("client")
        return cls(directory=d, server_public=server_public, server_secret=server_secret,
                   client_public=client_public, client_secret=client_secret)

    def configure_server(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (call before bind)."""
        if self.server_secret is None:
            raise FileNotFoundError(f"a CURVE server needs {self.directory / 'server.key_secret'} "
                                    f"(got only the public key)")
        socket.curve_secretkey = self.server_secret
        socket.curve_publickey = self.server_public
        socket.curve_server = True

    def configure_client(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server key (call before connect)."""
        if self.client_secret is None or self.client_public is None:
            raise FileNotFoundError(f"a CURVE client needs {self.directory / 'client.key_secret'} "
                                    f"(got none)")
        socket.curve_secretkey = self.client_secret
        socket.curve_publickey = self.client_public
        socket.curve_serverkey = self.server_public


def start_authenticator(context: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """Start a ZAP handler on ``context`` admitting the keys in ``authorized_clients/``.

    The caller must ``stop()`` it before terminating the context.
    """
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def make_keys(directory: str | os.PathLike, *, clients: tuple[str, ...] = ("client",)) -> Path:
    """Create a server key pair, client key pairs and ``authorized_clients/`` with the clients.

    Returns the directory. Existing key files are left as they are.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    auth_dir = d / "authorized_clients"
    auth_dir.mkdir(exist_ok=True)
    for name in ("server", *clients):
        if not (d / f"{name}.key_secret").is_file():
            zmq.auth.create_certificates(d, name)
        if name != "server":
            shutil.copy(d / f"{name}.key", auth_dir / f"{name}.key")
    return d
