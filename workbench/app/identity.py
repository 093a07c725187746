"""Who is using the app, decided on the server: a session's pseudonymous subject id.

Identity comes from the server side only (docs/PRIVACY.md, "The app"), never from a field the page
sends. In order:

1. the Hugging Face account of an OAuth login on Spaces (``gr.OAuthProfile``, with ``gr.LoginButton``);
2. the user name of a ``workbench app --auth USER:PASSWORD`` login (``request.username``);
3. otherwise the browser session (``request.session_hash``, new on every page load): anonymous.

The subject id is ``app-u-`` (logged in) or ``app-s-`` (anonymous) followed by 16 hex digits of
HMAC-SHA256(secret, identity). A user name never becomes a path, and without the secret nobody can work
out another user's id. The secret is ``$WORKBENCH_APP_SECRET``, or a random key made once in
``$WORKBENCH_HOME/keys/app-identity.secret`` (mode 0600), so a logged-in user finds their subject again
after a reload or a restart. Deleting that file unlinks every user from their data (retention then
deletes it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from workbench import paths

SECRET_ENV = "WORKBENCH_APP_SECRET"
SECRET_FILE = "app-identity.secret"  # in the data root's keys/ folder (bookkeeping, never served)
LOGGED_IN, ANONYMOUS = "app-u-", "app-s-"


@dataclass(frozen=True)
class Identity:
    subject_id: str  # pseudonymous: the only form of the identity that reaches the library
    logged_in: bool  # True: kept across reloads; False: erased when the browser session ends
    how: str  # "Hugging Face login", "password login" or "browser session" (for the page, no name)


def secret_path() -> Path:
    return paths.home() / "keys" / SECRET_FILE


def secret() -> bytes:
    """The HMAC key: ``$WORKBENCH_APP_SECRET``, else the data root's key file (created on first use)."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    path = secret_path()
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonym(prefix: str, key: str) -> str:
    return prefix + hmac.new(secret(), key.encode(), hashlib.sha256).hexdigest()[:16]


def identify(request, profile=None) -> Identity:
    """The identity of the session behind ``request`` (a ``gr.Request``); ``profile``: its ``gr.OAuthProfile``.

    Raises ``ValueError`` when there is no session to tie the data to.
    """
    if profile is not None and getattr(profile, "username", None):
        return Identity(pseudonym(LOGGED_IN, "hf:" + profile.username), True, "Hugging Face login")
    if request is None:
        raise ValueError("no session: open the app in a browser (or a gradio_client.Client)")
    user = getattr(request, "username", None)
    if user:
        return Identity(pseudonym(LOGGED_IN, "user:" + str(user)), True, "password login")
    session = getattr(request, "session_hash", None)
    if not session:
        raise ValueError("no session id: reload the page")
    return Identity(pseudonym(ANONYMOUS, "session:" + str(session)), False, "browser session")


def is_anonymous_subject(subject_id: str) -> bool:
    return subject_id.startswith(ANONYMOUS)
