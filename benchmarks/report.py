"""JSON, markdown table (native/OpenFHE ratios) and PNG plots of benchmark records."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(records: list[dict], path: Path, meta: dict) -> None:
    path.write_text(json.dumps({"meta": meta, "records": records}, indent=1))


def study_table(records: list[dict]) -> str:
    """The end-to-end study: throughput per backend and hand-over mode (objects in one process,
    or ciphertext bytes in and out as on a separate compute node), and the native/OpenFHE ratios."""
    out = ["| study | N | depth | patients x scenarios x times | node gets | backend | simulate s | results/s | "
           "max |conc dev| (bound) |",
           "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in records:
        out.append(f"| theophylline | 2^{r['n'].bit_length() - 1} | {r['depth']} | {r['patients']}x{r['scenarios']}x"
                   f"{r['time_points']} | {r.get('mode', 'objects')} | {r['backend']} | {r['seconds_simulate']:.2f} | "
                   f"{r['results_per_s']:.1f} | {r['conc_abs_dev']:.2g} ({r['conc_bound']:.2g}) |")
    out.append("")
    for mode in ("objects", "wire"):
        by = {r["backend"]: r for r in records if r.get("mode", "objects") == mode}
        if "native" in by and "openfhe" in by:
            out.append(f"native/OpenFHE throughput, node gets {mode}: "
                       f"{by['native']['results_per_s'] / by['openfhe']['results_per_s']:.2f}x")
    return "\n".join(out)


def markdown_table(records: list[dict]) -> str:
    """One row per (op, N, depth): native and OpenFHE medians, speed-up = OpenFHE / native."""
    rows: dict[tuple, dict] = {}
    for r in records:
        if r.get("op") == "study":
            continue
        rows.setdefault((r["op"], r["n"], r["depth"]), {})[r["backend"]] = r
    out = ["| op | N | depth | native ms (median, IQR) | OpenFHE ms (median, IQR) | native/OpenFHE time | speed-up |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    order = ["ntt_forward_tower", "ntt_inverse_tower", "ntt_forward_p_tower", "ntt_inverse_p_tower", "add", "ct_x_pt",
             "ct_x_pt_with_encode", "hmult_relin", "rescale", "hmult_rescale", "rotate", "bridge_import",
             "bridge_export"]
    for key in sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1], k[2])):
        d = rows[key]
        nat, of = d.get("native"), d.get("openfhe")
        def fmt(r):  # three decimals below 1 ms (the transforms take 0.01-0.3 ms)
            if not r:
                return "-"
            d = 3 if r["median_ms"] < 1 else 2
            return f"{r['median_ms']:.{d}f} ({r['iqr_ms']:.{d}f})"
        ratio = f"{nat['median_ms'] / of['median_ms']:.3f}" if nat and of else "-"
        speed = f"{of['median_ms'] / nat['median_ms']:.1f}x" if nat and of else "-"
        out.append(f"| {key[0]} | 2^{key[1].bit_length() - 1} | {key[2]} | {fmt(nat)} | {fmt(of)} | {ratio} | {speed} |")
    return "\n".join(out)


def plot(records: list[dict], outdir: Path) -> list[Path]:
    """One PNG per depth: grouped bars (log scale) of medians per op and N, native vs OpenFHE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    records = [r for r in records if r.get("op") != "study"]
    for depth in sorted({r["depth"] for r in records}):
        rs = [r for r in records if r["depth"] == depth]
        ops = sorted({r["op"] for r in rs})
        ns = sorted({r["n"] for r in rs})
        fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 4), squeeze=False)
        for ax, n in zip(axes[0], ns):
            for k, be in enumerate(("native", "openfhe")):
                vals = []
                for op in ops:
                    m = [r["median_ms"] for r in rs if r["n"] == n and r["op"] == op and r["backend"] == be]
                    vals.append(m[0] if m else 0.0)
                ax.bar([i + 0.4 * k for i in range(len(ops))], vals, width=0.4, label=be)
            ax.set_xticks([i + 0.2 for i in range(len(ops))])
            ax.set_xticklabels(ops, rotation=60, ha="right", fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel("ms (median)")
            ax.set_title(f"N=2^{n.bit_length() - 1}, depth {depth}")
            ax.legend()
        fig.tight_layout()
        f = outdir / f"primitives_depth{depth}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files
