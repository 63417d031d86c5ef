"""dbt-style node selectors: `orders`, `pipeline:orders`, `+x`, `x+`, `tag:nightly`, `*`.  [pure]"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Method = Literal["name", "pipeline", "transformation", "snapshot", "seed", "tag", "all"]
_SELECTOR = re.compile(
    r"(?P<up>\+)?(?:(?P<method>pipeline|transformation|snapshot|seed|tag):)?(?P<value>[a-z][a-z0-9_\-]{0,62}|\*)"
    r"(?P<down>\+)?"
)


@dataclass(frozen=True, slots=True)
class Selector:
    """One parsed selector; `with_upstream`/`with_downstream` are the `+` on either side."""

    method: Method
    value: str
    with_upstream: bool = False
    with_downstream: bool = False

    def __str__(self) -> str:
        body = "*" if self.method == "all" else self.value
        if self.method not in ("name", "all"):
            body = f"{self.method}:{body}"
        return f"{'+' if self.with_upstream else ''}{body}{'+' if self.with_downstream else ''}"


def parse_selector(text: str) -> Selector:
    """Parse one selector; raises ValueError with a message fit for a diagnostic."""
    match = _SELECTOR.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a selector; use a name, pipeline:NAME, transformation:NAME, "
            "snapshot:NAME, tag:TAG or *, with an optional + before (upstream) or after "
            "(downstream)"
        )
    value = match["value"]
    method: Method = match["method"] or "name"  # type: ignore[assignment]
    if value == "*":
        if match["method"]:
            raise ValueError(f"{text!r}: `*` stands alone, without a method")
        method = "all"
    elif method != "tag" and "-" in value:
        raise ValueError(f"{text!r}: names contain only lowercase letters, digits and _")
    return Selector(method, value, bool(match["up"]), bool(match["down"]))
