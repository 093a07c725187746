"""Data lifecycle: manifest of every derived artifact, retention, erasure, audit log."""
