"""Cameras registered through the API survive a restart (settings.camera_store): the store file on its
own, then real servers started twice on the same file, a store that cannot be written, and one that
cannot be read."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from model.errors import ConfigError
from service.camera_store import CameraStore
from service.settings import Settings, StreamSpec
from tests.conftest import assert_durable, record_disk_ops, scene_frames, write_video
from tests.service.conftest import live_server


def spec(sid: str, url: str = "rtsp://user:pw@127.0.0.1:9/live", **kw: object) -> StreamSpec:
    return StreamSpec(id=sid, url=url, **kw)  # type: ignore[arg-type]


def test_store_round_trip_keeps_order_and_fields_and_is_private(tmp_path, monkeypatch):
    store = CameraStore(tmp_path / "cameras.json")
    assert store.load() == []  # no file yet: nothing stored
    cams = [spec("b", fps=5, events={"enter": 0.8, "exit": 0.6}), spec("a", str(tmp_path / "clip.mp4"), realtime=True)]
    ops = record_disk_ops(monkeypatch)
    store.save(cams)
    assert_durable(ops, tmp_path / "cameras.json")
    assert store.load() == cams
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600  # URLs may carry credentials
    store.save(cams[1:])
    assert [s.id for s in store.load()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["cameras.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_list(tmp_path, monkeypatch):
    store = CameraStore(tmp_path / "cameras.json")
    store.save([spec("a")])

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        store.save([spec("a"), spec("b")])
    monkeypatch.undo()
    assert [s.id for s in store.load()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["cameras.json"]


@pytest.mark.parametrize(("text", "says"), [
    ("{not json", "cannot read it"),
    ('{"cameras": []}', "not an aedmae camera store"),
    ("[]", "not an aedmae camera store"),
    ('{"version": 1, "cameras": {}}', "not an aedmae camera store"),
    ('{"version": 1, "cameras": [{"id": "a b", "url": "rtsp://x"}]}', "camera 0 is invalid (id:"),
    ('{"version": 1, "cameras": [{"id": "a", "url": "ftp://x"}]}', "unsupported URL scheme"),
    ('{"version": 1, "cameras": [{"id": "a", "url": "rtsp://x"}, {"id": "a", "url": "rtsp://y"}]}', "appears twice"),
])
def test_an_unreadable_store_is_a_clear_error_naming_the_file(tmp_path, text, says):
    path = tmp_path / "cameras.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"camera_store .*cameras\.json") as e:
        CameraStore(path).load()
    assert says in str(e.value)
    assert path.read_text() == text  # untouched


def test_settings_refuse_a_folder_or_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        Settings(camera_store=tmp_path)
    with pytest.raises(ValueError, match="create it first"):
        Settings(camera_store=tmp_path / "missing" / "cameras.json")


def test_a_relative_file_path_is_stored_absolute(tiny_checkpoint, tmp_path, monkeypatch):
    write_video(tmp_path / "clip.mp4", scene_frames(40))
    settings = {"model": tiny_checkpoint, "camera_store": tmp_path / "cameras.json"}
    monkeypatch.chdir(tmp_path)
    with live_server(**settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/v1/streams", json={"id": "door", "url": "clip.mp4"}).status_code == 201
    assert json.loads((tmp_path / "cameras.json").read_text())["cameras"][0]["url"] == str(tmp_path / "clip.mp4")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a restart from another folder still finds the file
    with live_server(**settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert [x["id"] for x in c.get("/v1/streams").json()["streams"]] == ["door"]


def test_cameras_registered_through_the_api_survive_a_restart(tiny_checkpoint, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", scene_frames(40))
    store = tmp_path / "cameras.json"
    config_camera = StreamSpec(id="cfg", url=str(clip))
    settings = {"model": tiny_checkpoint, "camera_store": store, "cameras": [config_camera]}
    with live_server(**settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/v1/streams", json={"id": "door", "url": str(clip), "fps": 5}).status_code == 201
        assert c.post("/v1/streams", json={"id": "gate", "url": "rtsp://admin:s3cret@127.0.0.1:9/live",
                                           "open_timeout_s": 0.5}).status_code == 201
        assert c.post("/v1/streams", json={"id": "gate", "url": str(clip)}).status_code == 409
    stored = json.loads(store.read_text())
    assert [cam["id"] for cam in stored["cameras"]] == ["door", "gate"]  # not the config file's, not the 409
    assert stored["cameras"][0]["fps"] == 5

    with live_server(**settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        listed = {x["id"]: x for x in c.get("/v1/streams").json()["streams"]}
        assert sorted(listed) == ["cfg", "door", "gate"]
        assert "s3cret" not in c.get("/v1/streams/gate").text  # kept in the file, never shown
        assert c.get("/v1/streams/gate").json()["stored"] and not c.get("/v1/streams/cfg").json()["stored"]
        assert c.delete("/v1/streams/door").status_code == 204
        assert c.delete("/v1/streams/cfg").status_code == 204  # a config-file camera: gone until the next start
    assert [cam["id"] for cam in json.loads(store.read_text())["cameras"]] == ["gate"]


def test_a_stored_camera_that_cannot_start_is_listed_in_the_log_and_deletable(tiny_checkpoint, tmp_path, caplog):
    store = tmp_path / "cameras.json"
    CameraStore(store).save([spec("gone", str(tmp_path / "deleted.mp4")), spec("cam")])
    with live_server(model=tiny_checkpoint, camera_store=store) as s, httpx.Client(base_url=s.url) as c:
        assert [x["id"] for x in c.get("/v1/streams").json()["streams"]] == ["cam"]
        assert "camera gone from the camera store not started: no such video file" in caplog.text
        r = c.post("/v1/streams", json={"id": "gone", "url": "rtsp://127.0.0.1:9/x", "open_timeout_s": 0.5})
        assert r.status_code == 409 and "DELETE it first" in r.json()["detail"]
        assert c.delete("/v1/streams/gone").status_code == 204
        assert c.delete("/v1/streams/gone").status_code == 404
    assert [cam["id"] for cam in json.loads(store.read_text())["cameras"]] == ["cam"]


def test_a_store_that_cannot_be_written_changes_nothing(tiny_checkpoint, tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    store = folder / "cameras.json"
    CameraStore(store).save([spec("cam")])
    with live_server(model=tiny_checkpoint, camera_store=store) as s, httpx.Client(base_url=s.url) as c:
        store.unlink()
        folder.rmdir()
        folder.write_text("a file where the folder was")  # every write now fails, even as root
        r = c.post("/v1/streams", json={"id": "new", "url": "rtsp://127.0.0.1:9/x", "open_timeout_s": 0.5})
        assert r.status_code == 500 and r.json()["error"] == "camera_store_failed", r.text
        assert c.get("/v1/streams/new").status_code == 404
        r = c.delete("/v1/streams/cam")
        assert r.status_code == 500 and "nothing changed" in r.json()["detail"]
        assert c.get("/v1/streams/cam").status_code == 200  # still running


def test_serve_refuses_to_start_on_an_unreadable_store(tmp_path, monkeypatch, capsys):
    from service.cli import main

    store = tmp_path / "cameras.json"
    store.write_text('{"version": 1, "cameras": [')
    monkeypatch.setenv("AEDMAE_CAMERA_STORE", str(store))
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "camera_store" in err and "fix or remove the file" in err
    assert store.read_text() == '{"version": 1, "cameras": ['

