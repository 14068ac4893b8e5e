"""`memaware download NAME`: the only code in memaware that touches the network.

Each named benchmark has a table of sources (URL, sha256, size, archive type, folder it unpacks into).
Files go to DEST/.downloads/FILE.part and resume from where they stopped (HTTP Range); a finished
file is checked against its size and sha256; archives are unpacked into a temporary folder beside the
target, which is renamed into place only when everything has unpacked. A source with no known sha256
is refused unless the caller accepts it unverified.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from ..errors import MemawareError

ARCHIVES = ("tar.gz", "tar", "zip", "file")
MARKER = ".memaware-download.json"
CHUNK = 1 << 16


class DownloadError(MemawareError):
    """A download that cannot go on: offline, a source gone, a checksum mismatch, a bad archive."""


@dataclass(frozen=True)
class Source:
    """One file of a benchmark: where it is, what it must hash to, and how it unpacks."""

    url: str | None
    filename: str
    archive: str = "tar.gz"
    into: str = ""
    sha256: str | None = None
    size: int | None = None
    note: str = ""


GROUP_DRO = "https://nlp.stanford.edu/data/dro"
SOURCES: dict[str, tuple[Source, ...]] = {
    "waterbirds": (Source(f"{GROUP_DRO}/waterbird_complete95_forest2water2.tar.gz",
                          "waterbird_complete95_forest2water2.tar.gz",
                          note="GroupDRO's release; sha256 not published"),),
    "celeba": (Source(None, "img_align_celeba.zip", "zip",
                      note="Google Drive only (needs a browser): get img_align_celeba.zip, list_attr_celeba.txt "
                           "and list_eval_partition.txt from mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),),
    "multinli": (Source("https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip", "multinli_1.0.zip", "zip",
                        note="official MultiNLI 1.0; sha256 not published"),
                 Source("https://raw.githubusercontent.com/kohpangwei/group_DRO/master/dataset_metadata/multinli/"
                        "metadata_random.csv", "metadata_random.csv", "file",
                        note="GroupDRO's negation metadata; sha256 not published")),
    "civilcomments": (Source("https://worksheets.codalab.org/rest/bundles/0x8cd3de0634154aeaad2ee6eb96723c6e/"
                             "contents/blob/", "civilcomments_v1.0.tar.gz",
                             note="WILDS v1.0 bundle on CodaLab; sha256 not published"),),
    "metashift": (Source("https://www.dropbox.com/s/a7k65rlj4ownyr2/metashift.tar.gz?dl=1", "metashift.tar.gz",
                         note="SubpopBench's Dropbox copy; sha256 not published"),),
    "imagenet-backgrounds": (
        Source("https://github.com/MadryLab/backgrounds_challenge/releases/download/data/"
               "backgrounds_challenge_data.tar.gz", "backgrounds_challenge_data.tar.gz",
               note="MadryLab release (bg_challenge/); sha256 not published"),
        Source("https://www.dropbox.com/s/8w29bg9niya19rn/in9l.tar.gz?dl=1", "in9l.tar.gz",
               note="ImageNet-9 training images (in9l/), MadryLab's Dropbox; sha256 not published")),
    "mnist": tuple(Source(f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}.gz", f"{f}.gz", "file",
                          note="PyTorch's mirror of MNIST; sha256 not published")
                   for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
}


@dataclass
class Downloaded:
    """What a download produced: the target folder and the sha256 of each file."""

    target: Path
    files: list[dict] = field(default_factory=list)
    already: bool = False


def data_home() -> Path:
    """Where downloads go by default: $MEMAWARE_DATA, else ~/memaware-data."""
    return Path(os.environ.get("MEMAWARE_DATA", "~/memaware-data")).expanduser()


def default_target(name: str) -> Path:
    return data_home() / name


def load_sources(path: str | Path) -> dict[str, tuple[Source, ...]]:
    """A source table from JSON: {"NAME": [{"url": ..., "filename": ..., "archive": ..., ...}, ...]}."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
        return {name: tuple(Source(**entry) for entry in entries) for name, entries in table.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise DownloadError(f"{path}: not a source table ({type(err).__name__}: {err})".splitlines()[0]) from None


def check_known(name: str, table: dict) -> None:
    if name not in table:
        raise DownloadError(f"no download known for '{name}' (known: {', '.join(sorted(table))})")


def download(name: str, dest: str | Path | None = None, sources: dict[str, tuple[Source, ...]] | None = None,
             allow_unverified: bool = False, timeout: float = 30.0,
             progress: Callable[[str, int, int | None], None] | None = None) -> Downloaded:
    """Fetch, check and unpack the benchmark `name` into DEST/NAME (DEST defaults to data_home())."""
    table = SOURCES if sources is None else sources
    check_known(name, table)
    files = table[name]
    target = (Path(dest) if dest is not None else data_home()) / name
    if (target / MARKER).is_file():
        return Downloaded(target, json.loads((target / MARKER).read_text())["files"], already=True)
    check_sources(name, files, allow_unverified)
    if target.exists():
        raise DownloadError(f"{target} exists but no download finished there: move it away or choose --to")
    cache = target.parent / ".downloads"
    cache.mkdir(parents=True, exist_ok=True)
    fetched = [fetch(src, cache / src.filename, timeout, progress) for src in files]
    record = [{"filename": s.filename, "url": s.url, "sha256": digest, "verified": s.sha256 is not None}
              for s, (_, digest) in zip(files, fetched)]
    unpack_all(files, [p for p, _ in fetched], target, record)
    for path, _ in fetched:
        path.unlink(missing_ok=True)
    return Downloaded(target, record)


def check_sources(name: str, files: tuple[Source, ...], allow_unverified: bool) -> None:
    """Refuse before any network access: no URL, an unknown archive type, or no checksum."""
    for src in files:
        if not src.url:
            raise DownloadError(f"{name}: no public URL is known for {src.filename}: {src.note}")
        if src.archive not in ARCHIVES:
            raise DownloadError(f"{name}: unknown archive type '{src.archive}' (known: {', '.join(ARCHIVES)})")
        if urlparse(src.url).scheme not in ("http", "https"):
            raise DownloadError(f"{name}: only http(s) URLs are downloaded, got {src.url}")
        if src.sha256 is None and not allow_unverified:
            raise DownloadError(f"{name}: no sha256 is known for {src.filename}; rerun with --unverified to "
                                "accept it unchecked (its sha256 is printed after the download)")


def fetch(src: Source, path: Path, timeout: float, progress) -> tuple[Path, str]:
    """Download `src` to `path` (resuming `path`.part), check it, and return (path, sha256)."""
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        stream_to(src, part, timeout, progress)
        digest = verify(src, part)
        os.replace(part, path)
        return path, digest
    return path, verify(src, path)


def stream_to(src: Source, part: Path, timeout: float, progress) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "memaware-download", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urlopen(Request(src.url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the partial file is whole
            return
        gone = ": the source is gone (moved or removed); see docs/datasets.md" if err.code in (404, 410) else ""
        raise DownloadError(f"{src.url}: HTTP {err.code} {err.reason}{gone}") from None
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {urlparse(src.url).netloc} ({reason}): offline or blocked?") from None
    with response:
        resumed = have and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        have = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else src.size
        copy_body(response, part, "ab" if resumed else "wb", have, total, src, progress)


def copy_body(response, part: Path, mode: str, done: int, total: int | None, src: Source, progress) -> None:
    with open(part, mode) as out:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(src.filename, done, total)
        except (OSError, HTTPException, socket.timeout) as err:
            raise DownloadError(f"{src.url}: interrupted after {done} bytes ({type(err).__name__}); "
                                "run the command again to resume") from None
    if total is not None and done < total:
        raise DownloadError(f"{src.url}: interrupted after {done} of {total} bytes; run the command again to resume")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(src: Source, path: Path) -> str:
    """The file's sha256; a DownloadError (and the file removed) if its size or checksum is wrong."""
    size = path.stat().st_size
    problem = f"size {size} bytes, expected {src.size}" if src.size is not None and size != src.size else None
    digest = sha256_of(path)
    if problem is None and src.sha256 is not None and digest != src.sha256.lower():
        problem = f"sha256 {digest}, expected {src.sha256}"
    if problem:
        path.unlink()
        raise DownloadError(f"{src.filename}: checksum mismatch ({problem}); the file was removed, run again")
    return digest


def unpack_all(files, archives, target: Path, record: list[dict]) -> None:
    """Unpack every archive into a temporary folder beside `target`, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for src, archive in zip(files, archives):
            unpack(src, archive, tmp / src.into)
        (tmp / MARKER).write_text(json.dumps({"files": record}, indent=2) + "\n")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def unpack(src: Source, archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if src.archive == "file":
            shutil.copyfile(archive, dest / src.filename)
        elif src.archive == "zip":
            with zipfile.ZipFile(archive) as z:
                unsafe = [n for n in z.namelist() if n.startswith(("/", "\\")) or ".." in Path(n).parts]
                if unsafe:
                    raise DownloadError(f"{src.filename}: refusing the unsafe path '{unsafe[0]}' in the archive")
                z.extractall(dest)
        else:
            with tarfile.open(archive, "r:gz" if src.archive == "tar.gz" else "r:") as t:
                t.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DownloadError(f"{src.filename}: cannot unpack as {src.archive} ({type(err).__name__}: {err})") from None


def describe_sources(table: dict[str, tuple[Source, ...]] | None = None) -> list[dict]:
    """One row per file of the table, for `memaware download --list`."""
    return [{"name": name, **asdict(src)} for name, files in (table or SOURCES).items() for src in files]
