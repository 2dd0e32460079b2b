"""The output folder of a release build: checked before anything is converted, built beside it,
and swapped in whole, so that an export killed at any moment (SIGKILL included: no handler
runs) leaves either the previous release or the new one, never a mix of the two.

The new release is built in a staging folder next to ``out`` (the same file system), then the
two folders are exchanged in one step: Linux's ``renameat2(RENAME_EXCHANGE)``. Where that call
is missing (macOS, Windows, old kernels, some file systems), two renames: ``out`` moves aside
to ``.NAME.previous-PID``, then the staging folder takes its name; a kill between the two
leaves the previous release whole under the aside name, and the next export puts it back before
anything else. Staging folders of a killed export are removed by the next one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from keras_edge.runtime.errors import ManifestError, UsageError
from keras_edge.runtime.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_STAGING = "staging"
_PREVIOUS = "previous"


def check_out(out: Path, force: bool) -> bool:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a keras-edge export
    (a typo that would otherwise replace someone's files), unless ``force``. True when ``out``
    is such a foreign folder (then forced): the export is written into it file by file, never
    swapped whole."""
    _recover(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"Expected --out to be a folder, got the file {str(out)!r}")
    if not out.is_dir():
        return False
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not entries:  # empty, or only .gitkeep / .DS_Store
        return False
    if (out / MANIFEST_NAME).is_file():
        try:
            Manifest.read(out)
            return False  # a previous export: replaced whole, its other files kept
        except (ManifestError, UsageError) as exc:
            if _export_shaped(out / MANIFEST_NAME):  # hand-edited or older: still an export
                logger.info("replacing the previous export in %s, whose manifest reads: %s", out, exc)
                return False
            why = f"its {MANIFEST_NAME} is not a keras-edge manifest ({exc})"
    else:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        why = f"it holds {len(entries)} entries and no {MANIFEST_NAME}: {shown}"
    if force:
        logger.warning("exporting into %s, which is not a keras-edge export (--force)", out)
        return True
    raise UsageError(
        f"Expected --out to be missing, empty or a previous keras-edge export, got {str(out)!r}: "
        f"{why}; pass --force (force=True) to export into it (files with the export's names "
        f"are replaced, the others kept)"
    )


def _export_shaped(path: Path) -> bool:
    """Whether a manifest that does not validate still has an export's keys (a hand edit that
    the runtime refuses, say): the folder is then a previous export, replaced whole."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"format_version", "head", "variants"} <= set(data)


def staging_for(out: Path) -> tuple[Path, bool]:
    """A new, empty staging folder, and whether it can be swapped in whole: beside ``out``
    where its parent is writable and ``out`` is not a mount point (a volume, a bind mount);
    else inside ``out``, installed file by file. Stale ones of killed exports are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    beside = not (out.is_dir() and os.path.ismount(out)) and os.access(out.parent, os.W_OK | os.X_OK)
    where = out.parent if beside else out
    if not beside:
        out.mkdir(exist_ok=True)
    for stale in where.glob(f".{glob.escape(out.name)}.{_STAGING}-*"):
        if not _alive(stale.name):
            logger.info("removing %s, left by an export that was killed", stale)
            shutil.rmtree(stale, ignore_errors=True)
    prefix = f".{out.name}.{_STAGING}-{os.getpid()}-"
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=where)), beside
    except OSError as exc:
        raise UsageError(
            f"Expected a writable folder for the export at {str(where)!r}, got {exc.strerror}"
        ) from exc


def install(staging: Path, out: Path, own: set[str], whole: bool = True) -> None:
    """Make ``staging`` the folder ``out`` in one step. Files of ``out`` that the previous
    export did not write (notes, a README a user keeps there) are linked into the new release
    first; ``own`` names the files an export writes (the new ones are in ``staging``).

    ``whole=False`` (``out`` is someone else's folder, given with ``--force``; a mount point; a
    folder whose parent is read-only): the export's files are moved into ``out`` one by one,
    the manifest last, and nothing else there is touched."""
    previous = _written_by_previous(out)
    if not whole:
        _into(staging, out, previous)
        return
    carried = []
    if out.is_dir():
        for path in out.iterdir():
            keep = path.name not in own and path.name not in previous
            if keep and not (staging / path.name).exists():
                _carry(path, staging / path.name)
                carried.append(path.name)
    # mkdtemp makes 0700: give the release the old folder's mode, or the umask's for a new one.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, (out.stat().st_mode & 0o7777) if out.is_dir() else 0o777 & ~umask)
    try:
        if not out.exists():
            os.rename(staging, out)
            return
        if _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now the previous release
            return
        aside = out.parent / f".{out.name}.{_PREVIOUS}-{os.getpid()}"
        os.rename(out, aside)
    except OSError as exc:  # another file system, a busy folder: no swap, file by file
        logger.warning("could not swap %s in whole (%s); installing file by file", out, exc.strerror)
        for name in carried:  # the originals are still in out
            target = staging / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        _into(staging, out, previous)
        return
    os.rename(staging, out)
    shutil.rmtree(aside, ignore_errors=True)


def _into(staging: Path, out: Path, previous: set[str]) -> None:
    """Move the staged files into ``out`` one by one, the manifest last (a reader sees the old
    manifest or the new one, whole); drop the previous export's files the new one lacks, then
    ``staging``."""
    out.mkdir(parents=True, exist_ok=True)
    staged = {p.name for p in staging.iterdir()}
    for path in sorted(staging.iterdir()):
        if path.is_dir():  # logs/: its files join a folder of that name, if there is one
            (out / path.name).mkdir(exist_ok=True)
            for inner in sorted(path.iterdir()):
                os.replace(inner, out / path.name / inner.name)
        elif path.name != MANIFEST_NAME:
            os.replace(path, out / path.name)
    os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)
    for name in previous - staged:  # variants the new export does not have
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _written_by_previous(out: Path) -> set[str]:
    try:
        manifest = Manifest.read(out)
    except (ManifestError, UsageError):
        return set()
    return {v.file for v in manifest.variants.values()}


def _carry(src: Path, dst: Path) -> None:
    """A hard link where the file system allows one (no copy, the original untouched), else a
    copy."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)  # a link stays a link, dangling or not
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with ``renameat2(RENAME_EXCHANGE)``; False where the system
    has no such call."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"could not swap {str(a)!r} and {str(b)!r}: {os.strerror(code)}")


def _recover(out: Path) -> None:
    """Put back a previous release that an export killed between its two renames left aside."""
    if out.exists() or not out.parent.is_dir():
        return
    pattern = f".{glob.escape(out.name)}.{_PREVIOUS}-*"
    asides = sorted(out.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
    if asides:
        os.rename(asides[-1], out)
        logger.warning("restored %s from %s, left by an export that was killed", out, asides[-1])


def _alive(name: str) -> bool:
    """Whether the export that made the staging folder ``name`` (".out.staging-PID-xxxx") still
    runs on this machine."""
    try:
        pid = int(name.split(f".{_STAGING}-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True  # this process: another export of it may be running in a thread
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


