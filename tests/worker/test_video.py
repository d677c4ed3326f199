"""Decoding: containers and codecs, rotation, timestamps, resampling, limits and typed refusals."""
from __future__ import annotations

import av
import numpy as np
import pytest

from model.errors import VideoError
from tests.worker.conftest import SINGLE_FACE, shared_video, write_clip
from worker.video import DecodeLimits, DecodeReport, decode_all, iter_frames, probe


def _small(face_frames, n=12, size=(160, 96)):
    import cv2
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in face_frames[:n]]


@pytest.mark.parametrize("name,codec,pix_fmt", [
    ("clip.webm", "libvpx", "yuv420p"),
    ("clip9.webm", "libvpx-vp9", "yuv420p"),
    ("clip.flv", "flv", "yuv420p"),
    ("clip.avi", "mpeg4", "yuv420p"),
    ("clip_mjpeg.avi", "mjpeg", "yuvj420p"),
    ("clip.mov", "libx265", "yuv420p"),
    ("clip.mkv", "ffv1", "yuv420p"),
])
def test_decodes_generated_containers(tmp_path, face_frames, name, codec, pix_fmt):
    # given a 12-frame 25 fps clip in this container/codec
    frames = _small(face_frames)
    path = write_clip(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt,
                      options={"x265-params": "log-level=error"} if codec == "libx265" else None)
    # when it is probed and decoded at 25 fps
    info = probe(path)
    out, rep = decode_all(path, fps=25.0)
    # then every frame comes back, at the right size, close to the source pixels
    assert (info["width"], info["height"]) == (160, 96)
    assert len(out) == 12 and rep.n_frames_in == 12 and not rep.resampled
    assert out[0].rgb.shape == (96, 160, 3) and out[0].rgb.dtype == np.uint8
    err = np.abs(out[5].rgb.astype(int) - frames[5].astype(int)).mean()
    assert err < 12, err


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_matrix_rotation_gives_upright_frames(tmp_path, face_frames, rotation):
    # given landscape pixels stored with a display rotation (as phones do)
    frames = _small(face_frames, 8, (160, 96))
    path = write_clip(tmp_path / "rot.mp4", frames, rotation=rotation)
    out, rep = decode_all(path)
    info = probe(path)
    expected = np.rot90(frames[3], k=rotation // 90)
    # then the decoded frames are rotated the way a player shows them
    assert rep.rotation == rotation % 360 and info["rotation"] == rotation % 360
    assert out[3].rgb.shape == expected.shape
    assert (info["width"], info["height"]) == (expected.shape[1], expected.shape[0])
    assert np.abs(out[3].rgb.astype(int) - expected.astype(int)).mean() < 12


def test_variable_frame_rate_resampled_by_timestamps(tmp_path, face_frames):
    # given 20 frames at irregular times over ~1.6 s, each frame a different flat grey level
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0, rng.uniform(0.04, 0.12, 19)])
    frames = [np.full((64, 64, 3), 10 * i + 5, np.uint8) for i in range(20)]
    path = write_clip(tmp_path / "vfr.mkv", frames, codec="ffv1", times=list(times), fps=25)
    out, rep = decode_all(path, fps=25.0)
    # then output frame k shows the source frame nearest to k/25 s
    assert rep.vfr and rep.resampled
    stored = np.round(times, 3)          # Matroska keeps milliseconds
    for f in out:
        d = np.abs(stored - f.t)
        nearest = int(np.argmin(d))
        assert d[f.src_index] <= d[nearest] + 1e-9, (f.t, f.src_index, nearest)
        nearest = f.src_index
        assert abs(int(f.rgb[0, 0, 0]) - (10 * nearest + 5)) <= 3
    assert abs(len(out) - round((times[-1] + np.median(np.diff(times))) * 25)) <= 1


def test_downsamples_30_to_25_fps(tmp_path, face_frames):
    frames = _small(face_frames, 30)
    path = write_clip(tmp_path / "c30.mp4", frames, fps=30)
    out, rep = decode_all(path, fps=25.0)
    assert rep.fps_in == pytest.approx(30, abs=0.1) and rep.n_frames == len(out) == 25 and rep.dropped == 5


def test_wrong_header_fps_uses_timestamps():
    # given the QuickTime HEVC file whose header claims 120 fps (really ~26.5)
    path = shared_video("pyfeat_noface_face.mov")
    rep = DecodeReport()
    n = sum(1 for _ in iter_frames(path, 25.0, report=rep))
    # then its real duration (6.38 s) gives ~160 frames at 25 fps, not 6.38*120/... or 169 unchanged
    assert rep.codec == "hevc"
    assert rep.fps_in == pytest.approx(26.5, abs=0.3)
    assert abs(n - 6.38 * 25) <= 3


def test_downscales_huge_frames(tmp_path):
    frames = [np.full((400, 800, 3), 100, np.uint8)] * 3
    path = write_clip(tmp_path / "big.mkv", frames, codec="ffv1")
    out, rep = decode_all(path, limits=DecodeLimits(max_side=200))
    assert out[0].rgb.shape == (100, 200, 3) and rep.scaled


def test_refuses_absurd_dimensions(tmp_path):
    path = write_clip(tmp_path / "wide.mkv", [np.zeros((16, 1024, 3), np.uint8)] * 2, codec="ffv1")
    with pytest.raises(VideoError) as e:
        probe(path, DecodeLimits(max_dimension=512))
    assert e.value.code == "video_too_large"


def test_too_long(tmp_path, face_frames):
    path = write_clip(tmp_path / "long.mp4", _small(face_frames, 40), fps=10)   # 4 s
    for call in (lambda: probe(path, DecodeLimits(max_duration_s=2)),
                 lambda: decode_all(path, limits=DecodeLimits(max_duration_s=2))):
        with pytest.raises(VideoError) as e:
            call()
        assert e.value.code == "video_too_long"


def test_refusals(tmp_path, face_frame):
    import cv2

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    image = tmp_path / "photo.mp4"
    image.write_bytes(cv2.imencode(".jpg", face_frame[:, :, ::-1])[1].tobytes())
    png = tmp_path / "photo2.mov"
    png.write_bytes(cv2.imencode(".png", face_frame[:, :, ::-1])[1].tobytes())
    audio = tmp_path / "voice.mp4"
    with av.open(str(audio), "w") as out:
        a = out.add_stream("aac", rate=16000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in list(a.encode(af)) + list(a.encode()):
            out.mux(p)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(SINGLE_FACE.read_bytes()[:3000])
    expect = {empty: "empty_file", text: "not_a_video", image: "not_a_video", png: "not_a_video",
              audio: "not_a_video", truncated: "not_a_video", tmp_path / "missing.mp4": "not_a_video"}
    for path, code in expect.items():
        for call in (probe, decode_all):
            with pytest.raises(VideoError) as e:
                call(path)
            assert e.value.code == code, (path.name, call.__name__, e.value.code)


def test_probe_real_clip_and_audio_ignored():
    info = probe(SINGLE_FACE)
    assert info["codec"] == "h264" and info["has_audio"]
    assert (info["width"], info["height"]) == (640, 360)
    assert info["duration_s"] == pytest.approx(2.4, abs=0.05)
    out, rep = decode_all(SINGLE_FACE)
    assert len(out) == 60 and rep.fps_in == pytest.approx(30)


def test_probe_imports_no_heavy_modules():
    import subprocess
    import sys

    code = ("import sys; import worker.video as v; v.probe(sys.argv[1]); "
            "bad = [m for m in ('cv2', 'onnxruntime', 'torch') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code, str(SINGLE_FACE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name,codec,pix_fmt", [("gray.mkv", "ffv1", "gray"),
                                                ("hevc10.mp4", "libx265", "yuv420p10le"),
                                                ("odd.avi", "mpeg4", "yuv420p")])
def test_unusual_pixel_formats_and_sizes(tmp_path, face_frames, name, codec, pix_fmt):
    frames = [f[:95, :157] for f in _small(face_frames, 6, (158, 96))] if name == "odd.avi" else _small(face_frames, 6)
    path = write_clip(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt,
                      options={"x265-params": "log-level=error"} if codec == "libx265" else None)
    out, rep = decode_all(path)
    assert len(out) == 6 and out[0].rgb.shape == frames[0].shape and out[0].rgb.dtype == np.uint8
    if pix_fmt == "gray":
        assert np.array_equal(out[0].rgb[..., 0], out[0].rgb[..., 1])


def test_random_bytes_and_html_are_not_videos(tmp_path):
    rnd = tmp_path / "random.mp4"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    html = tmp_path / "page.webm"
    html.write_bytes(b"<html><body>hello</body></html>" * 100)
    for path in (rnd, html):
        with pytest.raises(VideoError) as e:
            probe(path)
        assert e.value.code == "not_a_video"


def test_webm_without_duration_in_header(tmp_path, face_frames):
    # given a WebM written the way a browser's MediaRecorder does it (live: no duration, no cues)
    path = tmp_path / "recorded.webm"
    frames = _small(face_frames, 30)
    with av.open(str(path), "w", format="webm", options={"live": "1"}) as out:
        st = out.add_stream("libvpx", rate=25)
        st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
        for i, img in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            for p in st.encode(fr):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    with av.open(str(path)) as c:
        assert c.duration is None                    # the premise
    # then probe still measures its duration (from packet timestamps) and applies the limit
    assert probe(path)["duration_s"] == pytest.approx(1.2, abs=0.05)
    with pytest.raises(VideoError) as e:
        probe(path, DecodeLimits(max_duration_s=0.5))
    assert e.value.code == "video_too_long"
    out, rep = decode_all(path)
    assert len(out) == 30 and rep.duration_s == pytest.approx(1.2, abs=0.05)


@pytest.mark.parametrize("name,codec,pix_fmt,size,max_side,rotation", [
    ("h264.mp4", "libx264", "yuv420p", (160, 96), 1920, None),
    ("odd.mkv", "ffv1", "yuv444p", (157, 95), 1920, None),
    ("hevc10.mkv", "libx265", "yuv420p10le", (160, 96), 1920, None),
    ("mjpeg.avi", "mjpeg", "yuvj420p", (160, 96), 1920, None),
    ("scaled.mp4", "libx264", "yuv420p", (320, 192), 200, None),      # downscaled: the RGB path, then a 4th byte
    ("turned.mp4", "libx264", "yuv420p", (160, 96), 1920, 90),
])
def test_rgba_frames_carry_the_rgb_frames_exactly(tmp_path, face_frames, name, codec, pix_fmt, size, max_side,
                                                  rotation):
    # given a clip (odd sizes, 10-bit, full-range JPEG colour, a frame over max_side, a display rotation)
    path = write_clip(tmp_path / name, _small(face_frames, 6, size), codec=codec, pix_fmt=pix_fmt,
                      rotation=rotation, options={"x265-params": "log-level=error"} if codec == "libx265" else None)
    limits = DecodeLimits(max_side=max_side)
    rgb = [f.rgb for f in iter_frames(path, 25.0, limits)]
    rgba = [f.rgb for f in iter_frames(path, 25.0, limits, pixel_format="rgba")]
    # then the RGBA frames' first three channels are the RGB frames, bit for bit, and the 4th is 255
    assert len(rgba) == len(rgb) == 6
    for a, b in zip(rgb, rgba, strict=True):
        assert b.shape == (*a.shape[:2], 4)
        assert np.array_equal(b[..., :3], a) and (b[..., 3] == 255).all()
    with pytest.raises(ValueError):
        next(iter_frames(path, 25.0, pixel_format="yuv420p"))


def test_rgba_decoding_of_a_720p_clip_is_repeatable():
    # FFmpeg's threaded RGBA conversion (PyAV 18.1) wrote a row at a slice boundary wrongly in about one
    # conversion in six of this clip's 1080x720 frames; the converter runs one swscale thread
    import itertools

    path = shared_video("tfjs-models_facemesh_input.mp4")
    rgb = [f.rgb for f in itertools.islice(iter_frames(path, 25.0), 40)]
    for _ in range(2):
        rgba = [f.rgb for f in itertools.islice(iter_frames(path, 25.0, pixel_format="rgba"), 40)]
        assert all(np.array_equal(b[..., :3], a) for a, b in zip(rgb, rgba, strict=True))
