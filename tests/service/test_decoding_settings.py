import io
import json
import warnings

import cv2
import numpy as np
import pytest

from model.errors import ConfigError
from service.decoding import decode_image, header_dimensions, heatmap_png, images_to_frames, npy_frames, rgb_to_frames
from service.errors import BadRequest, Overloaded, PayloadTooLarge, UnsupportedMediaType
from service.settings import Settings
from tests.conftest import npy_body


def encode(ext, h=30, w=50):
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    return cv2.imencode(ext, image)[1].tobytes(), image


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_header_dimensions(ext):
    data, _ = encode(ext, 37, 53)
    assert header_dimensions(data) == (53, 37)


@pytest.mark.parametrize("marker", [0xC4, 0xC8, 0xCC])
def test_jpeg_header_skips_the_markers_in_the_start_of_frame_range_that_are_not_one(marker):
    """0xC4 (Huffman tables), 0xC8 (reserved) and 0xCC (arithmetic coding) share the start-of-frame
    range: their bytes are not a size. Here one comes first, then a baseline start of frame (0xC0)
    of 37 rows of 53."""
    other = bytes([0xFF, marker, 0x00, 0x0B, 0x08, 0x11, 0x11, 0x22, 0x22, 0x03, 0, 0, 0])
    start_of_frame = bytes([0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 37, 0x00, 53, 0x03]) + bytes(12)
    assert header_dimensions(b"\xff\xd8" + other + start_of_frame) == (53, 37)
    progressive = cv2.imencode(".jpg", encode(".png", 37, 53)[1], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert header_dimensions(progressive) == (53, 37)  # 0xC2


def test_decode_rejects_bombs_before_decoding():
    data, _ = encode(".png", 300, 400)
    with pytest.raises(PayloadTooLarge, match="400x300"):
        decode_image(data, 0, max_pixels=1000)
    with pytest.raises(UnsupportedMediaType):
        decode_image(b"BM" + b"\x00" * 50, 0, 10**6)
    with pytest.raises(BadRequest, match="frame 2: corrupt"):
        decode_image(encode(".png")[0][:40], 2, 10**6)
    bomb = bytearray(encode(".png")[0][:40])  # says 100000x100000: refused from its header, not decoded
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2
    with pytest.raises(PayloadTooLarge, match="100000x100000"):
        decode_image(bomb, 0, 10**6)


def test_an_image_whose_header_cannot_be_read_is_measured_after_decoding():
    """Two stray bytes after a JPEG's first segment hide its size from the header reader, and libjpeg
    decodes it anyway (with a warning): the size is checked again on the decoded picture."""
    data, _ = encode(".jpg", 100, 100)
    end = 4 + int.from_bytes(data[4:6], "big")
    stray = data[:end] + b"\x00\x00" + data[end:]
    assert header_dimensions(stray) is None
    assert decode_image(stray, 0, 10_000).shape == (100, 100, 3)
    with pytest.raises(PayloadTooLarge, match="100x100"):
        decode_image(stray, 0, 9_999)


def test_frames_resized_to_model_size_and_channels():
    data, image = encode(".png")
    frames = images_to_frames([data, data], (16, 24), 1, 10**6)
    assert frames.shape == (2, 16, 24, 1)
    rgb = rgb_to_frames(npy_frames(npy_body(np.stack([image[..., ::-1]])), 1, 10**6), (30, 50), 3)  # RGB body
    assert np.array_equal(rgb[0], image[..., ::-1])  # BGR decode == RGB npy at native size


def test_16_bit_pngs_keep_one_brightness_scale():
    """A camera's 16-bit frames convert by one fixed rule (x / 257), not each stretched to its own
    maximum: a dark frame sent beside a bright one stays dark, as the same frames in 8 bits would."""
    dark, bright = np.full((20, 30, 3), 1000, np.uint16), np.full((20, 30, 3), 50000, np.uint16)
    bright[:5] = 65535
    deep = [cv2.imencode(".png", im)[1].tobytes() for im in (dark, bright)]
    as_8_bit = [((im.astype(np.uint32) + 128) // 257).astype(np.uint8) for im in (dark, bright)]
    eight = [cv2.imencode(".png", im)[1].tobytes() for im in as_8_bit]
    assert np.array_equal(images_to_frames(deep, (20, 30), 3, 10**6), images_to_frames(eight, (20, 30), 3, 10**6))
    assert images_to_frames(deep[:1], (20, 30), 1, 10**6).max() == 4


def test_a_request_of_large_frames_decodes_one_frame_at_a_time():
    """Twelve 2048x2048 PNGs of 18 kB each (within every limit) decode to 12.6 MB apiece: they are
    shrunk to model size one by one, so the peak is about one picture, not all twelve (256 frames of
    4096x4096 held 13 GB together before)."""
    import tracemalloc

    one = np.full((2048, 2048, 3), 90, np.uint8)
    png = cv2.imencode(".png", one)[1].tobytes()
    tracemalloc.start()
    try:
        frames = images_to_frames([png] * 12, (16, 24), 1, 4096 * 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == (12, 16, 24, 1) and (frames == 90).all()
    assert peak < 3 * one.nbytes, f"peak {peak / 1e6:.0f} MB for pictures of {one.nbytes / 1e6:.1f} MB"
    other = cv2.imencode(".png", one[:1024])[1].tobytes()
    with pytest.raises(BadRequest, match="frame 0 is 2048x2048, frame 2 is 2048x1024"):
        images_to_frames([png, png, other], (16, 24), 1, 4096 * 4096)


def test_heatmap_png_scale():
    png = heatmap_png(np.array([[0.0, 1.0], [2.0, 4.0]]), scale=2.0)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.tolist() == [[0, 128], [255, 255]]
    with warnings.catch_warnings():  # a scale of 0 (an uncalibrated model whose golden heatmap is all 0)
        warnings.simplefilter("error")
        png = heatmap_png(np.array([[0.0, 1e-9]]), scale=0.0)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).tolist() == [[0, 255]]


def test_npy_frames_may_have_exactly_max_pixels():
    body = npy_body(np.zeros((1, 10, 10, 3), np.uint8))
    assert npy_frames(body, 1, 100).shape == (1, 10, 10, 3)
    with pytest.raises(PayloadTooLarge, match=r"10x10 are outside 1\.\.99 pixels"):
        npy_frames(body, 1, 99)


def test_settings_env_and_config_file(tmp_path, monkeypatch):
    cfg = tmp_path / "aedmae.json"
    cfg.write_text(json.dumps({"max_batch_size": 4, "workers": 2, "cameras": [{"id": "gate", "url": "rtsp://x"}]}))
    monkeypatch.setenv("AEDMAE_CONFIG", str(cfg))
    monkeypatch.setenv("AEDMAE_WORKERS", "3")
    s = Settings(port=9000)
    assert (s.max_batch_size, s.workers, s.port, s.cameras[0].id) == (4, 3, 9000, "gate")  # init > env > file
    toml = tmp_path / "aedmae.toml"
    toml.write_text('max_batch_delay_ms = 2.5\n')
    monkeypatch.setenv("AEDMAE_CONFIG", str(toml))
    assert Settings().max_batch_delay_ms == 2.5
    with pytest.raises(ValueError, match="device"):
        Settings(device="gpu")
    with pytest.raises(ValueError):
        Settings(unknown_field=1)
    yaml = tmp_path / "aedmae.yaml"  # a format it does not read: said so, with the ones it does
    yaml.write_text("workers: 2\n")
    monkeypatch.setenv("AEDMAE_CONFIG", str(yaml))
    with pytest.raises(ConfigError, match=r"not a valid JSON file .*config files are JSON, or TOML when named"):
        Settings()
    cfg.write_text("[1, 2]")  # JSON, but not settings
    monkeypatch.setenv("AEDMAE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="must hold an object of settings"):
        Settings()


def test_invalid_settings_name_the_value_but_never_a_credential(monkeypatch):
    """load_settings turns pydantic's error into one line that names the setting and, for plain values,
    what it got; URLs and keys (a camera URL may hold a password) are named without their value."""
    from model.errors import ConfigError
    from service.settings import load_settings

    monkeypatch.delenv("AEDMAE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"workers: Input should be greater than or equal to 1 \(got 0\)"):
        load_settings(workers=0)
    cameras = [{"id": "gate", "url": "rtsp://admin:hunter2@10.0.0.5/live", "fps": -1},
               {"id": "door", "url": ["rtsp://admin:hunter2@10.0.0.6/live"]}]
    with pytest.raises(ConfigError) as err:
        load_settings(cameras=cameras, webhook_url=["https://hooks.example/t0ken"])
    message = str(err.value)
    assert "cameras.0.fps" in message and "(got -1)" in message and "cameras.1.url" in message
    assert "webhook_url" in message and "hunter2" not in message and "t0ken" not in message
    # a webhook URL that could never be delivered to fails at start, not at the first event
    for url in ("hooks.example/t0ken", "ftp://hooks.example/t0ken", "https://hooks.example:t0ken/x", "https:///t0ken"):
        with pytest.raises(ConfigError, match=r"webhook_url: .*expected http\(s\)://") as err:
            load_settings(webhook_url=url)
        assert "t0ken" not in str(err.value)
    assert load_settings(webhook_url="https://ops:t0ken@hooks.example:8443/x").webhook_url


@pytest.mark.parametrize(("device", "ok"), [("cpu", True), ("cuda", True), ("cuda:1", True), ("cuda:", False),
                                           ("cuda:x", False), ("cudax", False), ("gpu", False)])
def test_device_is_cpu_cuda_or_cuda_n_said_in_one_plain_line(monkeypatch, device, ok):
    from service.settings import load_settings

    monkeypatch.delenv("AEDMAE_CONFIG", raising=False)
    if ok:
        assert load_settings(device=device).device == device
    else:
        with pytest.raises(ConfigError, match=rf"^invalid settings: device: device must be cpu, cuda or cuda:N "
                                              rf"\(got '{device}'\) \(from the command line"):
            load_settings(device=device)


def test_onnx_threads_are_the_cores_shared_by_the_workers_unless_set(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [Settings(workers=w).intra_op_threads() for w in (1, 3, 8, 16)] == [8, 2, 1, 1]
    assert Settings(workers=2, threads_per_worker=3).intra_op_threads() == 3


def test_an_aedmae_variable_that_names_no_setting_is_reported(monkeypatch, caplog):
    from service.settings import load_settings

    monkeypatch.delenv("AEDMAE_CONFIG", raising=False)
    monkeypatch.setenv("AEDMAE_MAX_BATCH_SISE", "3")  # a typo of max_batch_size
    monkeypatch.setenv("AEDMAE_WORKERS", "2")
    monkeypatch.setenv("AEDMAE_CACHE_DIR", "/tmp/cache")  # not a setting, but aedmae's own
    with caplog.at_level("WARNING", logger="aedmae.service"):
        assert load_settings().workers == 2
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring AEDMAE_MAX_BATCH_SISE: not a setting (the README's Settings section lists them)"]


def test_body_budget_reserves_grows_refuses_and_gives_back():
    from service.routes import BodyBudget

    refused = []
    budget = BodyBudget(100, on_refuse=lambda: refused.append(1))
    with budget.hold() as first:
        first(60)
        with budget.hold() as second:
            second(30)
            second(10)  # grows as a chunked body arrives: exactly at the limit
            with pytest.raises(Overloaded, match="100 bytes of other requests"), budget.hold() as third:
                third(1)
            assert budget.held == 100 and refused == [1]
        assert budget.held == 60
    assert budget.held == 0
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        Settings(max_request_bytes=2048, max_inflight_bytes=1024)


def test_npy_body_is_read_in_place_and_checked():
    """The array is a view of the body (np.load copied it: one more body-sized buffer per request);
    a truncated or padded body, an object array or an unknown format is a 400."""
    from service.decoding import npy_array

    frames = np.random.default_rng(0).integers(0, 255, (3, 4, 5, 3), np.uint8)
    body = bytearray(npy_body(frames))
    view = npy_array(body)
    assert np.array_equal(view, frames) and np.shares_memory(view, np.frombuffer(body, np.uint8))
    assert np.array_equal(npy_array(npy_body(np.asfortranarray(frames))), frames)
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for bad, why in ((bytes(body[:-1]), "truncated or padded"), (bytes(body) + b"x", "truncated or padded"),
                     (objects.getvalue(), "object arrays"), (b"\x93NUMPY\x07\x00{}", "unknown .npy format version"),
                     (b"", "not a valid .npy")):
        with pytest.raises(BadRequest, match=why):
            npy_array(bad)
