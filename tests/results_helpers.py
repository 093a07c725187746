"""Comparing two results.json files leaf by leaf (Ray vs local, encrypted vs plain)."""

from __future__ import annotations


def leaves(x, path=""):
    """Every leaf of results.json by its path, without the run's timestamp and the training times."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in ("created", "seconds"):
                yield from leaves(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x
