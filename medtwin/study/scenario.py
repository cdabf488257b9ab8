"""Treatment scenarios: a dosing regimen plus factors that change the patient's parameters.

A scenario is plaintext on the compute node: it describes a candidate protocol, not a patient.
Patient covariates stay encrypted; the scenario's per-dose amounts (after adherence) are encoded as
plaintext vectors of the FHE program. Every scenario has a stable digest for the audit log.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from medtwin.errors import ValidationError

ROUTES = ("oral", "iv_bolus")


@dataclass(frozen=True)
class Regimen:
    """Repeated dosing: ``count`` doses of ``dose_mg`` every ``interval_h`` hours from ``start_h``.

    ``loading_dose_mg`` (optional) replaces the first dose.
    """

    dose_mg: float
    interval_h: float
    count: int
    route: str = "oral"
    start_h: float = 0.0
    loading_dose_mg: float | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValidationError(f"regimen route must be one of {ROUTES}, got {self.route!r}")
        if not (0.0 < self.dose_mg <= 5000.0):
            raise ValidationError(f"regimen dose_mg must be in (0, 5000] mg, got {self.dose_mg}")
        if self.loading_dose_mg is not None and not (0.0 < self.loading_dose_mg <= 5000.0):
            raise ValidationError("regimen loading_dose_mg must be in (0, 5000] mg")
        if not (0.5 <= self.interval_h <= 168.0):
            raise ValidationError(f"regimen interval_h must be in [0.5, 168] h, got {self.interval_h}")
        if not (1 <= int(self.count) <= 64):
            raise ValidationError(f"regimen count must be in [1, 64] doses, got {self.count}")
        if not (0.0 <= self.start_h <= 24 * 30):
            raise ValidationError("regimen start_h must be in [0, 720] h")

    def dose_times(self) -> np.ndarray:
        return self.start_h + self.interval_h * np.arange(int(self.count), dtype=np.float64)

    def dose_amounts(self) -> np.ndarray:
        a = np.full(int(self.count), float(self.dose_mg))
        if self.loading_dose_mg is not None:
            a[0] = float(self.loading_dose_mg)
        return a

    def describe(self) -> str:
        load = f", loading {self.loading_dose_mg:g} mg" if self.loading_dose_mg else ""
        return f"{self.dose_mg:g} mg {self.route} q{self.interval_h:g}h x{self.count}{load}"


@dataclass(frozen=True)
class Scenario:
    """A regimen plus factors.

    Attributes:
        name: label shown in tables and plots.
        regimen: the dosing regimen.
        adherence: probability that each scheduled dose is taken (1 = perfect). Missed doses are
            drawn per (patient, scenario) from ``seed``, so a scenario is reproducible.
        missed_doses: explicit indices of doses that are not taken (on top of ``adherence``).
        renal_factor: multiplies the patient's creatinine clearance (e.g. 0.5 for a halving of
            renal function during the horizon).
        clearance_factor: multiplies total clearance (e.g. smoking induces CYP1A2 and raises
            theophylline clearance; see the model's documented factors).
        seed: for the adherence draw.
    """

    name: str
    regimen: Regimen
    adherence: float = 1.0
    missed_doses: tuple[int, ...] = ()
    renal_factor: float = 1.0
    clearance_factor: float = 1.0
    seed: int = 0
    tags: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 80:
            raise ValidationError("scenario name must be 1-80 characters")
        if not (0.0 <= self.adherence <= 1.0):
            raise ValidationError(f"scenario {self.name!r}: adherence must be in [0, 1]")
        if not (0.1 <= self.renal_factor <= 2.0):
            raise ValidationError(f"scenario {self.name!r}: renal_factor must be in [0.1, 2]")
        if not (0.25 <= self.clearance_factor <= 4.0):
            raise ValidationError(f"scenario {self.name!r}: clearance_factor must be in [0.25, 4]")
        for i in self.missed_doses:
            if not 0 <= int(i) < int(self.regimen.count):
                raise ValidationError(f"scenario {self.name!r}: missed dose index {i} is not a scheduled dose")

    def taken_fraction(self, pair_seed: int) -> np.ndarray:
        """Per-dose taken indicator (0/1) for one (patient, scenario) pair."""
        n = int(self.regimen.count)
        taken = np.ones(n)
        if self.adherence < 1.0:
            rng = np.random.default_rng([int(self.seed), int(pair_seed)])
            taken = (rng.random(n) < self.adherence).astype(np.float64)
        for i in self.missed_doses:
            taken[int(i)] = 0.0
        return taken

    def to_dict(self) -> dict:
        d = asdict(self)
        d["missed_doses"] = list(self.missed_doses)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Scenario:
        try:
            reg = Regimen(**d["regimen"])
            rest = {k: v for k, v in d.items() if k != "regimen"}
            rest["missed_doses"] = tuple(rest.get("missed_doses", ()))
            return cls(regimen=reg, **rest)
        except (KeyError, TypeError) as exc:
            raise ValidationError(f"malformed scenario definition: {exc}") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
