"""Attack a vendor's model file on its own base (issue #16, part 2): ``--model FILE --base ID``. No mocks.

A LoRA is trained here on the shipped ``tiny-face`` backbone for a subject taken in from LFW, then:

- ``workbench mia --model <the same LoRA in kohya format> --base tiny-face`` gives the same scores and AUCs as
  the LoRA in diffusers format, and as ``--recipe-dir`` on the workbench's own run (members and non-members
  from the subject, or from plain ``--train``/``--holdout`` folders of its crops);
- the kohya file inside a ``.tar`` is extracted safely into a scratch folder registered for erasure, which is
  gone (and tombstoned) when the command ends; a pickle is refused, never unpickled;
- a file of another family (SD 1.x shapes) on ``tiny-face`` is a clear error before anything loads;
- ``workbench generate --model`` samples from it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import io  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import tarfile  # noqa: E402
from contextlib import redirect_stderr, redirect_stdout  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.errors import UserError  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "people"
PERSON = "Condoleezza_Rice"
SUBJECT = "subject-mfa"
ATTACKS = ("--attack", "loss", "--attack", "pia")

pytestmark = pytest.mark.skipif(not (LFW / PERSON).is_dir(), reason=f"no LFW copy at {LFW}")


def cli(*argv: str) -> tuple[int, str]:
    from workbench.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def mia(*argv: str) -> dict:
    rc, out = cli("mia", *argv, *ATTACKS, "--resamples", "200", "--batch-size", "8", "--device", "cpu", "--json")
    assert rc == 0, out
    return json.loads(out)


def aucs(report: dict) -> dict:
    return {name: (r["auc"]["value"], r["auc_raw"]["value"]) for name, r in report["attacks"].items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA trained on tiny-face for a subject (8 LFW photos, half held out), its kohya copy and crop folders."""
    from workbench import paths
    from workbench.modelfile.kohya import convert_file
    from workbench.recipes import engine, registry
    from workbench.subjects.intake import intake, load_subject

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("model-file-attacks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        photos = sorted((LFW / PERSON).glob("*.jpg"))[:9]
        report = intake(photos, SUBJECT, resolution=64, holdout_fraction=0.5)
        assert report.train >= 3 and report.holdout >= 3, report.to_json()
        subject = load_subject(SUBJECT)
        recipe = registry.get_recipe("lora")
        job = engine.TrainJob(base="tiny-face", train_images=subject.train, subject_id=SUBJECT,
                              out_dir=paths.subject_dir(SUBJECT) / "models" / "lora", device="cpu",
                              checkpoint_every=0)
        result = recipe.train(job, recipe.params(steps=30, batch_size=2, lr=5e-3))
        lora = Path(result.artifact_dir) / "pytorch_lora_weights.safetensors"
        vendor = root / "vendor"
        vendor.mkdir()
        kohya = convert_file(lora, vendor / "sks_person.safetensors", {"ss_output_name": "sks_person"})
        folders = {}
        for split, crops in (("train", subject.train), ("holdout", subject.holdout)):
            folders[split] = root / split
            folders[split].mkdir()
            for k, crop in enumerate(crops):  # names in the subject's order: the same noise draws per photo
                shutil.copy(crop, folders[split] / f"{k:03d}.png")
        yield {"run": Path(result.artifact_dir), "lora": lora, "kohya": kohya, "root": root, "home": root / "home",
               **folders}
    torch.set_num_threads(threads)


@pytest.fixture
def in_home(trained, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(trained["home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return trained


def test_kohya_file_on_its_base_reproduces_the_aucs_of_the_diffusers_lora(in_home):
    t = in_home
    prompt = ("--prompt", "a photo of sks person")
    run = mia("--subject", SUBJECT, "--recipe-dir", str(t["run"]))
    diffusers_file = mia("--model", str(t["lora"]), "--base", "tiny-face", "--subject", SUBJECT, *prompt)
    kohya_file = mia("--model", str(t["kohya"]), "--base", "tiny-face", "--subject", SUBJECT, *prompt)
    assert kohya_file["model"]["format"] == "kohya-lora" and diffusers_file["model"]["format"] == "diffusers-lora"
    assert kohya_file["model"]["family"].startswith("tiny-face") and kohya_file["calibrated"]
    assert aucs(kohya_file) == aucs(diffusers_file) == aucs(run), (aucs(kohya_file), aucs(run))
    calibrated = kohya_file["attacks"]["loss"]["calibrated_scores"]
    assert max(abs(v) for v in calibrated["members"] + calibrated["nonmembers"]) > 1e-4, "the LoRA changed the model"
    for name, r in kohya_file["attacks"].items():  # the same per-photo scores, not only the same ranking
        ref = diffusers_file["attacks"][name]
        for key in ("scores", "calibrated_scores"):
            for group in ("members", "nonmembers"):
                torch.testing.assert_close(torch.tensor(r[key][group]), torch.tensor(ref[key][group]),
                                           rtol=1e-4, atol=1e-6)
    # members/non-members from plain folders of aligned crops instead of a subject
    folders = mia("--model", str(t["kohya"]), "--base", "tiny-face", "--train", str(t["train"]),
                  "--holdout", str(t["holdout"]), *prompt)
    assert folders["subject"] == "photos" and (folders["n_members"], folders["n_nonmembers"]) == (
        run["n_members"], run["n_nonmembers"])
    assert aucs(folders) == aucs(run)


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tar_bundle_is_extracted_safely_registered_and_removed(in_home):
    from workbench.lifecycle import manifest
    from workbench.modelfile.loading import SCRATCH, open_model

    t = in_home
    bundle = _tar(t["root"] / "vendor.tar", {"model/sks_person.safetensors": t["kohya"].read_bytes(),
                                             "model/captions.txt": b"a photo of sks person\n"})
    with open_model(bundle, SUBJECT) as model:
        assert (model.kind, model.format, model.container) == ("lora", "kohya-lora", "tar")
        scratch = model.scratch
        assert scratch.is_dir() and scratch.is_relative_to(t["home"]) and SCRATCH in scratch.parts
        registered = {a.path for a in manifest.live(SUBJECT)}
        assert any(p.endswith("sks_person.safetensors") and SCRATCH in p for p in registered), "registered for erasure"
    assert not scratch.exists(), "the extraction is removed when the command ends"
    assert not any(SCRATCH in a.path for a in manifest.live(SUBJECT)), "and tombstoned in the manifest"
    report = mia("--model", str(bundle), "--base", "tiny-face", "--subject", SUBJECT,
                 "--prompt", "a photo of sks person")
    assert report["model"]["extracted"] and report["model"]["container"] == "tar"

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    evil = _tar(t["root"] / "evil.tar", {"lora.bin": pickle.dumps(Boom())})
    with pytest.raises(UserError, match="never loaded"):
        with open_model(evil, SUBJECT):
            pass
    traversal = _tar(t["root"] / "traversal.tar", {"../escape.safetensors": b"x"})
    with pytest.raises(UserError):
        with open_model(traversal, SUBJECT):
            pass
    assert not (t["root"] / "escape.safetensors").exists()


def test_a_file_of_another_family_is_refused_before_loading(in_home, tmp_path):
    from safetensors.torch import save_file

    sd15 = tmp_path / "sd15_lora.safetensors"  # kohya names with SD 1.x shapes (cross-attention width 768)
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 768),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
               torch.zeros(320, 4),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": torch.tensor(4.0)},
              str(sd15))
    from workbench.modelfile.loading import check_family, open_model

    wrong = r"is for SD 1\.x .*but --base tiny-face is tiny-face"
    with open_model(sd15) as model, pytest.raises(UserError, match=wrong):
        check_family(model, "tiny-face")
    from workbench.cli import main

    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(["mia", "--model", str(sd15), "--base", "tiny-face", "--subject", SUBJECT, "--prompt", "a photo"])
    assert rc == 2 and "is for SD 1.x" in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()


def test_generate_samples_from_a_vendor_file(in_home, tmp_path):
    out = tmp_path / "gen"
    rc, text = cli("generate", "--model", str(in_home["kohya"]), "--base", "tiny-face", "--prompt",
                   "a photo of sks person", "--n", "2", "--steps", "3", "--device", "cpu", "--out", str(out),
                   "--subject", SUBJECT)
    assert rc == 0, text
    assert len(list(out.glob("*.png"))) == 2 and (out / "records.jsonl").is_file()
