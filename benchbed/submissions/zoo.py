"""The model zoo: ``benchbed.load_model(board_or_run, entry)`` returns a published entry's linearized
model, rebuilt by the core from its checkpoint and checked against the sha256 its record states;
``benchbed.load_model(folder)`` one in the plain format (``manifest.json`` + ``arrays.npz``: what
``benchbed export`` writes and ``benchbed verify`` takes from an outside lab);
``benchbed.load_model(board, name)`` an external row's submission, where the board says it lies, checked
against the hash it was verified with.

``board_or_run`` is a run directory, a leaderboard's JSON twin (a path, or its name in
``leaderboards/``), or the URL of one (``https://…/smoke.json``, fetched with a 60 s timeout; a
``file://…`` address is read as the local path it names). Only regular files are opened. A board lists every
entry's checkpoint relative to itself, so a board hosted beside its run directory serves its
models; downloads are cached by their sha256 (``$BENCHBED_CACHE``, default ``~/.cache/benchbed``)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

from torch import nn

from benchbed.config import PLAIN_NAME
from benchbed.errors import BenchbedError
from benchbed.files import atomic_write, read_json
from benchbed.model.checkpoint import FORMAT, model_from_payload, read_checkpoint
from benchbed.model.plain import MANIFEST, read_plain
from benchbed.plugin.manager import Plugins, plugin_manager
from benchbed.run.rundir import RunDir
from benchbed.submissions.verify import submission_sha256

BOARDS = Path("leaderboards")


def cache_dir() -> Path:
    return Path(os.environ.get("BENCHBED_CACHE", "~/.cache/benchbed")).expanduser() / "models"


def load_model(board_or_run: str | Path, entry: str | None = None) -> nn.Module:
    """The entry's model in eval mode, from a run directory, a leaderboard JSON (path, name or URL); or
    the model of a plain-format folder (no entry)."""
    folder = Path(str(board_or_run)).expanduser()
    if folder.is_dir() and (folder / MANIFEST).is_file():
        if entry is not None:
            raise BenchbedError(f"{folder} is one model in the plain format; load it without an entry name")
        return model_from_payload(read_plain(folder, FORMAT), str(folder), models=Plugins(plugin_manager()).models).eval()
    if entry is None:
        raise BenchbedError(f"name the entry to load from {board_or_run} (a plain-format folder needs none)")
    path, sha256, external = _locate(str(board_or_run), entry)
    if external:
        return _submission(path, sha256, entry)
    file = read_checkpoint(path)
    if file.sha256 != sha256:
        raise BenchbedError(f"{path} is not the checkpoint {entry!r} was published with (sha256 {file.sha256[:12]}…, "
                            f"the record's {sha256[:12]}…); fetch it again or rerun the entry")
    return model_from_payload(file.payload, file.path, models=Plugins(plugin_manager()).models).eval()


def _submission(path: Path, sha256: str, name: str) -> nn.Module:
    """An external row's model, from the submission it was verified with (a plain folder or a checkpoint)."""
    if not path.exists():
        raise BenchbedError(f"{path}, where the board says {name!r}'s submission lies, does not exist; fetch the "
                            "submission beside the board")
    if submission_sha256(path) != sha256:
        raise BenchbedError(f"{path} is not the submission {name!r} was verified with (sha256 mismatch); fetch it "
                            "again, or verify and publish it again")
    payload = read_plain(path, FORMAT) if path.is_dir() else read_checkpoint(path).payload
    return model_from_payload(payload, str(path), models=Plugins(plugin_manager()).models).eval()


def _locate(source: str, entry: str) -> tuple[Path, str, bool]:
    """The local checkpoint file of ``entry`` (fetched into the cache from a URL) and its stated sha256;
    or, for an external row, its submission's path and sha256 (``True``)."""
    url = urlparse(source)
    if url.scheme in ("http", "https"):
        try:
            board = json.loads(_fetch(source))
        except ValueError:
            raise BenchbedError(f"{source} is no leaderboard JSON; pass the .json twin of a board") from None
        item = _board_entry(board, entry, source)
        if item.get("external"):
            raise BenchbedError(f"{entry!r} on {source} is an external submission, which a URL cannot serve file by "
                                f"file; download {urljoin(source, item['path'])} and pass its local path")
        return _cached(urljoin(source, item["path"]), item["sha256"]), item["sha256"], False
    # a file:// address is a local path: read as one, so that only regular files are ever opened
    path = Path(urllib.request.url2pathname(url.path) if url.scheme == "file" else source).expanduser()
    if not path.exists() and re.fullmatch(PLAIN_NAME, source):
        path = BOARDS / f"{source}.json"
    if path.is_dir():
        record = RunDir(path).finished(entry)
        if record is None or record["status"] != "ok":
            raise BenchbedError(f"no finished entry {entry!r} in the run {path}; pass one listed in {path}/entries")
        return RunDir(path).checkpoint_path(entry), record["checkpoint_sha256"], False
    if not path.is_file():  # a FIFO or a device is no board: never opened, never waited on
        raise BenchbedError(f"{source} is no run directory, leaderboard JSON or URL; pass one")
    try:
        board = read_json(path)
    except (ValueError, UnicodeDecodeError):
        raise BenchbedError(f"{path} is no leaderboard JSON; pass the .json twin of a board") from None
    item = _board_entry(board, entry, str(path))
    if item.get("external"):
        return path.parent / item["path"], item["sha256"], True
    checkpoint = path.parent / item["path"]
    if not checkpoint.is_file():
        raise BenchbedError(f"{checkpoint}, where {path} says {entry!r}'s checkpoint lies, is no file; fetch the run "
                            "directory the board was published from beside it")
    return checkpoint, item["sha256"], False


def _board_entry(board: object, entry: str, where: str) -> dict:
    if not isinstance(board, dict) or not isinstance(board.get("entries"), list):
        raise BenchbedError(f"{where} is no leaderboard JSON; pass the .json twin of a board")
    outside = [r for r in board.get("external") or [] if isinstance(r, dict)]
    for result in outside:
        if entry in (result.get("name"), f"{result.get('name')} (external)"):
            submission = result.get("submission")
            if not (isinstance(submission, dict) and isinstance(submission.get("path"), str)
                    and isinstance(submission.get("sha256"), str)):
                raise BenchbedError(f"{where} does not say where the external submission {entry!r} lies (verified "
                                    "before results recorded it); ask its lab for the files")
            return {**submission, "external": True}
    items = [i for i in board["entries"] if isinstance(i, dict)]
    for item in items:
        if item.get("entry") == entry:
            checkpoint = item.get("checkpoint")
            if not checkpoint:
                raise BenchbedError(f"{entry!r} on {where} has no checkpoint (status {item.get('status')})")
            if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("path"), str)
                    and isinstance(checkpoint.get("sha256"), str)):
                raise BenchbedError(f"{where} is a malformed board: {entry!r}'s checkpoint has no path and sha256; "
                                    "publish the board again")
            return checkpoint
    listed = [i.get("entry") for i in items if i.get("checkpoint")] + [r.get("name") for r in outside]
    raise BenchbedError(f"{where} lists no entry {entry!r}; it has {', '.join(listed[:8])}"
                        + (" …" if len(listed) > 8 else ""))


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchbedError(f"cannot fetch {url} ({getattr(exc, 'reason', exc)}); check the address or the network") from None


def _cached(url: str, sha256: str) -> Path:
    """The checkpoint at ``url``, from the cache when its bytes there have the stated hash."""
    path = cache_dir() / f"{sha256}.pt"
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path
    raw = _fetch(url)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise BenchbedError(f"{url} does not hold the checkpoint the board states (sha256 mismatch); the board and "
                            "its run directory are out of step")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(raw))
    return path
