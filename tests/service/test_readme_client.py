"""The README's chunked-stream client, run as written against a live server, through a failed batch."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import npy_body, scene_frames

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_client() -> dict:
    text = README.read_text()
    block = re.search(r"A client that sends a camera's frames in chunks.*?```python\n(.*?)```", text, re.S)
    assert block, "the client example is gone from the README"
    code = "\n".join(line[2:] for line in block.group(1).splitlines())  # the list item's indent
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_the_readme_client_scores_a_clip_in_chunks_as_one_request(server):
    send = readme_client()["send"]
    clip = scene_frames(14, 96, 144, seed=9)
    whole = httpx.post(server.url + "/v1/score", content=npy_body(clip),
                       headers={"content-type": "application/x-npy"}).json()["frames"]
    backend = server.runtime.backends[0]
    original = backend.infer

    def fail_once(frames):
        backend.infer = original
        raise RuntimeError("injected fault")

    got, offset = {}, 0
    with httpx.Client(base_url=server.url) as client:
        try:
            for chunk, flush in ((clip[:6], False), (clip[6:], True)):
                backend.infer = fail_once  # each chunk's first attempt fails; the client sends it again
                answer = send(client, "readme-cam", chunk, offset, flush)
                got |= {f["index"]: f["score"] for f in answer["frames"]}
                offset = answer["next_offset"]
        finally:
            backend.infer = original
        with pytest.raises(httpx.HTTPStatusError, match="409"):  # a chunk sent where the stream does not stand
            send(client, "readme-cam", clip[:2], 5)
    assert [got[i] for i in range(len(clip))] == pytest.approx([f["score"] for f in whole], rel=1e-6)
