"""The Plan value and its serialized document (the saved plan file and `--format json`).  [pure]

The document is the contract: text, markdown and JSON are all rendered from it, and a saved
plan file is that same document. Secret fields reach it as `sensitive: true` with no values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fabric.addresses import Address
from fabric.plan.diff import Action, Change, FieldChange, Target, counts
from fabric.plan.fingerprint import canonical_json, fingerprint, record_fingerprint

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Plan:
    source_hash: str
    """sha256 of the repository files the plan was made from."""
    repo: str
    tenants: tuple[str, ...]
    """Tenants the plan covers (all of the repository's and the control plane's, or --tenant)."""
    read_set: Mapping[Address, str | None]
    """Content token of every stored object the plan read or changes; None = absent."""
    changes: tuple[Change, ...]
    created_at: str
    warnings: tuple[str, ...] = ()
    """Why apply would refuse this plan with the current options (deletion safety)."""
    notes: tuple[str, ...] = ()
    lock_for: str | None = None
    """The pull request this plan was made for (`fabric plan --lock-for PR`): applying it
    releases that PR's locks. Saved in the (signed) plan file; not part of plan_hash."""

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @functools.cached_property
    def plan_hash(self) -> str:
        """Hash of everything but the creation time: what apply history records.

        Each change enters by its target's fingerprint (which covers its whole record), not
        by its record, so hashing a 50k-change plan costs little; from_document checks every
        target against its fingerprint, so a hand-edited plan file is still caught.
        """
        return fingerprint(
            {
                "format_version": PLAN_FORMAT_VERSION,
                "source_hash": self.source_hash,
                "repo": self.repo,
                "tenants": list(self.tenants),
                "changes": [
                    [
                        str(c.address),
                        c.action.value,
                        c.reason,
                        c.protected,
                        c.target.fingerprint if c.target else None,
                        [[f.name, f.sensitive, f.before, f.after] for f in c.fields],
                        *([str(c.moved_from)] if c.moved_from else []),
                    ]
                    for c in self.changes
                ],
                "warnings": list(self.warnings),
                "notes": list(self.notes),
                "read_set": {str(a): t for a, t in sorted(self.read_set.items())},
            }
        )


def _field(f: FieldChange) -> dict[str, Any]:
    if f.sensitive:
        return {"name": f.name, "sensitive": True}
    return {"name": f.name, "sensitive": False, "before": f.before, "after": f.after}


def _target(t: Target | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "spec": dict(t.spec),
        "secret_refs": dict(t.secret_refs),
        "secret_fingerprints": dict(t.secret_fps),
        "protect": t.protect,
        "fingerprint": t.fingerprint,
        **({"written": dict(t.written)} if t.written is not None else {}),
    }


def to_document(plan: Plan) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format_version": PLAN_FORMAT_VERSION,
        "kind": "fabric-plan",
        "plan_hash": "",
        "created_at": plan.created_at,
        "source_hash": plan.source_hash,
        "repo": plan.repo,
        "tenants": list(plan.tenants),
        "summary": counts(plan.changes),
        "changes": [
            {
                "address": str(c.address),
                "tenant": c.address.tenant,
                "kind": c.address.kind.value,
                "action": c.action.value,
                "reason": c.reason,
                "protected": c.protected,
                "fields": [_field(f) for f in c.fields],
                "target": _target(c.target),
                **({"moved_from": str(c.moved_from)} if c.moved_from else {}),
            }
            for c in plan.changes
        ],
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "read_set": {str(a): token for a, token in sorted(plan.read_set.items())},
    }
    if plan.lock_for is not None:
        doc["lock_for"] = plan.lock_for
    doc["plan_hash"] = plan.plan_hash
    return doc


SIGNATURE = "signature"
"""The key of a saved plan file's signature (HMAC with a key derived from the secret keys)."""


def signing_payload(doc: Mapping[str, Any]) -> bytes:
    """The bytes a saved plan file's signature covers: the whole document but the signature."""
    return canonical_json({k: v for k, v in doc.items() if k != SIGNATURE})


def from_document(doc: Mapping[str, Any]) -> Plan:
    """Rebuild a Plan from a saved document; raises ValueError when it is not one, or when its
    hashes do not match (unkeyed: they catch accidents; the signature catches edits)."""
    plan = plan_of_document(doc)
    for change in plan.changes:
        t = change.target
        if t is not None and t.fingerprint != record_fingerprint(
            dict(t.spec), dict(sorted(t.secret_fps.items())), t.protect
        ):
            raise ValueError(f"the plan file was modified after it was saved ({change.address})")
    if doc.get("plan_hash") != plan.plan_hash:
        raise ValueError("the plan file was modified after it was saved (its hash does not match)")
    return plan


def plan_of_document(doc: Mapping[str, Any]) -> Plan:
    """The Plan a document describes, its hashes unchecked (see from_document)."""
    if doc.get("kind") != "fabric-plan":
        raise ValueError("not a fabric plan file")
    if doc.get("format_version") != PLAN_FORMAT_VERSION:
        raise ValueError(
            f"plan format {doc.get('format_version')!r} is not supported "
            f"(this fabric reads format {PLAN_FORMAT_VERSION})"
        )
    changes = []
    for c in doc["changes"]:
        moved_from = Address.parse(c["moved_from"]) if c.get("moved_from") else None
        address = Address.parse(c["address"])
        if moved_from is not None and (
            (moved_from.tenant, moved_from.kind) != (address.tenant, address.kind)
            or Action(c["action"]) is not Action.UPDATE
        ):
            raise ValueError(f"{address}: a move stays in its tenant and kind ({moved_from})")
        t = c.get("target")
        target = None
        if t is not None:
            target = Target(
                spec=MappingProxyType(dict(t["spec"])),
                secret_refs=MappingProxyType(dict(t["secret_refs"])),
                secret_fps=MappingProxyType(dict(t["secret_fingerprints"])),
                protect=bool(t["protect"]),
                fingerprint=t["fingerprint"],
                written=t.get("written") if isinstance(t.get("written"), dict) else None,
            )
        fields = tuple(
            FieldChange(name=f["name"], sensitive=True)
            if f["sensitive"]
            else FieldChange(name=f["name"], before=f.get("before"), after=f.get("after"))
            for f in c["fields"]
        )
        changes.append(
            Change(
                address=Address.parse(c["address"]),
                action=Action(c["action"]),
                fields=fields,
                reason=c.get("reason"),
                target=target,
                protected=bool(c.get("protected")),
                moved_from=moved_from,
            )
        )
    return Plan(
        source_hash=doc["source_hash"],
        repo=doc["repo"],
        tenants=tuple(doc["tenants"]),
        read_set=MappingProxyType({Address.parse(a): t for a, t in doc["read_set"].items()}),
        changes=tuple(changes),
        created_at=doc["created_at"],
        warnings=tuple(doc.get("warnings", ())),
        notes=tuple(doc.get("notes", ())),
        lock_for=str(doc["lock_for"]) if doc.get("lock_for") is not None else None,
    )
