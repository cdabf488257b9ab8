"""Take screenshots of the desktop app's main screens from a real window under Xvfb.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--scale 1.0]

Starts its own Xvfb (``apt-get install xvfb``) unless ``DISPLAY`` is set, opens the real app on the
xcb platform, and walks through the clinician's workflow with a tiny study on the bundled synthetic
FHIR sample (25 patients) plus one fixture patient that fails review: create a keystore, import,
review, scenarios (valid and with an invalid cell), run with progress, results, basis, dashboard,
export dialog and the idle-lock page. Screens are grabbed from the X server (``QScreen.grabWindow``),
not rendered offscreen.

The study uses the small ``test-insecure`` ring so that it finishes in about a minute; the app
labels it INSECURE on every screen, and so do the screenshots. Nothing is written outside a
temporary folder except the PNGs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "plum lantern orbit seventy quiet"


def _die_with_parent() -> None:
    """Linux: have the kernel stop Xvfb when this script dies, even on a crash (PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _start_xvfb(size: str = "1600x1000x24") -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    exe = shutil.which("Xvfb")
    if exe is None:
        raise SystemExit("Xvfb is not installed (apt-get install -y xvfb), and no DISPLAY is set")
    for n in range(99, 140):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        proc = subprocess.Popen([exe, f":{n}", "-screen", "0", size, "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        for _ in range(100):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                os.environ["DISPLAY"] = f":{n}"
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
    raise SystemExit("could not start Xvfb")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--scale", type=float, default=1.0, help="QT_SCALE_FACTOR (high-DPI check, e.g. 2)")
    ap.add_argument("--prefix", default="", help="file name prefix (e.g. 'hidpi-')")
    args = ap.parse_args(argv)
    xvfb = _start_xvfb("3200x2000x24" if args.scale > 1.25 else "1600x1000x24")
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    os.environ["MEDTWIN_ALLOW_INSECURE"] = "1"  # the small test ring, labelled INSECURE in the app
    if args.scale != 1.0:
        os.environ["QT_SCALE_FACTOR"] = str(args.scale)
    try:
        return _walk(args.out, args.prefix)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)


def _walk(out: Path, prefix: str) -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from medtwin.custody.kdf import TEST_KDF
    from medtwin.data import sample_bundle_path
    from medtwin.gui.app import MainWindow, make_app
    from medtwin.gui.model import AppModel

    app = make_app()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="medtwin-shots-"))

    def pump(seconds: float = 0.3) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    def wait(cond, timeout: float = 600.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {what}")
            app.processEvents()
            time.sleep(0.02)
        pump(0.3)

    def shot(widget, name: str) -> None:
        pump(0.4)
        widget.raise_()
        pump(0.1)
        pix = widget.screen().grabWindow(widget.winId())
        path = out / f"{prefix}{name}.png"
        if not pix.save(str(path)):
            raise SystemExit(f"could not save {path}")
        print(f"wrote {path} ({pix.width()}x{pix.height()})")

    def fail_on_error() -> None:
        box = getattr(w, "_last_error", None)
        if box is not None:
            raise SystemExit(f"the app showed an error: {box.text()}")

    # Short KDF only because this is a throwaway keystore in a temp folder.
    w = MainWindow(AppModel(), kdf=TEST_KDF, allow_weak=True, allow_insecure=True)
    w.show()
    w.activateWindow()
    pump(0.5)

    # 1. Key custody
    k = w.keys
    k.path.setText(str(tmp / "keystore"))
    k.new_pw.setText(PASSPHRASE)
    k.new_pw2.setText(PASSPHRASE)
    k.preset.setCurrentIndex(k.preset.findData("test-insecure"))
    shot(w, "01-keys")
    k.create_btn.click()
    wait(lambda: w.model.unlocked and not w.runner.busy, what="key generation")
    fail_on_error()
    w.go(0)
    shot(w, "02-keys-unlocked")

    # 2. Twins: the synthetic FHIR sample plus a fixture patient without a creatinine value
    w.twins.import_paths([str(sample_bundle_path()), str(ROOT / "tests/fixtures/fhir/valid/genomics_ig.json")])
    fail_on_error()
    w.go(1)
    shot(w, "03-twins-review")

    # 3. Scenarios
    w.go(2)
    s = w.scenarios
    s.table.setRowCount(0)
    rows = [["A 300 q12h", "300", "12", "6", "oral", "", "1", "1", "1"],
            ["B 450 q12h", "450", "12", "6", "oral", "", "1", "1", "1"],
            ["C 300 q8h", "300", "8", "9", "oral", "", "1", "1", "1"],
            ["D 450 q12h smoker", "450", "12", "6", "oral", "", "0.9", "1", "1.6"]]
    cols = ["name", "dose_mg", "interval_h", "count", "route", "loading_dose_mg", "adherence", "renal_factor",
            "clearance_factor"]
    for r in rows:
        s.add_row()
        i = s.table.rowCount() - 1
        for c, text in zip(cols, r):
            s.set_cell(i, c, text)
    s.horizon.setValue(72.0)
    s.step.setValue(3.0)
    s.set_cell(1, "interval_h", "0.2")
    shot(w, "04-scenarios-invalid")
    s.set_cell(1, "interval_h", "12")
    if not s.valid:
        raise SystemExit(f"scenario table invalid: {s.errors}")
    shot(w, "05-scenarios")

    # 4. Encrypt and run
    w.go(1)
    w.twins.encrypt_btn.click()
    wait(lambda: w.model.cohort is not None and not w.runner.busy, what="encryption")
    fail_on_error()
    shot(w, "06-twins-encrypted")
    w.go(3)
    w.run.run_btn.click()
    # the first chunk of patients decrypted and drawn while the run goes on
    wait(lambda: w.run.partial is not None or w.run.worker is None, what="the first partial result")
    shot(w, "07-run-progress")
    wait(lambda: w.run.worker is None, what="the run")
    fail_on_error()
    w.go(3)
    shot(w, "08-run-done")

    # 5. Results, basis, dashboard, export dialog
    w.go(4)
    shot(w, "09-results")
    dlg = w.results.show_basis()
    dlg.resize(820, 560)
    pump(0.5)
    shot(dlg, "10-basis")
    dlg.close()
    w.go(5)
    shot(w, "11-dashboard")
    from medtwin.gui.results_screen import ExportDialog

    res = w.model.result
    ed = ExportDialog([f"{x.name}: {x.regimen.describe()}" for x in res.spec.scenarios], {0, 2}, w)
    ed.folder.setText(str(tmp / "export"))
    ed.show()
    pump(0.5)
    shot(ed, "12-export")
    ed.close()

    # 6. Idle lock
    w.set_idle_timeout_ms(200)
    wait(lambda: w.locked, timeout=10, what="the idle lock")
    shot(w, "13-locked")
    w.runner.wait_all()
    w.close()
    pump(0.2)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
