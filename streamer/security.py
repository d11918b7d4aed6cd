"""ZeroMQ CURVE encryption and authentication for n2a's sockets, from ``zmq.auth`` key files.

n2a has two links, each with its own key set, so that a key handed to a viewer cannot subscribe to
the raw acquisition stream. ``n2a-stream --make-keys DIR`` (:func:`make_keys`) writes::

    DIR/acquisition/   scan system (server) -> n2a-stream's input (client)
    DIR/viewer/        n2a-stream's output (server) -> viewers (clients)

and in each link directory::

    server.key, server.key_secret        the publishing side of the link
    client.key, client.key_secret        the connecting side
    authorized_clients/*.key             public keys the server lets in

What each machine needs (copy nothing else there):

=============  ==============================================================================
scan system    ``acquisition/server.key_secret``, ``acquisition/authorized_clients/``
n2a-stream     ``acquisition/server.key``, ``acquisition/client.key_secret``,
               ``viewer/server.key_secret``, ``viewer/authorized_clients/``
viewer         ``viewer/server.key``, ``viewer/client.key_secret``
=============  ==============================================================================

Servers run a ZAP authenticator that admits only the public keys in the link's
``authorized_clients/``; every byte on an authenticated link is encrypted. A client without the
right keys never completes the handshake and receives nothing.

Secret keys are written mode 0600 in 0700 directories, and a secret key file that group or others
can read is refused (:class:`InsecureKeyError`), as ``ssh`` refuses a readable private key.

Every key problem raises :class:`CurveKeyError` (a ``ValueError``) with one line saying which file
was expected and what was found; ``n2a-stream``, ``n2a-replay``, ``n2a-watch`` and ``n2a-view`` load
their keys here and report it the same way. The viewer imports this module (it is light: ``zmq``
only).
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = ["LINKS", "CurveKeyError", "CurveKeys", "InsecureKeyError", "check_secret_file",
           "link_keys", "make_keys", "start_authenticator"]

Link = Literal["acquisition", "viewer"]
LINKS: tuple[Link, ...] = ("acquisition", "viewer")
_Z85_KEY_LENGTH = 40  # a 32-byte CURVE key, Z85-encoded, as zmq.auth writes it


class CurveKeyError(ValueError):
    """A CURVE key directory is missing, incomplete, unsafe or holds an unreadable key file."""


class InsecureKeyError(CurveKeyError):
    """A secret key file that group or others can read (or a key directory they can enter)."""


def _listing(d: Path) -> str:
    try:
        return str(sorted(p.name for p in d.iterdir())) if d.is_dir() else "no such directory"
    except OSError as e:
        return f"an unreadable directory: {e}"


def _check_curve(d: Path) -> None:
    if not zmq.has("curve"):
        raise CurveKeyError(f"--curve-keys {d}: expected a libzmq with CURVE support (got "
                            f"libzmq {zmq.zmq_version()} without it)")


def _read_key_file(path: Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    """Read one ``zmq.auth`` key file and check its keys look like Z85 CURVE keys."""
    what = ("a zmq.auth key file with public-key and secret-key" if need_secret
            else "a zmq.auth key file with a public-key")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"--curve-keys: expected {what} in {path} "
                            f"(got {type(e).__name__}: {e})") from e
    if need_secret and secret is None:
        raise CurveKeyError(f"--curve-keys: expected {what} in {path} (got no secret-key)")
    for name, key in (("public-key", public), ("secret-key", secret)):
        if key is None:
            continue
        try:
            valid = len(key) == _Z85_KEY_LENGTH and len(z85.decode(key)) == 32
        except (KeyError, ValueError):  # z85.decode raises KeyError on a character outside Z85
            valid = False
        if not valid:
            raise CurveKeyError(f"--curve-keys: expected a {_Z85_KEY_LENGTH}-character Z85 {name} "
                                f"in {path} (got {len(key)} characters that are not a Z85 key)")
    return public, secret


def check_secret_file(path: str | os.PathLike) -> None:
    """Raise :class:`InsecureKeyError` when group or others may read or write a secret key file."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InsecureKeyError(
            f"secret key {path} is open to group or others (expected mode 0600, got "
            f"{mode:04o}); anyone who can read it can join the link: chmod 600 {path}")


@dataclass(frozen=True)
class CurveKeys:
    """The keys of one link directory (secret keys are ``None`` when their file is absent)."""

    directory: Path
    server_public: bytes
    server_secret: bytes | None = field(repr=False)
    client_public: bytes | None
    client_secret: bytes | None = field(repr=False)

    @property
    def authorized_dir(self) -> Path:
        return self.directory / "authorized_clients"

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CurveKeys:
        """Read one link's key directory (e.g. ``DIR/viewer``); needs at least ``server.key``.

        Raises
        ------
        CurveKeyError
            When the directory or ``server.key`` is missing or a key file is not a CURVE key,
            naming what was expected (:class:`InsecureKeyError` when a secret key file present is
            readable by group or others).
        """
        d = Path(directory)
        _check_curve(d)
        if not (d / "server.key").is_file() and not (d / "server.key_secret").is_file():
            raise CurveKeyError(
                f"--curve-keys {d}: expected server.key (and client.key_secret / "
                f"server.key_secret as the role needs; make them with n2a-stream --make-keys DIR) "
                f"(got {_listing(d)})")

        def pair(name: str) -> tuple[bytes | None, bytes | None]:
            secret_file, public_file = d / f"{name}.key_secret", d / f"{name}.key"
            if secret_file.is_file():
                check_secret_file(secret_file)
                return _read_key_file(secret_file, need_secret=True)
            if public_file.is_file():
                return _read_key_file(public_file, need_secret=False)
            return None, None

        server_public, server_secret = pair("server")
        client_public, client_secret = pair("client")
        return cls(directory=d, server_public=server_public, server_secret=server_secret,
                   client_public=client_public, client_secret=client_secret)

    @classmethod
    def load_client(cls, directory: str | os.PathLike) -> CurveKeys:
        """The keys a CURVE client of the viewer link needs (``n2a-view --curve-keys DIR``).

        ``DIR/viewer`` (or ``DIR`` itself, when it holds the keys) with ``server.key`` (the
        stream's public key) and ``client.key_secret`` (the viewer's own pair, mode 0600, whose
        public half is in the stream's ``viewer/authorized_clients/``).

        Raises
        ------
        CurveKeyError
            A one-line message saying which file was expected and what was found instead.
        """
        d = Path(directory)
        if not d.is_dir():
            got = "a file, not a directory" if d.exists() else "no such directory"
            raise CurveKeyError(f"--curve-keys {d}: expected a key directory made by n2a-stream "
                                f"--make-keys (got {got})")
        if (d / "viewer").is_dir():
            d = d / "viewer"  # the top of a --make-keys folder: the viewer link's keys
        missing = [name for name in ("server.key", "client.key_secret") if not (d / name).is_file()]
        if missing:
            raise CurveKeyError(f"--curve-keys {d}: expected server.key and client.key_secret "
                                f"(make them with n2a-stream --make-keys DIR) (got {_listing(d)}, "
                                f"missing {missing})")
        _check_curve(d)
        check_secret_file(d / "client.key_secret")
        server_public, _ = _read_key_file(d / "server.key", need_secret=False)
        client_public, client_secret = _read_key_file(d / "client.key_secret", need_secret=True)
        return cls(directory=d, server_public=server_public, server_secret=None,
                   client_public=client_public, client_secret=client_secret)

    def configure_server(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (call before bind)."""
        if self.server_secret is None:
            raise CurveKeyError(f"a CURVE server needs {self.directory / 'server.key_secret'} "
                                    f"(got only the public key)")
        socket.curve_secretkey = self.server_secret
        socket.curve_publickey = self.server_public
        socket.curve_server = True

    def configure_client(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server key (call before connect)."""
        if self.client_secret is None or self.client_public is None:
            raise CurveKeyError(f"a CURVE client needs {self.directory / 'client.key_secret'} "
                                    f"(got none)")
        socket.curve_secretkey = self.client_secret
        socket.curve_publickey = self.client_public
        socket.curve_serverkey = self.server_public


def link_keys(directory: str | os.PathLike, link: Link) -> CurveKeys:
    """The key set of one link: ``DIR/<link>/``, or ``DIR`` itself when it is that link's folder.

    Raises
    ------
    CurveKeyError
        When ``DIR`` has no ``<link>/`` folder (a single flat key set, as older n2a versions wrote,
        is refused: it would let a viewer's key subscribe to the acquisition stream).
    """
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS} (got {link!r})")
    d = Path(directory)
    if (d / link).is_dir():
        return CurveKeys.load(d / link)
    if d.name == link and d.is_dir():
        return CurveKeys.load(d)
    raise CurveKeyError(
        f"--curve-keys {d}: expected the {link}/ key folder (DIR/acquisition and DIR/viewer, made "
        f"by n2a-stream --make-keys DIR; one key set for both links is no longer accepted) (got "
        f"{_listing(d)})")


def start_authenticator(context: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """Start a ZAP handler on ``context`` admitting the keys in ``authorized_clients/``.

    The caller must ``stop()`` it before terminating the context.
    """
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask, and an existing folder keeps its own


def make_keys(directory: str | os.PathLike, *, clients: tuple[str, ...] = ("client",)) -> Path:
    """Create the ``acquisition/`` and ``viewer/`` key sets (server pair, client pairs and
    ``authorized_clients/``) under ``directory``.

    Folders are made mode 0700 and secret key files 0600. Returns the directory. Existing key
    files are kept (their modes are tightened).
    """
    d = Path(directory)
    _private_dir(d)
    for link in LINKS:
        ld = d / link
        _private_dir(ld)
        auth_dir = ld / "authorized_clients"
        _private_dir(auth_dir)
        for name in ("server", *clients):
            # The folder is already 0700, so nobody else can open a secret file before its chmod.
            if not (ld / f"{name}.key_secret").is_file():
                zmq.auth.create_certificates(ld, name)
            os.chmod(ld / f"{name}.key_secret", 0o600)
            if name != "server":
                shutil.copy(ld / f"{name}.key", auth_dir / f"{name}.key")
    return d
