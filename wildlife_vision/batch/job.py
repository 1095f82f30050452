"""The output folder of a batch job (`predict --engine ray --output DIR/`): job manifest, numbered parts, resume.

A job is a sorted, duplicate-free list of input keys cut into fixed numbered blocks of ``rows_per_part``
inputs; block ``b`` holds inputs ``b * rows_per_part`` up to the next block, and its rows go to
``part-<b>.jsonl`` (JSONL prediction records, :mod:`wildlife_vision.records`, sorted by input). A part file is
written to a temporary name and renamed only once its block is complete, so a part file that exists is
whole; a crash leaves at most stale temporary files, which the next run removes. ``job.json`` (the
manifest) and ``inputs.jsonl.gz`` (the list itself) say what the job is: a resume lists the inputs again and
is refused, saying what differs, unless they, the model and the layout are the same; it then scores only the
blocks that have no part file. See docs/batch.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..data.manifest import atomic_write_bytes
from ..records import RECORD_SCHEMA

#: schema identifier of job.json
JOB_SCHEMA = "wildlife-vision/batch-job/v1"
JOB_FILE = "job.json"
INPUTS_FILE = "inputs.jsonl.gz"
LOCK_FILE = ".lock"
_PART = re.compile(r"part-(\d+)\.jsonl\Z")
_TEMP = re.compile(r"\.(part-\d+\.jsonl|job\.json|inputs\.jsonl\.gz)\..*\.tmp\Z")


class JobError(ValueError):
    """The output folder cannot be used for this job (another job's folder, inputs that differ, damaged parts)."""


def _listing(keys: Sequence[str]) -> bytes:
    # one JSON string per line; ASCII escapes keep names that are not valid UTF-8 exact
    return "".join(json.dumps(k, ensure_ascii=True) + "\n" for k in keys).encode("ascii")


@dataclass
class Job:
    """One job: its sorted input keys, the model whose rows it holds, and its block layout."""

    keys: List[str]
    model: str
    model_version: str
    rows_per_part: int = 1000
    shard: Optional[str] = None
    inputs_sha256: str = ""

    def __post_init__(self) -> None:
        if self.rows_per_part < 1:
            raise ValueError(f"rows per part must be at least 1, got {self.rows_per_part}")
        self.keys = sorted(set(self.keys))
        self.inputs_sha256 = hashlib.sha256(_listing(self.keys)).hexdigest()

    @property
    def n_parts(self) -> int:
        return -(-len(self.keys) // self.rows_per_part)

    def block(self, b: int) -> List[str]:
        """The input keys of block ``b``, sorted."""
        return self.keys[b * self.rows_per_part:(b + 1) * self.rows_per_part]

    def block_of(self, index: int) -> int:
        """The block of the input at position ``index`` of :attr:`keys`."""
        return index // self.rows_per_part

    def part_name(self, b: int) -> str:
        return f"part-{b:0{max(5, len(str(max(self.n_parts - 1, 0))))}d}.jsonl"

    def manifest(self) -> Dict[str, Any]:
        from .._version import __version__

        return {"schema": JOB_SCHEMA, "record_schema": RECORD_SCHEMA, "format": "jsonl", "model": self.model,
                "model_version": self.model_version, "inputs": len(self.keys), "inputs_sha256": self.inputs_sha256,
                "rows_per_part": self.rows_per_part, "parts": self.n_parts, "shard": self.shard,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wildlife_vision": __version__}


@dataclass
class Plan:
    """What a run of a job has to do: the blocks still to score, and what an earlier run left."""

    job: Job
    folder: str
    todo: List[int] = field(default_factory=list)       #: blocks without a part file, ascending
    done: List[int] = field(default_factory=list)       #: blocks whose part file exists (not redone)
    resumed: bool = False                                #: the folder already held this job
    stale_temps: int = 0                                 #: temporary files of an interrupted run, removed

    @property
    def done_rows(self) -> int:
        return sum(len(self.job.block(b)) for b in self.done)


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (``.NAME.*.tmp``, which
    :data:`_TEMP` recognises as a crash's leftover), fsynced, then renamed."""
    atomic_write_bytes(path, data, fsync=True)


def write_part(plan: Plan, b: int, lines: Iterable[bytes]) -> str:
    """Write block ``b``'s complete rows (whole JSONL lines) as its part file, atomically; returns its path."""
    path = os.path.join(plan.folder, plan.job.part_name(b))
    atomic_write(path, b"".join(lines))
    return path


def _own_files(folder: str) -> Tuple[List[str], List[str], List[str]]:
    """(part files, stale temporary files, other files) in ``folder``."""
    parts, temps, other = [], [], []
    for name in sorted(os.listdir(folder)):
        if _PART.match(name):
            parts.append(name)
        elif _TEMP.match(name):
            temps.append(name)
        elif name not in (JOB_FILE, INPUTS_FILE, LOCK_FILE):
            other.append(name)
    return parts, temps, other


def _read_manifest(folder: str) -> Dict[str, Any]:
    path = os.path.join(folder, JOB_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError:
        raise JobError(f"{path} is not valid JSON; it was not written by `wildlife-vision predict --engine ray`, or "
                       "was edited. Use another --output, or --overwrite to start the job again") from None
    if not isinstance(data, dict) or data.get("schema") != JOB_SCHEMA:
        raise JobError(f"{path} is not a {JOB_SCHEMA} job manifest; use another --output or --overwrite")
    return data


def _stored_keys(folder: str) -> Optional[List[str]]:
    try:
        with gzip.open(os.path.join(folder, INPUTS_FILE), "rb") as f:
            return [json.loads(line) for line in f.read().splitlines() if line]
    except (OSError, ValueError, EOFError):
        return None


def _differences(stored: Optional[List[str]], keys: List[str]) -> str:
    if stored is None:
        return ""
    old, new = set(stored), set(keys)
    added, gone = sorted(new - old), sorted(old - new)

    def some(xs: List[str]) -> str:
        return ", ".join(repr(x) for x in xs[:3]) + (", ..." if len(xs) > 3 else "")

    bits = []
    if added:
        bits.append(f"{len(added)} not in the job ({some(added)})")
    if gone:
        bits.append(f"{len(gone)} of the job's missing ({some(gone)})")
    return ": " + "; ".join(bits) if bits else ""


def _check_same_job(folder: str, data: Dict[str, Any], job: Job, rows_per_part_given: bool) -> None:
    where = os.path.join(folder, JOB_FILE)
    fix = "resume with the same PATHs, --model and --shard, or write to another --output, or pass --overwrite"
    if (data.get("model"), data.get("model_version")) != (job.model, job.model_version):
        raise JobError(f"{where} is a job of model {data.get('model')} {data.get('model_version')}, not "
                       f"{job.model} {job.model_version}; resuming would mix results. {fix[0].upper() + fix[1:]}")
    if data.get("shard") != job.shard:
        raise JobError(f"{where} is a job of shard {data.get('shard') or 'none (the whole list)'}, not "
                       f"{job.shard or 'the whole list'}; {fix}")
    if data.get("inputs_sha256") != job.inputs_sha256:
        raise JobError(f"the inputs differ from the job in {folder}: it has {data.get('inputs')} inputs, these PATHs "
                       f"list {len(job.keys)}{_differences(_stored_keys(folder), job.keys)}; {fix}")
    stored = data.get("rows_per_part")
    if not isinstance(stored, int) or stored < 1:
        raise JobError(f"{where} has no valid rows_per_part; use --overwrite to start the job again")
    if rows_per_part_given and stored != job.rows_per_part:
        raise JobError(f"the job in {folder} has {stored} rows per part, not {job.rows_per_part}; resume without "
                       "--rows-per-part (or with the same value)")


def prepare(folder: str, job: Job, resume: bool, overwrite: bool, rows_per_part_given: bool = False) -> Plan:
    """Open (create, check, resume or start again) the job folder and say which blocks are left to score.

    Raises :class:`JobError` for usage problems (the folder holds another job or other files, inputs that
    differ, a damaged part file), OSError when the folder cannot be read or written. On resume ``job`` takes the
    stored ``rows_per_part``.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise JobError(f"--output {folder!r} is a file; --engine ray writes a folder of part files: name a folder")
    os.makedirs(folder, exist_ok=True)
    parts, temps, other = _own_files(folder)
    has_job = os.path.exists(os.path.join(folder, JOB_FILE))
    if other:
        names = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise JobError(f"{folder} holds files that are not part of a job ({names}); name a new or empty folder")
    if (has_job or parts) and not (resume or overwrite):
        raise JobError(f"{folder} already holds a job ({len(parts)} part files); pass --resume to finish it, or "
                       "--overwrite to start it again")
    plan = Plan(job, folder)
    if has_job and resume:
        data = _read_manifest(folder)
        _check_same_job(folder, data, job, rows_per_part_given)
        job.rows_per_part = int(data["rows_per_part"])
        plan.resumed = True
    else:
        if has_job or parts:  # --overwrite (or --resume of a folder without a manifest: nothing to trust)
            if not overwrite:
                raise JobError(f"{folder} has part files but no {JOB_FILE}; it cannot be resumed: pass --overwrite")
            for name in parts + [JOB_FILE, INPUTS_FILE]:
                try:
                    os.unlink(os.path.join(folder, name))
                except FileNotFoundError:
                    pass
            parts = []
        atomic_write(os.path.join(folder, INPUTS_FILE), gzip.compress(_listing(job.keys), mtime=0))
        atomic_write(os.path.join(folder, JOB_FILE), (json.dumps(job.manifest(), indent=2) + "\n").encode("utf-8"))
    for name in temps:
        try:
            os.unlink(os.path.join(folder, name))
            plan.stale_temps += 1
        except FileNotFoundError:
            pass
    present = set(parts)
    for name in parts:
        b = int(_PART.match(name).group(1))  # type: ignore[union-attr]
        if b >= job.n_parts or name != job.part_name(b):
            raise JobError(f"{os.path.join(folder, name)} is not a part of this job ({job.n_parts} parts); remove "
                           "it, or pass --overwrite")
    for b in range(job.n_parts):
        name = job.part_name(b)
        if name not in present:
            plan.todo.append(b)
            continue
        with open(os.path.join(folder, name), "rb") as f:
            rows = f.read().count(b"\n")
        if rows != len(job.block(b)):
            raise JobError(f"{os.path.join(folder, name)} has {rows} rows but its block has {len(job.block(b))}: it "
                           "was edited or damaged; delete it and --resume again to score that block anew")
        plan.done.append(b)
    return plan


class FolderLock:
    """An exclusive lock on the job folder (``.lock``, POSIX ``flock``), so two runs never write one job."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd: Optional[int] = None

    def __enter__(self) -> "FolderLock":
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise JobError(f"another `wildlife-vision predict` is writing {os.path.dirname(self.path)}; wait for "
                           "it to end, or write to another --output") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_rows(folder: str) -> List[Dict[str, Any]]:
    """Every record in the part files of a job folder, part by part (for checks and small jobs)."""
    out: List[Dict[str, Any]] = []
    parts, _, _ = _own_files(folder)
    for name in parts:
        with open(os.path.join(folder, name), "rb") as f:
            out.extend(json.loads(line) for line in f.read().splitlines() if line)
    return out


__all__ = ["JOB_SCHEMA", "JOB_FILE", "INPUTS_FILE", "Job", "Plan", "JobError", "FolderLock", "prepare",
           "write_part", "atomic_write", "read_rows"]
