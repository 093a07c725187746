"""Every shipped experiment spec runs up to its first model load (issue #16, part 5).

A new user who runs the specs of ``experiments/`` one after the other, in one fresh ``$WORKBENCH_HOME``,
must get each of them past validation and the intake of its own subject(s) at the spec's resolution,
with at least 2 photos accepted per person: the step before any model is loaded. The SD-class specs do
so on LFW's 250 px photos only through their stated upscaling policy (``subject.upscale``), which is
recorded per photo; without it, the runner's error carries intake's reasons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workbench.backbones.registry import backbone_resolution
from workbench.errors import UserError
from workbench.lifecycle.policy import set_retention
from workbench.runner import _intake_meta, prepare_subject
from workbench.spec import load_spec, parse_spec
from workbench.subjects.intake import intake, min_face_px
from workbench.subjects.store import SubjectStore
from workbench.subjects.upscale import UpscaleParams

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "fixture"
NOT_SPECS = ("providers",)  # experiments/providers/*.yaml are provider assessment files, not experiment specs
SPECS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.relative_to(EXPERIMENTS).parts[0] not in NOT_SPECS)


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """One fresh $WORKBENCH_HOME for the whole module: a new user running every spec in turn."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        yield home


def test_the_shipped_specs_are_all_found():
    names = {p.name for p in SPECS}
    assert {"quickstart.yaml", "sd15_recipes.yaml", "privacy_recipes.yaml", "privacy_recipes_sd15.yaml",
            "cohort.yaml", "extraction.yaml"} <= names, names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_shipped_spec_gets_past_intake_with_its_own_subjects(path, user_home):
    spec = load_spec(path)  # validation, every recipe's params included
    people = spec.subjects()
    assert people, path
    for sub in people:
        resolution = backbone_resolution(spec.backbone, sub.resolution)  # what the runner uses
        set_retention(sub.id, spec.retention)  # as prepare_person does, before intake
        subject, report, split = prepare_subject(spec, resolution, sub)  # the last step before a model loads
        assert subject.resolution == resolution
        assert len(split.members) >= 1 and len(split.non_members) >= 1, (path.name, sub.id)
        assert len(subject.train) + len(subject.holdout) >= 2, (path.name, sub.id)
        record = SubjectStore(sub.id).read_record()
        assert record["resolution"] == resolution
        upscaled = [e["upscale"] for e in record["accepted"] if e.get("upscale")]
        if sub.upscale is None:
            assert not upscaled, f"{path.name}: photos were upscaled without subject.upscale"
        else:
            assert all(1.0 < f <= sub.upscale.max_factor for f in upscaled), upscaled
            assert record["upscale"]["max_factor"] == sub.upscale.max_factor
        if resolution >= 256:  # the SD-class specs on LFW's 250 px photos: only through the stated policy
            assert sub.upscale is not None and len(upscaled) >= 2, f"{path.name}: state subject.upscale"
            meta = {"notes": []}
            _intake_meta(meta, {sub.id: split})
            m = meta["intake"][sub.id]
            assert m["resolution"] == resolution and m["upscaled"] == m["photos"] >= 2
            assert m["upscale"] == {"method": "bicubic", "max_factor": sub.upscale.max_factor}
            assert any("upscaled (bicubic" in n for n in meta["notes"]), meta["notes"]


def _photos(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((FIXTURE / "Colin_Powell").glob("*.jpg"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def _spec(folder: Path, **subject) -> object:
    return parse_spec({"version": 1, "name": "sd-check", "backbone": "org/some-sd-model", "device": "cpu",
                       "subject": {"photos": [str(folder)], "id": "subject-sd", "resolution": 512, **subject},
                       "recipes": [{"name": "none"}]})


def test_without_upscaling_the_runner_passes_intakes_reasons_through(tmp_path, home):
    spec = _spec(_photos(tmp_path))
    with pytest.raises(UserError) as err:
        prepare_subject(spec, 512)
    msg = str(err.value)
    assert "subject subject-sd: 0 photo(s) accepted at 512 px" in msg, msg
    assert "the face is too small" in msg and f"at least {min_face_px(512)} px needed" in msg, msg
    assert "subject.upscale" in msg, "the rejection says how to allow upscaling"


def test_upscaling_is_bounded_recorded_per_photo_and_never_loosened_silently(tmp_path, home):
    folder = _photos(tmp_path)
    tight = intake([folder], "subject-tight", resolution=512, upscale=UpscaleParams(max_factor=2.0))
    assert not tight.accepted and all("more than upscale.max_factor 2" in r.reason for r in tight.rejected)

    spec = _spec(folder, upscale={"max_factor": 4.0})
    subject, report, split = prepare_subject(spec, 512)
    assert len(report.accepted) == 4 and not report.rejected
    assert all(2.0 < a.upscale <= 4.0 for a in report.accepted), [a.upscale for a in report.accepted]
    assert report.upscale == {"method": "bicubic", "max_factor": 4.0}
    entries = SubjectStore("subject-sd").read_record()["accepted"]
    assert sorted(e["upscale"] for e in entries) == sorted(report.upscaled())
    # the same subject under a stricter policy (or none) is an error, not a silent mix of policies
    with pytest.raises(UserError, match="enlarged up to"):
        prepare_subject(_spec(folder), 512)
    with pytest.raises(UserError, match="enlarged up to"):
        intake([folder], "subject-sd", resolution=512, upscale=UpscaleParams(max_factor=2.0))
    # at the tiny backbone's 64 px, nothing is upscaled even when upscaling is allowed
    small = intake([folder], "subject-64", resolution=64, upscale=UpscaleParams())
    assert len(small.accepted) == 4 and not small.upscaled()


def test_the_upscale_field_is_validated():
    with pytest.raises(Exception, match="subject.upscale.max_factor"):
        _spec(Path("/tmp"), upscale={"max_factor": 0.5})
    with pytest.raises(Exception, match="subject.upscale.factor"):
        _spec(Path("/tmp"), upscale={"factor": 2})
    assert _spec(Path("/tmp"), upscale={"max_factor": 3}).subject.upscale.max_factor == 3.0
