"""The run directory: one folder per run, with ``manifest.json`` and ``report.json``.

Every stage reads the previous stage's artifacts from the run directory and writes its own into a
sub-folder named after the stage (``train/``, ``export/``, ``rtl/`` ...). All writes are atomic: data
goes to a temporary file in the same folder and is renamed into place, so a killed run never leaves
a file that looks complete.

``manifest.json`` lists every artifact: ``{"files": {relpath: {"sha256", "bytes", "stage"}}}``, and the
stages that finished with their check passed: ``{"stages": {name: {"key"}}}`` (``key``: a hash of the
config the stage ran with, see :mod:`codesign.flow`). A stage that starts drops its own record and those of
every later stage, so a run killed inside a stage never counts it, or anything after it, as complete.
``report.json`` holds the figures measured by each stage, one section per stage
(``{"model": ..., "train": {...}, "verify": {...}}``); see docs/report.md for the keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codesign.errors import StageInputError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Use for writers that want a filename (``onnx.save``, ``torch.save``, ``np.save``, matplotlib).
    The temporary name keeps the final suffix, so tools that look at the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # on disk before the rename: a crash leaves the old file or the new
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def load_array(path: str | Path, what: str = "array"):
    """A ``.npy`` array, or a :class:`StageInputError` naming the file and what is wrong with it (a missing
    file, not an array, a pickled object array, NaN or inf values)."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise StageInputError(f"{what} {p} not found")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise StageInputError(f"{what} {p} is not a valid .npy array ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise StageInputError(f"{what} {p} holds {getattr(a, 'dtype', type(a))} data, not numbers")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        raise StageInputError(f"{what} {p} holds {len(bad):,} NaN/inf values (the first at index "
                              f"{tuple(int(i) for i in bad[0])}); inputs must be finite numbers")
    return a


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class RunDir:
    """A run directory. Stages call :meth:`add` for each file they produce and :meth:`record`
    for the figures they measure."""

    MANIFEST = "manifest.json"
    REPORT = "report.json"

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()  # stages pass paths below root; keep them unambiguous
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- paths ---------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_dir(self, stage: str) -> Path:
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def require(self, relpath: str, produced_by: str) -> Path:
        """Path of an artifact a previous stage must have written, or a clear error."""
        p = self.root / relpath
        if not p.exists():
            raise StageInputError(
                f"{p} not found: run `codesign {produced_by} {self.root}` first (or `codesign flow`)"
            )
        return p

    # ---- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        p = self.root / self.MANIFEST
        if p.exists():
            return json.loads(p.read_text())
        return {"files": {}}

    def add(self, path: str | Path, stage: str) -> Path:
        """Record an artifact (already written atomically) in the manifest."""
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        rel = os.path.relpath(p, self.root)
        m = self.manifest()
        m.setdefault("files", {})[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, "stage": stage}
        atomic_write_json(self.root / self.MANIFEST, m)
        return p

    def add_tree(self, folder: str | Path, stage: str) -> None:
        """Record every file below ``folder`` (e.g. a generated RTL directory)."""
        folder = Path(folder)
        if not folder.is_absolute():
            folder = self.root / folder
        m = self.manifest()
        files = m.setdefault("files", {})
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                rel = os.path.relpath(p, self.root)
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, "stage": stage}
        atomic_write_json(self.root / self.MANIFEST, m)

    # ---- stage records (resume) -----------------------------------------------------------
    def start_stage(self, stage: str, later: list[str]) -> None:
        """Forget ``stage`` (its record, its file entries and its figures in report.json: a stage's figures are
        merged into its section, so a key the new run no longer writes would otherwise outlive it) and the
        records of the ``later`` stages (their figures stay: the last measured, until they run again)."""
        m = self.manifest()
        m["files"] = {k: v for k, v in m.get("files", {}).items() if v.get("stage") != stage}
        recs = m.get("stages", {})
        m["stages"] = {k: v for k, v in recs.items() if k != stage and k not in later}
        atomic_write_json(self.root / self.MANIFEST, m)
        r = self.report()
        if stage in r:
            r.pop(stage)
            atomic_write_json(self.root / self.REPORT, r)

    def finish_stage(self, stage: str, key: str) -> None:
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {"key": key}
        atomic_write_json(self.root / self.MANIFEST, m)

    def stage_intact(self, stage: str, key: str) -> str | None:
        """None if ``stage`` finished with config ``key`` and every file it recorded is still there with
        its recorded size and SHA-256; else why not."""
        m = self.manifest()
        rec = m.get("stages", {}).get(stage)
        if rec is None:
            return "not complete"
        if rec.get("key") != key:
            return "config changed"
        for rel, e in m.get("files", {}).items():
            if e.get("stage") != stage:
                continue
            p = self.root / rel
            if not p.is_file() or p.stat().st_size != e["bytes"] or sha256_file(p) != e["sha256"]:
                return f"{rel} differs from the manifest"
        return None

    # ---- report --------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        p = self.root / self.REPORT
        if p.exists():
            return json.loads(p.read_text())
        return {}

    def record(self, section: str, values: dict[str, Any] | Any) -> None:
        """Merge ``values`` into ``report.json[section]`` (a dict), or set it (a scalar)."""
        r = self.report()
        if isinstance(values, dict):
            r.setdefault(section, {})
            r[section].update(values)
        else:
            r[section] = values
        atomic_write_json(self.root / self.REPORT, r)
