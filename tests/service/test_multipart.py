"""The multipart reader of POST /v1/score (service.decoding.multipart_files): bodies as httpx encodes
them, hand-written bodies with the RFC 2046 corners, and every truncation of a body, which must end in
a 4xx error and nothing else."""

import contextlib

import httpx
import pytest

from service.decoding import multipart_files
from service.errors import BadRequest, PayloadTooLarge


def encoded(files, data=None):
    request = httpx.Request("POST", "http://x/v1/score", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_files_come_back_byte_for_byte_in_order_other_fields_skipped():
    tricky = b"\xff\xd8\xff\r\n--not-the-boundary\r\n\r\n--\r\n" + bytes(range(256))
    files = [("frames", ("a.jpg", tricky, "image/jpeg")), ("other", ("x.png", b"skip me", "image/png")),
             ("frames", ('odd "name"; x.jpg', b"", "image/jpeg")), ("frames", ("c.png", b"\x89PNG", "image/png"))]
    body, ctype = encoded(files, data={"note": "text fields of other names are skipped"})
    assert multipart_files(body, ctype, "frames", max_files=3, max_parts=8) == [tricky, b"", b"\x89PNG"]
    assert multipart_files(body, ctype, "other", max_files=3, max_parts=8) == [b"skip me"]
    held = bytearray(body)  # as the server reads a body with a Content-Length: the files are views of it
    assert all(f.obj is held for f in multipart_files(held, ctype, "frames", max_files=3, max_parts=8))


def test_rfc_2046_corners():
    part = b'Content-Disposition: form-data; name="frames"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = (b"a preamble to ignore\r\n--b1 \t\r\n" + part + b"ONE\r\n--b1\r\n"
            + b'content-disposition: FORM-DATA; NAME=frames; filename*=UTF-8\'\'%C3%A9.jpg\r\n\r\nTWO'
            + b"\r\n--b1--\r\nan epilogue to ignore")
    assert multipart_files(body, 'multipart/form-data; charset=utf-8; boundary="b1"', "frames", 4, 8) == [
        b"ONE", b"TWO"]
    assert multipart_files(b"--b1--\r\n", "multipart/form-data; boundary=b1", "frames", 4, 8) == []


@pytest.mark.parametrize(("body", "ctype", "error", "match"), [
    (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data", BadRequest, "no boundary"),
    (b"hello", "multipart/form-data; boundary=b", BadRequest, "never opens"),
    (b"x--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", BadRequest, "never opens"),
    (b"--b junk\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", BadRequest, "CRLF"),
    (b'--b\r\nContent-Disposition: form-data; name="frames"\r\n\r\ntext\r\n--b--', "multipart/form-data; boundary=b",
     BadRequest, "not text"),
    (b'--b\r\nContent-Disposition: form-data; name="frames"; filename="a"\r\n\r\n\xff\xd8',
     "multipart/form-data; boundary=b", BadRequest, "truncated"),
])
def test_malformed_bodies_are_400(body, ctype, error, match):
    with pytest.raises(error, match=match):
        multipart_files(body, ctype, "frames", 4, 8)


def test_limits_on_files_and_parts():
    body, ctype = encoded([("frames", (f"{i}.jpg", b"\xff\xd8\xff", "image/jpeg")) for i in range(5)])
    assert len(multipart_files(body, ctype, "frames", 5, 5)) == 5
    with pytest.raises(PayloadTooLarge, match="more than 4 frames"):
        multipart_files(body, ctype, "frames", 4, 8)
    body, ctype = encoded([("frames", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))], data={f"f{i}": "x" for i in range(9)})
    assert len(multipart_files(body, ctype, "frames", 4, 10)) == 1  # 10 parts: at the limit
    with pytest.raises(PayloadTooLarge, match="more than 9 parts"):
        multipart_files(body, ctype, "frames", 4, 9)


def test_a_boundary_of_more_than_200_characters_is_refused():
    """RFC 2046 allows 70; up to 200 are read (lenient), a longer one is refused before any search."""
    for length, ok in ((200, True), (201, False)):
        boundary = "b" * length
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="frames"; filename="a"\r\n\r\nX\r\n--{boundary}--'
        ctype = f"multipart/form-data; boundary={boundary}"
        if ok:
            assert multipart_files(body.encode(), ctype, "frames", 4, 8) == [b"X"]
        else:
            with pytest.raises(BadRequest, match="names no boundary"):
                multipart_files(body.encode(), ctype, "frames", 4, 8)


def test_every_truncation_and_byte_flip_is_a_4xx_or_a_parse():
    body, ctype = encoded([("frames", ("a.jpg", b"\xff\xd8\xff\xe0abc", "image/jpeg")),
                           ("frames", ("b.jpg", b"\xff\xd8\xff\xe0def", "image/jpeg"))])
    outcomes = set()
    for cut in range(len(body)):
        try:
            outcomes.add(len(multipart_files(body[:cut], ctype, "frames", 4, 8)))
        except (BadRequest, PayloadTooLarge):
            outcomes.add("4xx")
    for i in range(len(body)):
        flipped = body[:i] + bytes([body[i] ^ 0x55]) + body[i + 1 :]
        with contextlib.suppress(BadRequest, PayloadTooLarge):  # anything else fails the test (a 500)
            multipart_files(flipped, ctype, "frames", 4, 8)
    assert "4xx" in outcomes and outcomes <= {"4xx", 0, 1, 2}
