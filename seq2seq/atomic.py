"""Atomic writes: a file, a JSON file, a file named by its content, a whole directory.

Each is written under a hidden temporary name, pushed to disk, then renamed into place:
a reader, or a process killed at any moment, sees the complete old version or the
complete new one, never a mix. Used by checkpoints (checkpoint.py) and by training
state (train_state.py)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """Push a file (or a directory's entries) to disk, so a power cut after a rename
    cannot leave a name pointing at missing data. Best effort where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """The hidden name a write of `path` goes to first (`.NAME.tmpPID`)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    path = Path(path)
    tmp = temporary_sibling(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def atomic_write_with(path: str | os.PathLike, write, mode: int | None = 0o644) -> None:
    """`write(tmp_path)` writes the file (e.g. safetensors' save_file), then it is synced
    and renamed onto `path`."""
    path = Path(path)
    tmp = temporary_sibling(path)
    write(tmp)
    if mode is not None:
        os.chmod(tmp, mode)   # save_file creates 0600; the app may run as another user
    fsync_path(tmp)
    os.replace(tmp, path)


def write_named_by_content(folder: Path, stem: str, write) -> tuple[str, str]:
    """`write(tmp_path)` writes a file that is then named STEM-<sha256 prefix>.safetensors
    in `folder`; returns (file name, sha256). A name that says its content is never
    overwritten with other data, so one rename of an index file can commit a set of them."""
    tmp = Path(folder) / f".{stem}.tmp{os.getpid()}"
    write(tmp)
    fsync_path(tmp)
    digest = sha256_file(tmp)
    name = f"{stem}-{digest[:16]}.safetensors"
    os.replace(tmp, Path(folder) / name)
    return name, digest


def swap_directory_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory `tmp` to `out`. POSIX cannot rename onto a non-empty
    directory, so an existing `out` is first renamed aside, and put back if the second
    rename fails; between the two renames (microseconds) neither is there."""
    if not out.exists():
        os.replace(tmp, out)
    else:
        aside = temporary_sibling(out, ".old")
        os.replace(out, aside)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    fsync_path(out.parent)
