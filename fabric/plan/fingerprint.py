"""Canonical JSON, content fingerprints and keyed fingerprints for secrets.  [pure]"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(value: object) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def key_id(key: bytes) -> str:
    """A short public name for a key, so a stored fingerprint says which key made it."""
    return hashlib.sha256(b"fabric-key-id\0" + key).hexdigest()[:8]


def secret_fingerprint(key: bytes, plaintext: str) -> str:
    """`<key id>:<HMAC-SHA256>`: detects a changed secret without storing or showing it."""
    digest = hmac.new(key, b"fabric-secret-fp\0" + plaintext.encode(), hashlib.sha256)
    return f"{key_id(key)}:{digest.hexdigest()}"


def record_fingerprint(spec: Any, secrets: Any, protect: bool) -> str:
    """Fingerprint of a stored record: its spec, its secrets' keyed fingerprints, protect."""
    return fingerprint({"spec": spec, "secrets": secrets, "protect": protect})
