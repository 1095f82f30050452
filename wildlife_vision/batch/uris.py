"""Inputs named by URI (``s3://bucket/photos/``, ``gs://...``, ``file:///...``) for `predict --engine ray`.

Listing and reading go through pyarrow's filesystems (``pyarrow.fs.FileSystem.from_uri``: local, S3, GCS,
HDFS and whatever this pyarrow was built with), the same layer Ray Data's own readers use. A folder URI
contributes its image files (by extension, as for local folders) sorted by path; a file URI is one input. A
file that cannot be read becomes that input's error row (``not_found``, ``too_large``, ``unreadable``), never
a failed task. Needs the [ray] extra (pyarrow).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Dict, List, Sequence, Tuple

from ..errors import ImageDecodeError
from ..preprocess import IMAGE_EXTENSIONS

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
_FILESYSTEMS: Dict[str, Any] = {}
_CACHED = ("s3", "gs", "gcs", "hdfs")
_LOCK = threading.Lock()


def is_uri(text: str) -> bool:
    """Whether an input is a URI with a scheme of two or more letters (so ``C:\\photos`` is a path)."""
    return bool(_URI.match(text))


def _filesystem(uri: str) -> Tuple[Any, str]:
    """(pyarrow filesystem, path inside it). Object stores and HDFS reuse one filesystem per scheme and
    authority (creating an S3 client per photo would be slow); other schemes are resolved each time."""
    import pyarrow.fs as pafs

    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in _CACHED:
        return pafs.FileSystem.from_uri(uri)
    authority, _, tail = rest.partition("/")
    key = f"{scheme}://{authority}"
    with _LOCK:
        fs = _FILESYSTEMS.get(key)
    if fs is None:
        fs, path = pafs.FileSystem.from_uri(uri)
        with _LOCK:
            _FILESYSTEMS[key] = fs
        return fs, path
    # pyarrow's object-store paths are "bucket/key"; HDFS paths are "/path" after host:port
    return fs, (rest if scheme != "hdfs" else "/" + tail)


def expand_uris(args: Sequence[str], recursive: bool = False) -> Tuple[List[str], int, int]:
    """URI arguments -> (inputs, skipped non-image files, skipped subfolders); raises OSError when one cannot
    be listed. A URI that does not exist is kept as an input (its row says ``file not found``)."""
    import pyarrow.fs as pafs

    out: List[str] = []
    skipped_files = skipped_dirs = 0
    for arg in args:
        fs, path = _filesystem(arg)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.Directory:
            out.append(arg)
            continue
        base = arg.rstrip("/")
        root = info.path.rstrip("/")
        found = []
        for entry in fs.get_file_info(pafs.FileSelector(info.path, recursive=recursive)):
            rel = entry.path[len(root):].lstrip("/") if entry.path.startswith(root) else entry.path
            if entry.type == pafs.FileType.Directory:
                skipped_dirs += 0 if recursive else 1
            elif os.path.splitext(entry.base_name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(rel)
            else:
                skipped_files += 1
        found.sort(key=lambda r: r.split("/"))
        out.extend(f"{base}/{rel}" for rel in found)
    return out, skipped_files, skipped_dirs


def read_uri(uri: str) -> bytes:
    """The bytes of one URI input; raises ImageDecodeError (``not_found``, ``too_large``, ``unreadable``)."""
    import pyarrow.fs as pafs

    from .. import preprocess

    try:
        fs, path = _filesystem(uri)
        info = fs.get_file_info(path)
    except (OSError, ValueError) as e:
        raise ImageDecodeError(f"cannot open the URI: {e}", kind="unreadable") from None
    if info.type == pafs.FileType.NotFound:
        raise ImageDecodeError("file not found (missing, or a dangling symlink)", kind="not_found")
    if info.type != pafs.FileType.File:
        raise ImageDecodeError("not a regular file (a folder, device, socket or pipe)", kind="unreadable")
    limit = preprocess.MAX_FILE_BYTES
    if info.size is not None and info.size > limit:
        raise ImageDecodeError(f"file is {info.size:,} bytes, over the {limit:,}-byte limit", kind="too_large")
    try:
        with fs.open_input_stream(path) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ImageDecodeError(f"cannot read the file: {e}", kind="unreadable") from None
    if len(data) > limit:
        raise ImageDecodeError(f"file grew over the {limit:,}-byte limit while being read", kind="too_large")
    return data


__all__ = ["is_uri", "expand_uris", "read_uri"]
