"""Appa Studio: the Panel app (state ← views ← adapter)."""
