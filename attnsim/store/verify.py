"""`attnsim verify`: check every unit's marker against the shards it promises.

A unit is *missing* when it has no marker, and *corrupt* when its shards cannot be decoded or their
checksum differs from the marker's (flipped bytes, a half-written shard under an old marker).
`attnsim extract --repair` redoes exactly the units reported here. Prepare's token arrays (input
ids, sentence ids, lengths, spans, document ids) are checked against the per-unit checksums that
prepare wrote (`token_checksums`); a unit with bad tokens is reported apart, as only prepare can
rewrite it.

Example::

    report = verify_store("runs/default/store.zarr")
    assert not report.bad_units
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from attnsim.store.io import LEGACY_CHECKSUM_ALGORITHM, UnitArrays, completed_units, describe_environment, open_store, read_marker, unit_checksum
from attnsim.store.meta import TIER_ARRAYS, TOKEN_ARRAYS, layout_from_attrs


@dataclass
class VerifyReport:
    url: str
    n_units: int
    ok: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    corrupt: dict[int, str] = field(default_factory=dict)
    # how the verified units were computed (a marker's `environment`, described) -> unit count
    environments: Counter = field(default_factory=Counter)
    bad_tokens: dict[int, str] = field(default_factory=dict)  # unit -> why its token arrays fail the check
    tokens_checked: bool = True  # False: the store has no token checksums (prepared by an older attnsim)

    @property
    def bad_units(self) -> list[int]:
        return sorted(set(self.missing) | set(self.corrupt) | set(self.bad_tokens))

    def lines(self) -> list[str]:
        out = [f"{self.url}: {len(self.ok)} of {self.n_units} units verified"]
        if self.missing:
            out.append(f"missing ({len(self.missing)}): " + ", ".join(f"{u:06d}" for u in self.missing))
        for unit, why in sorted(self.corrupt.items()):
            out.append(f"corrupt: unit {unit:06d}: {why}")
        for unit, why in sorted(self.bad_tokens.items()):
            out.append(f"bad tokens: unit {unit:06d}: {why}")
        if not self.tokens_checked:
            out.append("token arrays not verified: the store has no token checksums (prepared by an older attnsim)")
        out.extend(environment_lines(self.environments))
        if self.bad_tokens:
            out.append("token arrays come from prepare: delete the store (or use a new --out) and run prepare again")
        elif self.bad_units:
            out.append("repair with: attnsim extract --repair --out <run folder>")
        return out


def verify_store(url: str) -> VerifyReport:
    root = open_store(url)
    attrs = dict(root.attrs)
    layout = layout_from_attrs(attrs)
    names = [name for tier in attrs["tiers"] for name in TIER_ARRAYS[tier]]
    report = VerifyReport(url, layout.n_units)
    units = UnitArrays(root, layout)  # array handles looked up once, not per unit
    done = completed_units(url)
    for unit in range(layout.n_units):
        if unit not in done:
            report.missing.append(unit)
            continue
        why, marker = _check_unit(url, units, unit, names)
        if why:
            report.corrupt[unit] = why
        else:
            report.ok.append(unit)
            report.environments[describe_environment(marker.get("environment"))] += 1
    _check_tokens(units, attrs.get("token_checksums"), report)
    return report


def _check_tokens(units: UnitArrays, expected: dict | None, report: VerifyReport) -> None:
    """Every unit's token arrays against prepare's checksum of them."""
    if not expected or len(expected.get("units", [])) != units.layout.n_units:
        report.tokens_checked = False
        return
    for unit, want in enumerate(expected["units"]):
        try:
            got = unit_checksum(units.read(unit, TOKEN_ARRAYS), expected["algorithm"])
        except Exception as e:  # noqa: BLE001 - any decode failure means a shard is damaged
            report.bad_tokens[unit] = f"unreadable token shard ({type(e).__name__}: {str(e)[:80]})"
            continue
        if got != want:
            report.bad_tokens[unit] = "token arrays differ from prepare's checksum"


def environment_lines(environments: dict[str, int]) -> list[str]:
    """Say so when units were computed under more than one environment: their bytes may differ from
    a run under one environment by the documented tolerances (docs/design.md, Determinism)."""
    if len(environments) < 2:
        return []
    out = [f"units were computed under {len(environments)} environments (bytes may differ within the documented tolerances):"]
    out += [f"  {count} units: {env}" for env, count in sorted(environments.items(), key=lambda item: -item[1])]
    return out


def _check_unit(url: str, units: UnitArrays, unit: int, names: list[str]) -> tuple[str | None, dict]:
    """(why the unit's shards do not match its marker or None when they do, the marker)."""
    try:
        marker = read_marker(url, unit)
    except ValueError:  # json.JSONDecodeError: a marker that is not JSON
        return "marker is not valid JSON", {}
    if marker is None:
        return "marker vanished while verifying", {}
    return _compare(units, unit, names, marker), marker


def _compare(units: UnitArrays, unit: int, names: list[str], marker: dict) -> str | None:
    start, stop = units.layout.unit_windows(unit)
    if marker.get("windows") != [start, stop]:
        return "marker does not match the unit's windows"
    if sorted(marker.get("arrays", [])) != sorted(names):
        return f"marker covers arrays {marker.get('arrays')}, the store has {sorted(names)}"
    try:
        arrays = units.read(unit, names)
        tokens = int(units.array("length")[start:stop].sum())
    except Exception as e:  # noqa: BLE001 - any decode failure means a shard is damaged
        return f"unreadable shard ({type(e).__name__}: {str(e)[:80]})"
    if marker.get("tokens") != tokens:
        return f"marker counts {marker.get('tokens')} tokens, store has {tokens}"
    algorithm = marker.get("checksum_algorithm", LEGACY_CHECKSUM_ALGORITHM)
    try:
        checksum = unit_checksum(arrays, algorithm)
    except ValueError:  # an algorithm unit_checksum does not know
        return f"marker names checksum algorithm {algorithm!r}, unknown to this attnsim (made by a newer one?)"
    if checksum != marker.get("checksum"):
        return "checksum differs from the marker"
    return None
