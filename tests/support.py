"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""
import sysconfig
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(limit: int = 40) -> list[str]:
    """Source of the first `limit` top-level standard-library modules (a local, PSF-licensed corpus)."""
    files = sorted(STDLIB.glob("*.py"))[:limit]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]
