"""``workbench inspect`` on real model files made here (issue #16, part 1): no mocks.

- a bundle exported by the workbench (a 2-step LoRA on a random tiny-face pipeline, trained here);
- the same LoRA converted to kohya names, which diffusers' ``load_lora_weights`` must accept and load to the
  same weights (what part 2, attacking a vendor's file, relies on);
- a vendor-style ``.tar`` with the person's photos inside (an original with EXIF/GPS, an intake-style aligned
  crop), another photo of the person, a stranger, captions and kohya metadata naming the dataset folder;
  the person's other photos passed as ``--selfies``: "matched" means the same person *and* a pixel copy;
- hostile archives (``../`` members, links) refused before anything is read or written;
- pickles refused and never unpickled: a pickle whose ``__reduce__`` would create a marker file.

LFW photos are read from the shared copy at test time and written only under ``tmp_path``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import io  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import zipfile  # noqa: E402
from contextlib import redirect_stdout  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from workbench.errors import UserError  # noqa: E402
from workbench.modelfile import archive, formats  # noqa: E402
from workbench.modelfile.inspector import inspect_path, render_text  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"
PEOPLE = LFW / "people"
PERSON, STRANGER = "Condoleezza_Rice", "Gordon_Brown"
SUBJECT = "subject-mf"

pytestmark = pytest.mark.skipif(not (PEOPLE / PERSON).is_dir(), reason=f"no LFW copy at {LFW}")


def photo(name: str, i: int) -> Path:
    return PEOPLE / name / f"{name}_{i:04d}.jpg"


def cli(*argv: str) -> tuple[int, str]:
    from workbench.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def kinds(report) -> dict[str, list[str]]:
    """finding kind -> the members it was found in."""
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.kind, []).append(f.where)
    return out


def entry(report, name: str):
    return next(e for e in report.entries if e.name == name)


@pytest.fixture(scope="module")
def lora(random_base, tmp_path_factory):
    """A 2-step LoRA on the random tiny-face base, trained for a subject taken in here, and its bundle."""
    from workbench import paths
    from workbench.lifecycle.bundle import export_bundle
    from workbench.recipes import engine, registry
    from workbench.subjects.intake import intake, load_subject

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("modelfile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        report = intake([photo(PERSON, i) for i in (1, 2, 3, 4, 6)], SUBJECT, resolution=64)
        assert len(report.accepted) >= 4, report.to_json()
        subject = load_subject(SUBJECT)
        recipe = registry.get_recipe("lora")
        job = engine.TrainJob(base=str(random_base), train_images=subject.train, subject_id=SUBJECT,
                              out_dir=paths.subject_dir(SUBJECT) / "models" / "lora", device="cpu",
                              checkpoint_every=0)
        result = recipe.train(job, recipe.params(steps=2, batch_size=2))
        bundle = export_bundle(result.artifact_dir, root / "model.tar")
    yield {"artifact": Path(result.artifact_dir), "bundle": bundle, "root": root}
    torch.set_num_threads(threads)


# --- the workbench's own bundle ---------------------------------------------------------------------

def test_bundle_exported_by_the_workbench(lora):
    report = inspect_path(lora["bundle"])
    assert report.container == "tar" and report.layout.startswith("workbench model bundle")
    weights = entry(report, "artifact/pytorch_lora_weights.safetensors")
    assert (weights.kind, weights.format, weights.status) == ("safetensors", "diffusers-lora", "read")
    assert weights.family.startswith("tiny-face") and "cross-attention width 64" in " ".join(
        weights.details["family_evidence"])
    found = kinds(report)
    assert "bundle.json" in found["training_hashes"] and "bundle.json" in found["subject_id"]
    assert found["weights"] == ["artifact/pytorch_lora_weights.safetensors"]
    assert report.grade == "MEDIUM" and not any(e.status != "read" for e in report.entries)
    rc, out = cli("inspect", str(lora["bundle"]), "--json")
    data = json.loads(out)
    assert rc == 0 and data["grade"] == "MEDIUM" and data["layout"] == report.layout
    assert {f["kind"] for f in data["findings"]} == set(found)
    folder = inspect_path(lora["artifact"])  # the artifact folder itself, before export
    assert folder.container == "folder" and folder.layout == "workbench artifact folder"
    assert entry(folder, "pytorch_lora_weights.safetensors").format == "diffusers-lora"


# --- kohya format -----------------------------------------------------------------------------------

def _unet_out(pipe) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 32, 32, generator=gen)
    text = torch.randn(1, 8, pipe.unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return pipe.unet(sample, 10, encoder_hidden_states=text).sample


def test_lora_in_kohya_format_is_recognised_and_loads_in_diffusers(lora, random_base, tmp_path, one_thread):
    from diffusers import StableDiffusionPipeline

    from workbench.modelfile.kohya import convert_file

    src = lora["artifact"] / "pytorch_lora_weights.safetensors"
    kohya = convert_file(src, tmp_path / "sks_person.safetensors", {"ss_output_name": "sks_person"})
    report = inspect_path(kohya)
    e = entry(report, "sks_person.safetensors")
    assert report.container == "file" and e.format == "kohya-lora" and e.family.startswith("tiny-face")
    with open(kohya, "rb") as fh:
        keys = formats.read_safetensors_header(fh, kohya.stat().st_size).tensors
    assert all(k.startswith("lora_unet_") for k in keys)
    assert any(k.endswith("_attn2_to_k.lora_down.weight") for k in keys) and any(k.endswith(".alpha") for k in keys)

    def load(folder: Path, name: str | None):
        pipe = StableDiffusionPipeline.from_pretrained(random_base, dtype=torch.float32)
        if name:
            pipe.load_lora_weights(str(folder), weight_name=name)
        return _unet_out(pipe)

    base = load(random_base, None)
    diffusers_format = load(src.parent, src.name)
    kohya_format = load(kohya.parent, kohya.name)
    assert not torch.equal(base, diffusers_format)  # the 2-step LoRA changes the UNet ...
    torch.testing.assert_close(kohya_format, diffusers_format, rtol=0, atol=1e-6)  # ... the same way in both


# --- a vendor's tar with the person's photos inside -------------------------------------------------

def _with_exif(path: Path) -> bytes:
    """The photo re-saved as a phone would leave it: EXIF camera, owner, time and GPS."""
    img = Image.open(path)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x013B] = "Pixel", "Pixel 8", "Jane Doe"
    exif[0x0132] = "2025:06:01 10:00:00"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def vendor_tar(lora, tmp_path):
    from workbench.modelfile.kohya import convert_file
    from workbench.subjects.decode import encode_png
    from workbench.subjects.intake import examine

    folder = "dataset/10_sks person"
    meta = {"ss_dataset_dirs": json.dumps({"10_sks person": {"n_repeats": 10, "img_count": 2}}),
            "ss_tag_frequency": json.dumps({"10_sks person": {"sks person": 2, "smiling": 1, "red scarf": 1}}),
            "ss_output_name": "condi_headshots", "ss_training_comment": "order for jane.doe@example.com",
            "ss_network_dim": "4", "ss_learning_rate": "0.001"}
    kohya = convert_file(lora["artifact"] / "pytorch_lora_weights.safetensors", tmp_path / "lora.safetensors", meta)
    _, _, crop, _ = examine(photo(PERSON, 2).read_bytes(), 64)  # the intake's aligned 64 px training crop
    files = {
        "model/lora.safetensors": kohya.read_bytes(),
        f"{folder}/img_0001.jpg": _with_exif(photo(PERSON, 1)),  # an original, re-saved with EXIF
        f"{folder}/img_0001.txt": b"a photo of sks person, smiling",
        f"{folder}/crop_0002.png": encode_png(crop),  # a training crop
        "extra/portrait.jpg": photo(PERSON, 8).read_bytes(),  # the person, but not one of the selfies
        "extra/stranger.jpg": photo(STRANGER, 1).read_bytes(),  # someone else
        "order.json": json.dumps({"customer_id": "c-88121", "prompt": "a linkedin headshot of sks person"}).encode(),
    }
    selfies = tmp_path / "selfies"
    selfies.mkdir()
    for i in (1, 2, 3, 4, 6):  # the person's photos (1 and 2 are inside the file)
        (selfies / photo(PERSON, i).name).write_bytes(photo(PERSON, i).read_bytes())
    return _tar(tmp_path / "vendor_model.tar.gz", files), selfies


def test_tar_with_embedded_training_photos_and_kohya_metadata(vendor_tar):
    tar, selfies = vendor_tar
    report = inspect_path(tar, selfies=selfies)
    by_where = {(f.kind, f.where): f for f in report.findings}
    folder = "dataset/10_sks person"
    # "your training photos are inside this file": same person AND a pixel copy, for both the original ...
    original = by_where[("training_photo", f"{folder}/img_0001.jpg")]
    assert original.severity == "SEVERE" and original.details["copy_of"] == photo(PERSON, 1).name
    # ... and the intake's aligned 64 px crop of another selfie
    crop = by_where[("training_photo", f"{folder}/crop_0002.png")]
    assert crop.details["copy_of"] == photo(PERSON, 2).name and crop.details["registered_l2"] <= 0.062
    # the same person but no copy of a selfie: a photo of the person (HIGH), not a training photo
    portrait = by_where[("photo_of_person", "extra/portrait.jpg")]
    assert portrait.severity == "HIGH" and portrait.details["same_person"] and portrait.details["copy_of"] is None
    stranger = by_where[("face_photo", "extra/stranger.jpg")]
    assert not stranger.details["same_person"] and stranger.details["copy_of"] is None
    assert [f.where for f in report.findings if f.kind == "training_photo"] == [f"{folder}/img_0001.jpg",
                                                                                 f"{folder}/crop_0002.png"]
    # EXIF read before decoding: GPS (HIGH) and owner/camera (MEDIUM)
    gps = by_where[("gps", f"{folder}/img_0001.jpg")]
    assert gps.details["coordinates"] == pytest.approx((48.858056, 2.294444), abs=1e-5)
    assert "Jane Doe" in by_where[("exif", f"{folder}/img_0001.jpg")].summary
    # kohya metadata names the dataset folder, tags, an e-mail; captions and ids from text files
    names = by_where[("dataset_names", "model/lora.safetensors")]
    assert any("10_sks person" in v for f in report.findings if f.kind == "dataset_names"
               for v in f.details.get("values", [])), names
    assert "red scarf" in by_where[("tag_frequency", "model/lora.safetensors")].details["tags"]
    assert "jane.doe@example.com" in by_where[("email", "model/lora.safetensors (metadata)")].details["values"]
    assert ("captions", f"{folder}/img_0001.txt") in by_where and ("captions", "order.json") in by_where
    assert "c-88121" in by_where[("user_id", "order.json")].details["values"]
    assert entry(report, "model/lora.safetensors").format == "kohya-lora"
    assert report.grade == "SEVERE" and report.container == "tar.gz"

    text = render_text(report)
    assert "grade: SEVERE" in text and "training_photo" in text and "10_sks person" in text
    print(text)


def test_without_selfies_faces_are_found_but_not_attributed(vendor_tar):
    tar, _ = vendor_tar
    report = inspect_path(tar)
    faces = sorted(f.where for f in report.findings if f.kind == "face_photo")
    assert len(faces) == 4 and not any(f.kind in ("training_photo", "photo_of_person") for f in report.findings)
    assert report.grade == "HIGH"


def test_inspect_json_is_provider_evidence(vendor_tar, tmp_path):
    """`workbench inspect --json` feeds `workbench provider assess --evidence`: the photos inside the vendor's
    file add blockers to a provider whose answers alone grade B, and contradict the claim of an anonymous model."""
    from workbench.provider.assessment import load_assessment
    from workbench.provider.evidence import load_evidence
    from workbench.provider.grade import grade

    tar, selfies = vendor_tar
    rc, text = cli("inspect", str(tar), "--selfies", str(selfies), "--json")
    assert rc == 0
    (tmp_path / "inspect.json").write_text(text, encoding="utf-8")
    evidence = {m.key: m for m in load_evidence(tmp_path / "inspect.json")}
    assert evidence["modelfile.training_photo"].value == 2 and evidence["modelfile.email"].value == 1
    assert "2 finding(s) among" in evidence["modelfile.training_photo"].text()
    examples = Path(__file__).resolve().parents[1] / "experiments" / "providers"
    eu = load_assessment(examples / "eu_paid_service.yaml")
    before, after = grade(eu), grade(eu, list(evidence.values()))
    measured = {b.id for b in after.blockers if b.measured}
    assert before.grade == "B" and after.grade == "D"
    assert measured == {"file_holds_training_photos", "file_identifies_people"}
    assert "file_describes_training_data" in {f.rule for f in after.findings}  # a warning, not a blocker
    us = grade(load_assessment(examples / "us_no_consent.yaml"), list(evidence.values()))
    assert any("model is anonymous" in c and "holds copies of the person's photos" in c for c in us.contradictions)
    rc, out = cli("provider", "assess", str(examples / "eu_paid_service.yaml"), "--evidence",
                  str(tmp_path / "inspect.json"), "--json", "--out", str(tmp_path / "eu"))
    assert rc == 0 and json.loads(out)["grade"] == "D"


# --- hostile archives -------------------------------------------------------------------------------

def _member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, (data if kind == tarfile.REGTYPE else None)


HOSTILE_TARS = {
    "traversal": ([_member("model/ok.txt"), _member("../evil.txt")], "unsafe entry"),
    "deep traversal": ([_member("model/../../evil.txt")], "unsafe entry"),
    "absolute": ([_member("/tmp/evil-modelfile.txt")], "unsafe entry"),
    "symlink": ([_member("model/weights.safetensors", kind=tarfile.SYMTYPE, link="/etc/passwd")], "link"),
    "hardlink": ([_member("a.txt"), _member("model/b.txt", kind=tarfile.LNKTYPE, link="a.txt")], "link"),
    "device": ([_member("dev", kind=tarfile.CHRTYPE)], "link or special file"),
    "twice": ([_member("a.txt"), _member("a.txt")], "twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_is_refused_before_anything_is_written(tmp_path, case):
    members, message = HOSTILE_TARS[case]
    path = tmp_path / "box" / "model.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    dest = tmp_path / "box" / "out"
    dest.mkdir()
    with pytest.raises(UserError, match=message):
        inspect_path(path)
    with pytest.raises(UserError, match=message):
        archive.extract(path, dest)
    assert list(dest.iterdir()) == []  # nothing extracted, not even the good members before the bad one
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["box", "model.tar", "out"]
    assert not Path("/tmp/evil-modelfile.txt").exists()


def test_hostile_zip_is_refused(tmp_path):
    bad = tmp_path / "traversal.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model/ok.txt", "x")
        zf.writestr("../evil.txt", "x")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("model/weights.safetensors")
        info.external_attr = (0o120777 << 16)  # S_IFLNK: a symbolic link, as Info-ZIP stores one
        zf.writestr(info, "/etc/passwd")
    for path, message in ((bad, "unsafe entry"), (link, "link")):
        dest = tmp_path / f"out-{path.stem}"
        dest.mkdir()
        with pytest.raises(UserError, match=message):
            inspect_path(path)
        with pytest.raises(UserError, match=message):
            archive.extract(path, dest)
        assert list(dest.iterdir()) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_safe_archives_extract_through_the_checks(tmp_path):
    files = {"model/a.txt": b"alpha", "model/sub/b.json": b"{}"}
    tar = _tar(tmp_path / "ok.tar.gz", files)
    zpath = tmp_path / "ok.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    for path in (tar, zpath):
        dest = tmp_path / f"out-{path.name}"
        dest.mkdir()
        written = archive.extract(path, dest)
        assert sorted(p.relative_to(dest).as_posix() for p in written) == sorted(files)
        assert all((dest / n).read_bytes() == d for n, d in files.items())
    (tmp_path / "one").mkdir()
    with pytest.raises(UserError, match="more than 1 entries"):
        archive.extract(tar, tmp_path / "one", archive.Limits(max_members=1))
    assert list((tmp_path / "one").iterdir()) == []


# --- pickles: refused, never unpickled --------------------------------------------------------------

class Booby:
    """Unpickling this calls ``io.open(marker, "w")``: the marker's existence proves a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoints_are_refused_and_never_unpickled(tmp_path):
    control, marker = tmp_path / "control.marker", tmp_path / "inspected.marker"
    # the booby trap works: loading a pickle of it (in another process) creates its marker
    (tmp_path / "control.pkl").write_bytes(pickle.dumps(Booby(control), protocol=4))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(tmp_path / 'control.pkl')!r}, 'rb'))"],
                   check=True)
    assert control.exists()

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": 1},
                                   "trap": Booby(marker)}, protocol=4))
    torch_zip = tmp_path / "model.pt"  # torch's zip container, with the trap in its data.pkl
    torch.save({"model.diffusion_model.out.2.weight": torch.zeros(2), "trap": Booby(marker)}, torch_zip)
    tar = _tar(tmp_path / "bundle.tar", {"weights/model.ckpt": ckpt.read_bytes(), "weights/model.pt":
                                         torch_zip.read_bytes()})
    for path in (ckpt, torch_zip, tar):
        report = inspect_path(path)
        refused = [e for e in report.entries if e.status == "refused"]
        assert refused and all("not loaded" in e.details["refused"] for e in refused)
        unsafe = [f for f in report.findings if f.kind == "unsafe_pickle"]
        assert len(unsafe) == len(refused) and all("io open" in f.summary for f in unsafe)
        assert all(e.format == "single-file-checkpoint" for e in refused)  # key names read from the opcodes
        assert not marker.exists()
    zipped = entry(inspect_path(torch_zip), "model.pt")
    assert zipped.kind == "torch-zip" and any(n.endswith("data.pkl") for n in zipped.details["container_files"])
    rc, out = cli("inspect", str(ckpt))
    assert rc == 0 and "REFUSED" in out and "io open" in out and not marker.exists()


# --- formats and families on synthetic headers ------------------------------------------------------

def _safetensors(path: Path, shapes: dict[str, tuple], metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


FAMILIES = {
    "sd1 kohya": ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
                   "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
                   "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": ()},
                  "kohya-lora", "SD 1.x"),
    "sd2 diffusers": ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 1024),
                       "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (320, 4)},
                      "diffusers-lora", "SD 2.x"),
    "sdxl diffusers": ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 2048),
                        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (640, 4),
                        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 1280),
                        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": (1280, 4)},
                       "diffusers-lora", "SDXL"),
    "flux kohya": ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072),
                    "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": (9216, 4),
                    "lora_unet_double_blocks_0_img_attn_qkv.alpha": ()}, "kohya-lora", "Flux"),
    "sd1 embedding": ({"<sks>": (1, 768)}, "textual-inversion", "SD 1.x"),
    "sdxl embedding": ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "textual-inversion", "SDXL"),
    "sdxl checkpoint": ({"model.diffusion_model.label_emb.0.0.weight": (8, 8),
                         "conditioner.embedders.1.model.ln_final.weight": (8,)}, "single-file-checkpoint", "SDXL"),
}


@pytest.mark.parametrize("case", sorted(FAMILIES))
def test_weight_format_and_base_family(tmp_path, case):
    shapes, fmt, family = FAMILIES[case]
    path = _safetensors(tmp_path / "w.safetensors", shapes)
    e = entry(inspect_path(path), "w.safetensors")
    assert (e.format, e.family) == (fmt, family), e.details


def test_metadata_disagreeing_with_shapes_is_ambiguous_and_damaged_headers_are_reported(tmp_path):
    shapes = FAMILIES["sd1 kohya"][0]
    path = _safetensors(tmp_path / "w.safetensors", shapes, {"ss_base_model_version": "sdxl_base_v1-0"})
    assert entry(inspect_path(path), "w.safetensors").family == "ambiguous"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["data_offsets"] = [0, 10**9]  # points past the end of the file
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    e = entry(inspect_path(bad), "bad.safetensors")
    assert e.status == "damaged" and "out of the file" in e.details["error"]


def test_severity_levels_are_the_scorecards():
    from workbench.modelfile.findings import KINDS, LEVELS
    from workbench.report.scorecard import LEVELS as SCORECARD

    assert LEVELS == SCORECARD and {k.severity for k in KINDS.values()} <= set(LEVELS)


def test_folder_links_outside_are_not_followed(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "notes.md").write_text("contact: someone@example.org")
    (folder / "secret").symlink_to("/etc/hostname")
    report = inspect_path(folder)
    assert [e.name for e in report.entries] == ["notes.md"] and any("secret" in n for n in report.notes)
    assert [f.kind for f in report.findings] == ["email"]


def test_selfies_folder_must_hold_faces(tmp_path, vendor_tar):
    tar, _ = vendor_tar
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photo")
    with pytest.raises(UserError, match="no photo with a face"):
        inspect_path(tar, selfies=empty)
    rc, _ = cli("inspect", str(tar), "--selfies", str(empty))  # the CLI: the same refusal, one line, exit 2
    assert rc == 2
