"""The rule set: a TOML file the monitor loads at start, versioned.

Every alert records the version of the rule set that raised it. A file that does not say what
it means (an unknown key, a negative window, a fractional amount) is refused at start with a
message naming the key: a monitor that guesses is worse than one that does not start.
"""

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.compliance import SEVERITIES

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")

RULE_IDS = ("large_movement", "velocity", "structuring", "fan_out", "fan_in", "watch_list")


class RulesError(ValueError):
    """The rules file is unreadable or says something the monitor cannot act on."""


@dataclass(frozen=True)
class LargeMovement:
    severity: str = "high"
    default_threshold: int = 1_000_000
    thresholds: Mapping[str, int] = field(default_factory=dict)

    def threshold(self, asset: str) -> int:
        return self.thresholds.get(asset, self.default_threshold)


@dataclass(frozen=True)
class Velocity:
    severity: str = "medium"
    window_seconds: int = 3600
    max_count: int = 20
    default_max_volume: int = 5_000_000
    max_volume: Mapping[str, int] = field(default_factory=dict)

    def volume_limit(self, asset: str) -> int:
        return self.max_volume.get(asset, self.default_max_volume)


@dataclass(frozen=True)
class Structuring:
    severity: str = "high"
    window_seconds: int = 86400
    count: int = 3
    below_percent: int = 10


@dataclass(frozen=True)
class Spread:
    """Fan-out (one payer, many payees) or fan-in (many payers, one payee)."""

    severity: str = "medium"
    window_seconds: int = 3600
    distinct: int = 5


@dataclass(frozen=True)
class WatchList:
    severity: str = "high"
    wallets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RuleSet:
    version: str
    large_movement: LargeMovement
    velocity: Velocity
    structuring: Structuring
    fan_out: Spread
    fan_in: Spread
    watch_list: WatchList
    digest: str = ""  # sha256 of the file: two files with one version are told apart in logs
    #: Rules marked ``action = "freeze"``: their alerts also freeze the wallet (once).
    freezing: frozenset[str] = frozenset()

    @property
    def longest_window(self) -> int:
        return max(self.velocity.window_seconds, self.structuring.window_seconds,
                   self.fan_out.window_seconds)

    def severity(self, rule: str) -> str:
        severity: str = getattr(self, rule).severity
        return severity


def _whole(where: str, value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RulesError(f"{where} must be a whole number of at least {low}, not {value!r}")
    return int(value)


def _amounts(where: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise RulesError(f"{where} must be a table of asset = amount")
    return {str(k): _whole(f"{where}.{k}", v, 1) for k, v in value.items()}


def _section(data: Mapping[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise RulesError(f"[{name}] must be a table")
    unknown = set(section) - allowed - {"severity", "action"}
    if unknown:
        raise RulesError(f"[{name}] has unknown keys {sorted(unknown)}")
    if section.get("action", "alert") not in ("alert", "freeze"):
        raise RulesError(f"{name}.action must be \"alert\" or \"freeze\", not {section['action']!r}")
    severity = section.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RulesError(f"{name}.severity must be one of {list(SEVERITIES)}, not {severity!r}")
    return dict(section, severity=severity)


def parse(data: Mapping[str, Any], digest: str = "") -> RuleSet:
    """A rule set from the parsed TOML document; raises :class:`RulesError`."""
    unknown = set(data) - {"version", *RULE_IDS}
    if unknown:
        raise RulesError(f"unknown rules {sorted(unknown)}; the rules are {list(RULE_IDS)}")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise RulesError("version must be a non-empty string of at most 64 characters")
    lm = _section(data, "large_movement", {"default_threshold", "thresholds"})
    ve = _section(data, "velocity", {"window_seconds", "max_count", "default_max_volume", "max_volume"})
    st = _section(data, "structuring", {"window_seconds", "count", "below_percent"})
    fo = _section(data, "fan_out", {"window_seconds", "distinct"})
    fi = _section(data, "fan_in", {"window_seconds", "distinct"})
    wl = _section(data, "watch_list", {"wallets"})
    wallets = wl.get("wallets", [])
    if not isinstance(wallets, list) or not all(isinstance(w, str) for w in wallets):
        raise RulesError("watch_list.wallets must be a list of wallet ids")
    percent = _whole("structuring.below_percent", st.get("below_percent", 10), 1)
    if percent >= 100:
        raise RulesError("structuring.below_percent must be below 100")
    return RuleSet(
        version=version,
        large_movement=LargeMovement(
            lm["severity"],
            _whole("large_movement.default_threshold", lm.get("default_threshold", 1_000_000), 1),
            _amounts("large_movement.thresholds", lm.get("thresholds", {}))),
        velocity=Velocity(
            ve["severity"], _whole("velocity.window_seconds", ve.get("window_seconds", 3600), 1),
            _whole("velocity.max_count", ve.get("max_count", 20), 1),
            _whole("velocity.default_max_volume", ve.get("default_max_volume", 5_000_000), 1),
            _amounts("velocity.max_volume", ve.get("max_volume", {}))),
        structuring=Structuring(
            st["severity"], _whole("structuring.window_seconds", st.get("window_seconds", 86400), 1),
            _whole("structuring.count", st.get("count", 3), 2), percent),
        fan_out=Spread(fo["severity"], _whole("fan_out.window_seconds", fo.get("window_seconds", 3600), 1),
                       _whole("fan_out.distinct", fo.get("distinct", 5), 2)),
        fan_in=Spread(fi["severity"], _whole("fan_in.window_seconds", fi.get("window_seconds", 3600), 1),
                      _whole("fan_in.distinct", fi.get("distinct", 5), 2)),
        watch_list=WatchList(wl["severity"], frozenset(wallets)),
        digest=digest,
        freezing=frozenset(r for r, s in zip(RULE_IDS, (lm, ve, st, fo, fi, wl), strict=True)
                           if s.get("action") == "freeze"),
    )


def load(path: Path | str | None = None) -> RuleSet:
    """The rule set in ``path`` (default: the one shipped with the monitor)."""
    where = Path(path) if path is not None else DEFAULT_RULES
    try:
        raw = where.read_bytes()
        data = tomllib.loads(raw.decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"cannot read the rules file {where}: {exc}") from None
    return parse(data, hashlib.sha256(raw).hexdigest())
