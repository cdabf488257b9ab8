"""Slot layout: many (patient, scenario, time point) results in the slots of few ciphertexts.

Every (patient, scenario) pair owns one aligned block of ``block`` slots (a power of two at least
the number of time points); slot ``k`` of the block is time point ``k``. Pairs are ordered
patient-major (all scenarios of patient 0, then patient 1, ...), so 1,000 patients x 3 scenarios x 37 time points fill 6 ciphertexts of
2^15 slots. A ciphertext holds whole patients only, so every ciphertext
repeats the same scenario pattern and shares one compiled program. Padding slots and padding pairs repeat a real patient's covariates so that every slot
stays inside the model's declared ranges; they are never read back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medtwin.errors import ValidationError


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


@dataclass(frozen=True)
class SlotLayout:
    n_patients: int
    n_scenarios: int
    n_times: int
    slots: int  # slots per ciphertext

    def __post_init__(self) -> None:
        if self.n_patients < 1 or self.n_scenarios < 1 or self.n_times < 1:
            raise ValidationError("a study needs at least one patient, scenario and time point")
        if self.block > self.slots:
            raise ValidationError(f"{self.n_times} time points do not fit in {self.slots} slots")
        if self.block * self.n_scenarios > self.slots:
            raise ValidationError(f"{self.n_scenarios} scenarios x {self.block} slots per time grid exceed the "
                                  f"{self.slots} slots of one ciphertext; use fewer scenarios or time points "
                                  "(a patient's scenarios must share one ciphertext)")

    @property
    def block(self) -> int:
        return next_pow2(self.n_times)

    @property
    def patients_per_ct(self) -> int:
        """Whole patients per ciphertext, so that every ciphertext repeats one scenario pattern."""
        return (self.slots // self.block) // self.n_scenarios

    @property
    def pairs_per_ct(self) -> int:
        return self.patients_per_ct * self.n_scenarios

    @property
    def n_pairs(self) -> int:
        return self.n_patients * self.n_scenarios

    @property
    def n_ciphertexts(self) -> int:
        return -(-self.n_patients // self.patients_per_ct)

    @property
    def n_results(self) -> int:
        """(patient, scenario, time point) results the layout carries."""
        return self.n_pairs * self.n_times

    def _slot_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per slot: patient, scenario, time index (padding -> patient 0 / point 0) and validity."""
        c = np.arange(self.n_ciphertexts)[:, None]
        j = np.arange(self.slots)[None, :]
        local_pair = j // self.block
        k = j % self.block
        patient = c * self.patients_per_ct + local_pair // self.n_scenarios
        scenario = local_pair % self.n_scenarios
        in_pair = local_pair < self.pairs_per_ct
        ok = in_pair & (patient < self.n_patients) & (k < self.n_times)
        # Padding repeats the chunk's first patient but keeps the scenario/time pattern, so every
        # ciphertext has the same plaintext vectors and shares one compiled program.
        patient = np.where(ok, patient, np.minimum(c * self.patients_per_ct, self.n_patients - 1))
        scenario = np.where(in_pair, scenario, 0)
        k = np.where(k < self.n_times, k, 0)
        return patient, np.broadcast_to(scenario, ok.shape), np.broadcast_to(k, ok.shape), ok

    def pair_index(self) -> np.ndarray:
        """(n_ciphertexts, slots): the pair id (patient * n_scenarios + scenario) of every slot."""
        p, s, _, _ = self._slot_coords()
        return p * self.n_scenarios + s

    def time_index(self) -> np.ndarray:
        """(n_ciphertexts, slots): the time-point index of every slot (padding -> point 0)."""
        return self._slot_coords()[2]

    def valid_mask(self) -> np.ndarray:
        """(n_ciphertexts, slots) 1.0 where the slot is a real (pair, time point), else 0.0."""
        return self._slot_coords()[3].astype(np.float64)

    def patient_of_pair(self, pair: np.ndarray) -> np.ndarray:
        return np.asarray(pair) // self.n_scenarios

    def scenario_of_pair(self, pair: np.ndarray) -> np.ndarray:
        return np.asarray(pair) % self.n_scenarios

    def spread_patients(self, per_patient: np.ndarray) -> np.ndarray:
        """Replicate one value per patient into every slot of the patient's pairs."""
        v = np.asarray(per_patient, dtype=np.float64)
        if v.shape != (self.n_patients,):
            raise ValidationError(f"expected {self.n_patients} patient values, got shape {v.shape}")
        return v[self.patient_of_pair(self.pair_index())]

    def spread_pairs(self, per_pair_time: np.ndarray) -> np.ndarray:
        """Place a (patients, scenarios, times) array into slots."""
        a = np.asarray(per_pair_time, dtype=np.float64)
        if a.shape != (self.n_patients, self.n_scenarios, self.n_times):
            raise ValidationError(f"expected shape {(self.n_patients, self.n_scenarios, self.n_times)}, got {a.shape}")
        flat = a.reshape(self.n_pairs, self.n_times)
        return flat[self.pair_index(), self.time_index()]

    def gather(self, slot_values: np.ndarray) -> np.ndarray:
        """(n_ciphertexts, slots) -> (patients, scenarios, times): read results back."""
        a = np.asarray(slot_values, dtype=np.float64).reshape(-1)
        if a.size < self.n_ciphertexts * self.slots:
            raise ValidationError("fewer slot values than the layout needs")
        a = a[: self.n_ciphertexts * self.slots].reshape(self.n_ciphertexts, self.slots // self.block, self.block)
        a = a[:, : self.pairs_per_ct, : self.n_times].reshape(-1, self.n_scenarios, self.n_times)
        return a[: self.n_patients]
