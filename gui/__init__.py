"""medtwin.gui: the PySide6 desktop app (shipped from the top-level gui/ folder)."""
