"""Study reports: the per-scenario comparison table, a CSV of per-pair metrics and a PNG plot.

Only what the key holder decrypted is written, and only where the caller asks; twins appear by
pseudonymous id.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from medtwin.errors import MedTwinError


def comparison_rows(result) -> list[dict]:
    """One row per scenario: medians over the cohort and target attainment."""
    rows = []
    for s in result.summaries():
        rows.append({
            "scenario": s.name, "regimen": s.regimen, "patients": s.n,
            "AUC_0-T median [mg*h/L]": round(s.auc_median, 1),
            "AUC IQR": f"{s.auc_iqr[0]:.0f}-{s.auc_iqr[1]:.0f}",
            "peak median [mg/L]": round(s.peak_median, 2),
            "trough median [mg/L]": round(s.trough_median, 2),
            "time in window (mean)": round(s.tiw_mean, 3),
            "peak&trough in window": f"{100 * s.attain:.1f}%",
        })
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = " | ".join(c.ljust(width[c]) for c in cols)
    sep = "-+-".join("-" * width[c] for c in cols)
    body = [" | ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join([line, sep, *body])


def _new_file(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise MedTwinError(f"{path} exists already; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)


def write_metrics_csv(result, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Per (twin, scenario): AUC over the horizon, peak, trough, time in window, bounds."""
    path = Path(path)
    _new_file(path, overwrite)
    tmp = path.with_suffix(path.suffix + ".tmp")
    peak, trough = result.peak, result.trough
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["twin_id", "scenario", "regimen", "auc_0_T_mg_h_per_L", "peak_mg_per_L", "trough_mg_per_L",
                    "time_in_window_fraction", "tiw_valid", "auc_error_bound", "conc_error_bound"])
        for p, tid in enumerate(result.twin_ids):
            for s, sc in enumerate(result.spec.scenarios):
                tiw = "" if result.tiw is None else f"{result.tiw[p, s]:.4f}"
                ok = "" if result.tiw_in_domain is None else str(bool(result.tiw_in_domain[p, s])).lower()
                w.writerow([tid, sc.name, sc.regimen.describe(), f"{result.auc[p, s, -1]:.3f}",
                            f"{peak[p, s]:.4f}", f"{trough[p, s]:.4f}", tiw, ok,
                            f"{result.bounds.get('auc', float('nan')):.3g}",
                            f"{result.bounds.get('conc', float('nan')):.3g}"])
    os.replace(tmp, path)
    return path


def plot_png(result, path: str | os.PathLike, *, overwrite: bool = False, max_lines: int = 0) -> Path:
    """Median and 5-95% band of the concentration per scenario, the therapeutic window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    _new_file(path, overwrite)
    t = result.times
    lo, hi = result.spec.pk.window
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    ax.axhspan(lo, hi, color="tab:green", alpha=0.12, label=f"therapeutic window {lo:g}-{hi:g} mg/L")
    for s, sc in enumerate(result.spec.scenarios):
        c = result.conc[:, s, :]
        med = np.median(c, axis=0)
        p5, p95 = np.percentile(c, [5, 95], axis=0)
        line, = ax.plot(t, med, lw=2, label=f"{sc.name}: {sc.regimen.describe()}")
        ax.fill_between(t, p5, p95, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("time [h]")
    ax.set_ylabel("theophylline concentration [mg/L]" if result.spec.pk.drug == "theophylline" else "concentration [mg/L]")
    ax.set_title(f"Encrypted study: {len(result.twin_ids)} twins, median and 5-95% band (decrypted)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
