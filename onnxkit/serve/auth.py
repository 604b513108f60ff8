"""Optional API-key authentication: `Authorization: Bearer KEY` on every endpoint but health.

The key comes from `--api-key` or the ONNXKIT_API_KEY environment variable and is
compared in constant time (`hmac.compare_digest`), so response timing reveals nothing
about it. Health endpoints stay open for load balancers and orchestrators.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from onnxkit.errors import OnnxkitError

API_KEY_ENV = "ONNXKIT_API_KEY"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def api_key(option: str | None) -> str | None:
    """The key to require: `option`, else $ONNXKIT_API_KEY, else None (no authentication)."""
    key = option if option is not None else os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise OnnxkitError(f"the API key is empty; give a non-empty --api-key or {API_KEY_ENV}, or neither")
    return key


def authorized(authorization: bytes | None, key: str) -> bool:
    """True when an Authorization header value is `Bearer <key>`."""
    scheme, _, given = (authorization or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key.encode())


def exposure_warning(host: str, key: str | None) -> str | None:
    """A warning when `host` is reachable from other machines and no key is set."""
    if key is not None or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name: assume it is reachable
    return (
        f"warning: serving on {host} without an API key: anyone who can reach this port can use the models; "
        f"set --api-key or {API_KEY_ENV}"
    )
