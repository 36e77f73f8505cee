"""Helpers shared by the benchmarks: the demo photos, results tables and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def demo_photo_folder() -> Path:
    """The demo catalogue's photos, built once under benchmarks/results/demo-photos."""
    from lookalike.demo import build_demo_catalogue_folder

    folder = RESULTS / "demo-photos"
    if not (folder / "metadata.csv").exists():
        build_demo_catalogue_folder(folder)
    return folder


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {column: max(len(column), *(len(str(row.get(column, ""))) for row in rows)) for column in columns}
    print("  ".join(f"{column:<{widths[column]}}" for column in columns))
    print("  ".join("-" * widths[column] for column in columns))
    for row in rows:
        print("  ".join(f"{str(row.get(column, '')):<{widths[column]}}" for column in columns))


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path
