"""Photo intake on real LFW photos, and the hostile variants of PRIVACY.md ("Inputs") built from them.

Photos are read from the shared LFW copy (never copied into the repository); every hostile file is
generated in ``tmp_path``. ``WORKBENCH_HOME`` points into ``tmp_path``, so nothing touches the real home.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import manifest
from workbench.subjects.decode import PhotoRejected, encode_png, load_photo
from workbench.subjects.faces import align_crop, detect_faces
from workbench.subjects.intake import intake, load_subject
from workbench.subjects.store import SubjectStore

LFW = Path(__file__).parents[1].parent / "shared/data/lfw"
FIXTURE = LFW / "fixture"
REPO = Path(__file__).parents[1]
HASH_PNG = re.compile(r"^[0-9a-f]{64}\.png$")

pytestmark = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"no LFW copy at {LFW}")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_LFW_DIR", str(LFW))
    return tmp_path / "home"


def photo(name: str = "Colin_Powell", i: int = 1) -> Path:
    return FIXTURE / name / f"{name}_{i:04d}.jpg"


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def take_in(tmp_path: Path, files: dict[str, bytes], subject: str = "s1", **kw):
    """Write ``files`` into an upload folder and take them in, in the given order."""
    return intake([write(tmp_path / "up" / n, d) for n, d in files.items()], subject, **kw)


def reasons(report) -> dict[str, str]:
    return {r.source: r.reason for r in report.rejected}


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG that compresses to almost nothing (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    comp, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def linear_srgb_icc() -> bytes:
    """A minimal ICC v2 RGB profile: sRGB primaries with a linear (gamma 1.0) tone curve."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)
    text = b"linear sRGB test\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 11 + b"\0" * 67
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, blob in tags:
        blob += b"\0" * (-len(blob) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(blob))
        data += blob
    body = struct.pack(">I", len(tags)) + table + data
    header = (struct.pack(">I", 128 + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + body


# --- decoding and normalisation -------------------------------------------------------------------

def test_png_with_alpha_is_composited_on_white(tmp_path):
    im = rgb(photo()).convert("RGBA")
    alpha = np.full((250, 250), 255, np.uint8)
    alpha[:, :30] = 0  # a transparent strip over black pixels
    arr = np.asarray(im).copy()
    arr[:, :30, :3] = 0
    arr[:, :, 3] = alpha
    data = encoded(Image.fromarray(arr, "RGBA"), "PNG")
    out = np.asarray(load_photo(data))
    assert out.shape == (250, 250, 3) and (out[:, :30] == 255).all()
    report = take_in(tmp_path, {"alpha.png": data})
    assert [a.source for a in report.accepted] == ["alpha.png"]


def test_palette_and_la_transparency(tmp_path):
    grey = rgb(photo()).convert("L")
    la = Image.merge("LA", (grey, Image.new("L", grey.size, 0)))
    assert (np.asarray(load_photo(encoded(la, "PNG"))) == 255).all()
    pal = rgb(photo()).convert("P")
    assert load_photo(encoded(pal, "PNG", transparency=0)).mode == "RGB"


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    grey = np.asarray(rgb(photo()).convert("L"))
    data16 = encoded(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    out = np.asarray(load_photo(data16)).astype(int)
    assert np.abs(out[:, :, 0] - grey).max() <= 1  # clipping would have made it (nearly) all white
    colour = np.asarray(rgb(photo()))
    ok, png16 = cv2.imencode(".png", colour[:, :, ::-1].astype(np.uint16) * 257)
    assert ok
    assert np.abs(np.asarray(load_photo(png16.tobytes())).astype(int) - colour).max() <= 1
    report = take_in(tmp_path, {"deep.png": png16.tobytes()})
    assert len(report.accepted) == 1


def test_cmyk_jpeg_is_converted(tmp_path):
    im = rgb(photo())
    data = encoded(im.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_photo(data)
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - np.asarray(im)).mean() < 8
    assert len(take_in(tmp_path, {"cmyk.jpg": data}).accepted) == 1


def test_icc_profile_is_converted_to_srgb():
    flat = Image.new("RGB", (16, 16), (128, 128, 128))
    for fmt in ("PNG", "JPEG"):
        out = np.asarray(load_photo(encoded(flat, fmt, icc_profile=linear_srgb_icc())))
        assert abs(int(out[0, 0, 0]) - 188) <= 2  # linear 0.5 is sRGB 188, not 128


def test_exif_orientation_applied_and_gps_removed(tmp_path, home):
    upright = rgb(photo("Junichiro_Koizumi", 2)).crop((0, 0, 250, 200))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    data = encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the GPS really is there
    out = load_photo(data)
    assert out.size == upright.size and not out.info and not out.getexif()
    assert np.abs(np.asarray(out).astype(int) - np.asarray(upright)).mean() < 4
    report = take_in(tmp_path, {"gps.jpg": data})
    assert len(report.accepted) == 1
    for stored in (home / "subjects" / "s1").glob("*/*.png"):
        raw = stored.read_bytes()
        with Image.open(stored) as im:
            assert not im.getexif() and "exif" not in im.info
        assert b"Exif" not in raw and b"eXIf" not in raw and b"tEXt" not in raw and b"iTXt" not in raw


def test_trailing_bytes_are_dropped(tmp_path, home):
    data = photo().read_bytes() + b"GARBAGE-AFTER-EOI" * 500
    report = take_in(tmp_path, {"trail.jpg": data})
    assert len(report.accepted) == 1
    stored = home / "subjects" / "s1" / "photos" / f"{report.accepted[0].sha256}.png"
    raw = stored.read_bytes()
    assert raw.endswith(b"IEND\xaeB`\x82") and b"GARBAGE" not in raw
    assert encode_png(load_photo(raw)) == raw  # stored bytes are exactly the canonical encoding


def test_webp_is_accepted(tmp_path):
    assert len(take_in(tmp_path, {"face.webp": encoded(rgb(photo()), "WEBP", quality=90)}).accepted) == 1


def test_multi_frame_files_give_their_first_frame():
    first, second = rgb(photo("Colin_Powell", 1)), rgb(photo("Serena_Williams", 1))
    for fmt in ("MPO", "WEBP"):  # a phone's multi-picture JPEG, an animated WEBP
        data = encoded(first, fmt, save_all=True, append_images=[second], quality=95)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
        out = np.asarray(load_photo(data)).astype(int)
        assert np.abs(out - np.asarray(first)).mean() < 6


def test_hostile_files_are_rejected_with_reasons(tmp_path):
    im = rgb(photo())
    jpeg = photo().read_bytes()
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "bomb.png": bilevel_png(8000, 6000),  # 48 MP: over the 40 MP limit, Pillow only warns
        "bigger-bomb.png": bilevel_png(12000, 8000),  # 96 MP: Pillow refuses outright
        "gif.jpg": encoded(im.convert("P"), "GIF"),
        "bmp.jpg": encoded(im, "BMP"),
        "text.jpg": b"just some text, not a photo\n" * 10,
        "empty.jpg": b"",
    }
    report = take_in(tmp_path, files)
    assert not report.accepted
    why = reasons(report)
    assert set(why) == set(files)
    assert "truncated" in why["truncated.jpg"]
    assert "too large" in why["bomb.png"] and "too large" in why["bigger-bomb.png"]
    assert "not a JPEG, PNG or WEBP" in why["gif.jpg"] and "GIF" in why["gif.jpg"]
    assert "BMP" in why["bmp.jpg"] and "text" in why["text.jpg"] and "empty" in why["empty.jpg"]
    with pytest.raises(PhotoRejected):
        load_photo(files["bomb.png"])


# --- faces ------------------------------------------------------------------------------------------

def test_face_rejections(tmp_path):
    collage = Image.new("RGB", (500, 250))
    collage.paste(rgb(photo("Colin_Powell", 1)), (0, 0))
    collage.paste(rgb(photo("Serena_Williams", 3)), (250, 0))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    tiny = Image.new("RGB", (640, 480), (120, 120, 120))
    tiny.paste(rgb(photo()).resize((60, 60), Image.LANCZOS), (300, 200))
    report = take_in(tmp_path, {"two.png": encoded(collage, "PNG"), "noise.png": encoded(noise, "PNG"),
                                "tiny.png": encoded(tiny, "PNG")})
    why = reasons(report)
    assert not report.accepted
    assert why["two.png"].startswith("more than one person")
    assert why["noise.png"].startswith("no face found")
    assert why["tiny.png"].startswith("the face is too small") and "32 px" in why["tiny.png"]


def test_near_duplicate_is_rejected_but_other_photos_of_the_person_are_not(tmp_path):
    files = {p.name: p.read_bytes() for p in sorted((FIXTURE / "Colin_Powell").glob("*.jpg"))}
    files["copy.jpg"] = encoded(rgb(photo("Colin_Powell", 3)).resize((200, 200), Image.LANCZOS), "JPEG",
                                quality=70)
    report = take_in(tmp_path, files)
    assert len(report.accepted) == 5
    assert list(reasons(report)) == ["copy.jpg"]
    assert "near-duplicate of Colin_Powell_0003.jpg" in reasons(report)["copy.jpg"]
    # and across runs: the copy against what is already stored
    again = intake([tmp_path / "up" / "copy.jpg"], "s1")
    assert "near-duplicate of a photo taken in earlier" in reasons(again)["copy.jpg"]


def test_align_crop_levels_eyes_and_is_deterministic():
    img = rgb(photo("Serena_Williams", 1)).rotate(20, resample=Image.BICUBIC, expand=True)
    face = max(detect_faces(np.asarray(img)), key=lambda f: f.area)
    crop = align_crop(img, face, 128)
    assert crop.size == (128, 128)
    assert np.array_equal(np.asarray(crop), np.asarray(align_crop(img, face, 128)))
    again = detect_faces(np.asarray(crop))[0]
    (lx, ly), (rx, ry) = again.landmarks[:2]
    assert abs(np.degrees(np.arctan2(ry - ly, rx - lx))) < 8  # was 20 degrees
    assert 0.45 < again.box[2] / 128 < 0.7  # face ~55-60% of the width


def test_scrfd_without_pack_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_INSIGHTFACE_ROOT", str(tmp_path / "packs"))
    with pytest.raises(UserError, match=r"packs.*buffalo_l") as err:
        take_in(tmp_path, {"a.jpg": photo().read_bytes()}, detector="scrfd")
    assert "insightface" in str(err.value)
    with pytest.raises(UserError, match="unknown face detector"):
        take_in(tmp_path, {"a.jpg": photo().read_bytes()}, detector="nope")


# --- the store, splits, idempotency -----------------------------------------------------------------

def test_user_file_names_never_become_paths(tmp_path, home):
    odd = tmp_path / "up" / "sub" / ".." / "Zoë 名前 ..\\..\\evil.jpg"
    write(tmp_path / "up" / "Zoë 名前 ..\\..\\evil.jpg", photo().read_bytes())
    (tmp_path / "up" / "sub").mkdir()
    report = intake([odd], "s1")
    assert [a.source for a in report.accepted] == ["Zoë 名前 ..\\..\\evil.jpg"]
    root = home / "subjects" / "s1"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["crops/" + report.accepted[0].sha256 + ".png", "manifest.jsonl",
                     "photos/" + report.accepted[0].sha256 + ".png", "subject.json"]
    assert not any("evil" in p.name for p in tmp_path.rglob("*") if p.parent != tmp_path / "up")


def test_one_bad_file_among_good_ones(tmp_path):
    good = {f"g{i}.jpg": photo("Junichiro_Koizumi", i).read_bytes() for i in (2, 3, 4)}
    files = {"g2.jpg": good["g2.jpg"], "bad.jpg": good["g3.jpg"][:500], **good, "g2-copy.jpg": good["g2.jpg"]}
    report = take_in(tmp_path, files)
    assert sorted(a.source for a in report.accepted) == ["g2.jpg", "g3.jpg", "g4.jpg"]
    assert list(reasons(report)) == ["bad.jpg", "g2-copy.jpg"]
    assert reasons(report)["g2-copy.jpg"].startswith("the same photo as g2.jpg")
    missing = intake([tmp_path / "nope.jpg", tmp_path / "up" / "g4.jpg"], "s2")
    assert len(missing.accepted) == 1 and "no such file" in reasons(missing)["nope.jpg"]


def test_hash_split_is_deterministic_and_intake_idempotent(tmp_path, home):
    folder = FIXTURE / "Serena_Williams"
    report = intake([folder], "s1", holdout_fraction=0.25)
    assert len(report.accepted) == 5 and (report.train, report.holdout) == (4, 1)
    lines = manifest.read("s1")
    assert {a.kind for a in lines} == {"upload", "crop", "record"} and len(lines) == 11
    again = intake(sorted(folder.glob("*.jpg"), reverse=True), "s1", holdout_fraction=0.25)
    assert {(a.sha256, a.split) for a in again.accepted} == {(a.sha256, a.split) for a in report.accepted}
    assert not any(a.new for a in again.accepted)
    assert manifest.read("s1") == lines  # nothing rewritten, nothing registered twice
    subject = load_subject("s1")
    assert subject.resolution == 64 and len(subject.train) == 4 and len(subject.holdout) == 1
    assert all(p.is_file() and HASH_PNG.match(p.name) for p in subject.train + subject.holdout)
    with Image.open(subject.train[0]) as crop:
        assert crop.size == (64, 64)
    record = json.loads((home / "subjects" / "s1" / "subject.json").read_text())
    assert record["id"] == "s1" and len(record["accepted"]) == 5
    photos = SubjectStore("s1").accepted_photos()  # the normalised uploads, named by their hash
    assert [p.stem for p in photos] == [e["sha256"] for e in record["accepted"]] and all(p.is_file() for p in photos)
    with pytest.raises(UserError, match="resolution"):
        intake([folder], "s1", resolution=128)


def test_load_subject_before_intake_is_a_clear_error():
    with pytest.raises(UserError, match="no photos yet"):
        load_subject("nobody")


def test_demo_subject_split_matches_manifest():
    from workbench.subjects.demo import demo_photos, demo_subjects, subject_sources

    assert len(demo_subjects()) == 10
    photos = demo_photos("Naomi_Watts")
    # a run takes in every LFW photo of the person and draws its own random split (no split is given)
    everything, given = subject_sources("Naomi_Watts", None)
    assert given is None and sorted(everything) == sorted((LFW / "people" / "Naomi_Watts").glob("*.jpg"))
    assert {p.name for p, _ in photos} <= {p.name for p in everything}
    assert subject_sources(None, ["a.jpg", Path("b")]) == ([Path("a.jpg"), Path("b")], None)
    splits = {str(p): s for p, s in photos}
    report = intake([p for p, _ in photos], "demo-naomi", resolution=64, splits=splits)
    assert not report.rejected and (report.train, report.holdout) == (15, 5)
    with open(LFW / "demo" / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["identity"] == "Naomi_Watts"]
    expected = {Path(r["path"]).name: r["split"] for r in rows}
    assert {a.source: a.split for a in report.accepted} == expected


# --- command line -----------------------------------------------------------------------------------

def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    code = ("import sys, workbench.cli as c; c.COMMAND_MODULES = ('workbench.subjects.commands',); "
            "sys.exit(c.main(sys.argv[1:]))")
    env = {"WORKBENCH_HOME": str(home), "WORKBENCH_LFW_DIR": str(LFW), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_cli_json_output_parses(tmp_path, home):
    write(tmp_path / "up" / "bad.jpg", b"not an image")
    result = run_cli("intake", str(FIXTURE / "Colin_Powell"), str(tmp_path / "up"), "--subject", "cli-1",
                     "--json", home=home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["accepted"]) == 5 and {a["split"] for a in report["accepted"]} == {"train", "holdout"}
    assert report["rejected"] == [{"source": "bad.jpg", "reason": report["rejected"][0]["reason"]}]
    assert all(HASH_PNG.match(a["sha256"] + ".png") for a in report["accepted"])


def test_cli_only_bad_files_exits_2_without_traceback(tmp_path, home):
    write(tmp_path / "up" / "a.jpg", b"GIF89a not really")
    write(tmp_path / "up" / "b.png", photo().read_bytes()[:300])
    result = run_cli("intake", str(tmp_path / "up"), "--subject", "cli-2", home=home)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "no photo was accepted" in result.stderr
    assert "a.jpg" in result.stdout and "b.png" in result.stdout
    bad_id = run_cli("intake", str(tmp_path / "up"), "--subject", "../x", home=home)
    assert bad_id.returncode != 0 and "Traceback" not in bad_id.stderr


def test_cli_intake_can_protect_the_training_photos(tmp_path, home):
    result = run_cli("intake", str(FIXTURE / "Colin_Powell"), "--subject", "cli-3", "--protect", "fsmg",
                     "--protect-epsilon", "0.04", "--protect-rounds", "1", home=home)
    assert result.returncode == 0, result.stderr
    assert "protected 4 training photos (fsmg, epsilon 0.04)" in result.stdout, result.stdout
    report = json.loads(next((home / "subjects" / "cli-3" / "protected").glob("*/protection.json")).read_text())
    assert report["linf_levels"] <= report["epsilon_levels"] == 5 and report["psnr_db"]["n"] == 4
    assert report["base_loss_protected"] > report["base_loss_clean"], "the perturbation must raise the denoising loss"
    bad = run_cli("intake", str(FIXTURE / "Colin_Powell"), "--subject", "cli-3", "--protect", "aspl",
                  "--protect-epsilon", "2", home=home)
    assert bad.returncode != 0 and "--protect-epsilon" in bad.stderr and "Traceback" not in bad.stderr
    tiny = run_cli("intake", str(FIXTURE / "Colin_Powell"), "--subject", "cli-4", "--protect", "aspl",
                   "--protect-epsilon", "0.005", home=home)
    assert tiny.returncode != 0 and "below one 8-bit level" in tiny.stderr
    assert not (home / "subjects" / "cli-4").exists(), "a bad option fails before intake"


def test_paths_stay_in_the_test_home(home):
    assert paths.home() == home.resolve()
