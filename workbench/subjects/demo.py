"""Demo subjects: people from Labeled Faces in the Wild (LFW), with a fixed train/holdout split.

The LFW copy is :func:`workbench.paths.lfw_dir` (``$WORKBENCH_LFW_DIR``, the shared data folder or
``$WORKBENCH_HOME/lfw``); its ``demo/manifest.csv`` lists ``path,identity,split,sha256,source``.
Where there is none, :func:`download_lfw` fetches the official deep-funneled archive, checks it,
unpacks it safely and builds ``demo/`` from it. LFW photos are news photos, for research use with
attribution (Huang et al., UMass TR 07-49, 2007); they are never copied into the repository.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from workbench import paths
from workbench.errors import OfflineError, UserError
from workbench.lifecycle.manifest import atomic_write_bytes

LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
LFW_MD5 = "68331da3eb755a505a502b5aacb3c201"  # published checksum of the official archive
DEMO_PEOPLE = ("Colin_Powell", "Gloria_Macapagal_Arroyo", "Hugo_Chavez", "Junichiro_Koizumi", "Kofi_Annan",
               "Laura_Bush", "Megawati_Sukarnoputri", "Naomi_Watts", "Serena_Williams", "Tony_Blair")
PHOTOS_PER_PERSON = 20  # photos 1-15 train, 16-20 holdout (the last quarter)
COLUMNS = ("path", "identity", "split", "sha256", "source")


def _find_demo() -> Path | None:
    for root in (paths.lfw_dir(), paths.home() / "lfw"):
        if root is not None and (root / "demo" / "manifest.csv").is_file():
            return root / "demo"
    return None


def _demo_root() -> Path:
    demo = _find_demo()
    if demo is None:
        raise UserError("no LFW copy with demo subjects was found: set WORKBENCH_LFW_DIR to a folder that "
                        "holds demo/manifest.csv, or add --download-lfw to download LFW (about 110 MB) "
                        f"into {paths.home() / 'lfw'}")
    return demo


def _rows() -> tuple[Path, list[dict[str, str]]]:
    demo = _demo_root()
    with open(demo / "manifest.csv", newline="", encoding="utf-8") as fh:
        return demo, list(csv.DictReader(fh))


def demo_subjects() -> list[str]:
    """Names of the demo people in the LFW copy."""
    _, rows = _rows()
    return sorted({row["identity"] for row in rows})


def demo_photos(name: str) -> list[tuple[Path, str]]:
    """``(path, split)`` of every demo photo of ``name``, in manifest order."""
    demo, rows = _rows()
    photos = []
    for row in rows:
        if row["identity"] != name:
            continue
        path = (demo / row["path"]).resolve()
        if not path.is_relative_to(demo.resolve()) or row["split"] not in ("train", "holdout"):
            raise UserError(f"{demo / 'manifest.csv'}: bad row for {row['path']!r}")
        photos.append((path, row["split"]))
    if not photos:
        names = ", ".join(sorted({row["identity"] for row in rows}))
        raise UserError(f"--demo: no demo subject {name!r}; choose one of {names}")
    return photos


def person_photos(name: str) -> list[Path]:
    """Every LFW photo of ``name``: ``people/<name>/`` of the LFW copy (154 people with 10–530 photos),
    else the person's 20 demo photos (``demo/``, or the download)."""
    root = paths.lfw_dir()
    folder = root / "people" / name if root is not None else None
    if folder is not None and folder.is_dir() and folder.resolve().parent == (root / "people").resolve():
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if found:
            return found
    return [p for p, _ in demo_photos(name)]


def subject_sources(demo: str | None, photos: list | None) -> tuple[list[Path], dict[str, str] | None]:
    """What to take in for a subject given as an LFW person *or* as photos/folders: ``(sources, splits)``
    for :func:`workbench.subjects.intake.intake`. Every photo of the person is taken in, and members are
    drawn from all of them at random (:mod:`workbench.subjects.split`); no split is given here."""
    if demo:
        return person_photos(demo), None
    return [Path(p) for p in photos or []], None


def ensure_lfw(download: bool = False) -> Path:
    """The demo folder; downloads LFW into ``$WORKBENCH_HOME/lfw`` first when asked and missing."""
    if download and _find_demo() is None:
        download_lfw(paths.home() / "lfw")
    return _demo_root()


def _offline(url: str, what: str) -> OfflineError:
    return OfflineError(f"could not download LFW from {url}: {what}. Set WORKBENCH_LFW_DIR to an existing "
                        "LFW copy (a folder holding demo/manifest.csv), or retry when online")


def _fetch(url: str, part: Path, progress: bool) -> str:
    """Stream ``url`` into ``part``; returns the MD5 of what was received."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        response = urllib.request.urlopen(url, timeout=30)  # noqa: S310 - the URL is ours or the caller's
    except urllib.error.HTTPError as exc:
        raise _offline(url, f"the server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _offline(url, str(getattr(exc, "reason", exc))) from None
    with response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        got = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="LFW",
                  disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (http.client.HTTPException, OSError) as exc:
                    raise _offline(url, f"the connection broke after {got} bytes ({exc})") from None
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got != total:
            raise _offline(url, f"the download stopped after {got} of {total} bytes")
    return md5.hexdigest()


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and folders with plain relative names; anything else fails the archive."""
    members = []
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        plain = not name.is_absolute() and ".." not in name.parts and "\\" not in member.name
        if not plain or not (member.isfile() or member.isdir()):
            raise UserError(f"the LFW archive holds an unsafe entry ({member.name!r}); it was not unpacked")
        members.append(member)
    return members


def _build_demo(dest: Path, tree: Path, url: str) -> None:
    """``dest/demo/<Name>/*.jpg`` and ``manifest.csv`` from the unpacked archive at ``tree``."""
    folders = {p.name: p for p in tree.rglob("*") if p.is_dir() and p.name in DEMO_PEOPLE}
    if not folders:
        raise UserError(f"the LFW archive from {url} holds none of the demo people; was it the right file?")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name in sorted(folders):
        photos = sorted(folders[name].glob("*.jpg"))[:PHOTOS_PER_PERSON]
        n_holdout = round(len(photos) / 4)
        for i, src in enumerate(photos):
            rel = f"{name}/{src.name}"
            target = dest / "demo" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            split = "holdout" if i >= len(photos) - n_holdout else "train"
            source = f"{url}:{src.relative_to(tree).as_posix()}"
            writer.writerow(dict(zip(COLUMNS, (rel, name, split, digest, source), strict=True)))
    atomic_write_bytes(dest / "demo" / "manifest.csv", out.getvalue().encode("utf-8"))


def download_lfw(dest: Path, url: str = LFW_URL, progress: bool = True, md5: str | None = None) -> Path:
    """Download LFW (deep-funneled) into ``dest``, verify, unpack safely, build ``dest/demo``.

    ``md5`` defaults to the official archive's checksum when ``url`` is the official one. Network
    failures raise :class:`OfflineError`; a corrupt or unsafe archive raises :class:`UserError`.
    """
    dest = Path(dest)
    if (dest / "demo" / "manifest.csv").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    expected = md5 or (LFW_MD5 if url == LFW_URL else None)
    part, staging = dest / ".lfw-download.part", dest / ".lfw-unpack"
    try:
        got = _fetch(url, part, progress)
        if expected and got != expected.lower():
            raise UserError(f"the LFW download from {url} is corrupted (MD5 {got}, expected {expected}): "
                            "retry")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with tarfile.open(part, "r:gz") as tar:
                tar.extractall(staging, members=_safe_members(tar), filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise UserError(f"the LFW archive from {url} could not be unpacked ({exc}): retry") from None
        _build_demo(dest, staging, url)
        for entry in staging.iterdir():  # keep the full tree too (e.g. for pretraining)
            target = dest / entry.name
            if not target.exists():
                entry.rename(target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return dest
