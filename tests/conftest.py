from __future__ import annotations

import os

# The test suite may use the small insecure test ring (it is labelled INSECURE everywhere).
os.environ.setdefault("MEDTWIN_ALLOW_INSECURE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
