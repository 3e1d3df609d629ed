"""AWS credentials for the programs: none needed on loopback, one readable line when missing.

The local cloud (moto's server, the Lambda emulator, SeaweedFS in tests) accepts any
credentials, yet botocore refuses to sign a request without some; a new laptop has none. So
when *every* endpoint a program talks to is a loopback address and the standard chain
(environment, shared files, profile) holds nothing, fixed dummy credentials are put into the
environment — of this process, hence of every process it starts. Never for any other endpoint:
against AWS, missing credentials stay missing and the commands say so in one line
(`missing_credentials_exit`), exit status `EX_NOPERM` (77).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

# sysexits.h "permission denied": no credentials to act with. Not 78 (EX_CONFIG): systemd
# does not restart on 78, and on an EC2-like VM the instance role may just not be ready yet.
EX_NOPERM = 77

LOCAL_ACCESS_KEY_ID = "local"
# Not a secret: moto ignores it. Long enough to look like a key to the SDKs.
LOCAL_SECRET_ACCESS_KEY = "local-not-a-secret"  # noqa: S105 - a fixed dummy for loopback only

MISSING_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or run where an instance role provides them; for the local cloud, "
    "set HYBRID_ENDPOINT_URL to its loopback URL (see var/local-cloud.env)"
)


def is_loopback(endpoint_url: str | None) -> bool:
    """True for http(s)://127.x.x.x, [::1] or localhost URLs; False for None (that is AWS)."""
    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chain_has_static_credentials(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Credentials a person configured (env or shared files), without asking any network."""
    if environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"):
        return True
    home = Path(environ.get("HOME") or Path.home())
    files = [
        environ.get("AWS_SHARED_CREDENTIALS_FILE") or str(home / ".aws" / "credentials"),
        environ.get("AWS_CONFIG_FILE") or str(home / ".aws" / "config"),
    ]
    return any(Path(f).is_file() for f in files)


def use_local_credentials_for_loopback(*endpoint_urls: str | None) -> bool:
    """Put dummy credentials into os.environ if every endpoint is loopback and none are set.

    Returns whether it did. Call it once the endpoints are known (settings loaded).
    """
    if not endpoint_urls or not all(is_loopback(url) for url in endpoint_urls):
        return False
    if _chain_has_static_credentials(os.environ):
        return False
    os.environ["AWS_ACCESS_KEY_ID"] = LOCAL_ACCESS_KEY_ID
    os.environ["AWS_SECRET_ACCESS_KEY"] = LOCAL_SECRET_ACCESS_KEY
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return True


def require_credentials(*endpoint_urls: str | None) -> None:
    """Raise NoCredentialsError now unless the chain resolves (or every endpoint is loopback).

    For long-running programs: the daemon would otherwise start and fail every request later.
    """
    if endpoint_urls and all(is_loopback(url) for url in endpoint_urls):
        return
    import botocore.session
    from botocore.exceptions import NoCredentialsError

    if botocore.session.get_session().get_credentials() is None:
        raise NoCredentialsError


def is_missing_credentials(error: BaseException) -> bool:
    """botocore's NoCredentialsError/PartialCredentialsError, also when wrapped (TaskGroups)."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    seen: list[BaseException] = [error]
    visited: set[int] = set()
    while seen:
        current = seen.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, NoCredentialsError | PartialCredentialsError):
            return True
        if isinstance(current, BaseExceptionGroup):
            seen.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                seen.append(linked)
    return False


@contextmanager
def missing_credentials_exit(prog: str) -> Iterator[None]:
    """Turn missing AWS credentials into one line on stderr and exit status 77."""
    try:
        yield
    except Exception as error:
        if not is_missing_credentials(error):
            raise
        print(f"{prog}: {MISSING_CREDENTIALS}", file=sys.stderr)
        raise SystemExit(EX_NOPERM) from None


def guarded(prog: str, main: Callable[[], int]) -> int:
    """`main()` with missing credentials as one readable line (exit 77)."""
    with missing_credentials_exit(prog):
        return main()


__all__ = [
    "EX_NOPERM",
    "LOCAL_ACCESS_KEY_ID",
    "LOCAL_SECRET_ACCESS_KEY",
    "MISSING_CREDENTIALS",
    "guarded",
    "is_loopback",
    "is_missing_credentials",
    "missing_credentials_exit",
    "require_credentials",
    "use_local_credentials_for_loopback",
]
