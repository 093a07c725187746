"""The app with `--auth` logins: the user name (hashed) is the identity; users are isolated; data survives
a reconnect and is not erased when a signed-in user's tab closes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from app_helpers import running_app

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

DEMO = "Naomi_Watts"
USERS = [("ana", "pw-ana-1"), ("ben", "pw-ben-2")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("auth-home")
    for url in running_app(home, {"WANDB_MODE": "offline", "WANDB_DIR": str(home / "wandb")}, auth=USERS):
        yield url, home


def login(url: str, tmp_path: Path, user: tuple[str, str]):
    return gradio_client.Client(url, auth=user, verbose=False, download_files=str(tmp_path / user[0]))


def test_a_wrong_password_gets_no_session(app):
    url, _ = app
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types for a failed login
        gradio_client.Client(url, auth=("ana", "wrong"), verbose=False)


def test_logged_in_users_are_isolated_and_find_their_data_again(app, tmp_path):
    url, home = app
    ana, ben = login(url, tmp_path, USERS[0]), login(url, tmp_path, USERS[1])
    ana_sid = ana.predict(api_name="/whoami").split("`")[1]
    ben_sid = ben.predict(api_name="/whoami").split("`")[1]
    assert ana_sid.startswith("app-u-") and ben_sid.startswith("app-u-") and ana_sid != ben_sid
    assert not any(name in sid for sid in (ana_sid, ben_sid) for name in ("ana", "ben"))

    summary, crops, _ = ana.predict(files=[], demo=DEMO, consent=True, retention_days=7, api_name="/intake")
    assert f"`{ana_sid}`" in summary and crops
    status = ana.predict(recipes=[], params_text="", backbone="tiny-face",
                         with_identifier="a photo of {identifier} {class_noun}",
                         without_identifier="a photo of a {class_noun}", images_per_prompt=1, sampling_steps=2,
                         encoders=["sface"], mia_attacks=["loss"], wandb="off", api_name="/run")
    assert "none/seed0`: ok" in status, status

    text, _ = ben.predict(api_name="/data")  # ben sees nothing of ana's
    assert "Nothing is stored" in text and ana_sid not in text
    with pytest.raises(Exception, match="no results yet"):
        ben.predict(api_name="/results")
    assert not any(name in p.name for p in (home / "subjects").iterdir() for name in ("ana", "ben"))

    ana.close()  # ana closes her tab: a signed-in user's data stays
    time.sleep(3)  # three heartbeats: long enough for gradio's unload to have run
    again = login(url, tmp_path, USERS[0])
    assert again.predict(api_name="/whoami").split("`")[1] == ana_sid
    text, rows = again.predict(api_name="/data")
    assert f"`{ana_sid}`" in text and "files stored" in text
    table, _ = again.predict(api_name="/results")  # and her last run
    assert "| none (control)" in table
    _, report_note = again.predict(api_name="/report")
    assert "tracking was off" in report_note
    erased, receipt = again.predict(api_name="/erase")
    assert receipt["verify_ok"] is True, erased
