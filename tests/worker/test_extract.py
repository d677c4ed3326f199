"""Extraction end to end: real videos, synthetic known motion, window/alignment rules, refusals, CLI, plots."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.contract import PreprocessContract
from model.errors import VideoError
from tests.worker.conftest import SINGLE_FACE, shared_video, write_clip
from worker import landmarks as lm
from worker.extract import Extraction, extract

NOSE_TIP_SLOT = 4 * 9 + 5          # nose region, 6th slot = mesh index 1

REAL = {  # file -> expected refusal code, or None when it must be extracted
    "pyfeat_single_face.mp4": None,
    "pyfeat_WolfgangLanger_Pexels.mp4": None,
    "pyfeat_noface_face.mov": None,
    "pyfeat_no_face.mp4": "no_face",
    "face_recognition_short_hamilton_clip.mp4": None,
    "tfjs-models_facemesh_input.mp4": None,
    "liveportrait_d6.mp4": None,
    "liveportrait_d13.mp4": None,
}
_cache: dict = {}


def _extract_real(name: str):
    if name not in _cache:
        try:
            _cache[name] = extract(shared_video(name), PreprocessContract())
        except VideoError as e:
            _cache[name] = e
    return _cache[name]


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos_extracted_or_refused_with_code(name):
    out = _extract_real(name)
    if REAL[name] is not None:
        assert isinstance(out, VideoError) and out.code == REAL[name], out
        return
    assert isinstance(out, Extraction), out
    assert out.trajs.shape == (63, 128, 5) and out.trajs.dtype == np.float32
    assert out.frames.shape == (80, 224, 224, 3) and out.frames.dtype == np.uint8
    assert np.isfinite(out.trajs).all() and 0 <= out.trajs[..., 2:].min() and out.trajs[..., 2:].max() <= 255
    assert out.trajs[NOSE_TIP_SLOT, 0, :2] == pytest.approx([0, 0], abs=1e-4)
    assert np.abs(out.trajs[..., :2]).max() < 256
    q = out.quality
    assert isinstance(q["scorable"], bool) and isinstance(q["reasons"], list)
    json.dumps(q), json.dumps(out.meta)


def test_portrait_phone_video_comes_out_upright():
    ex = _extract_real("liveportrait_d13.mp4")
    assert ex.meta["height"] > ex.meta["width"]
    rs = lm.region_slices()
    eyes_y = ex.landmarks[:, rs["left_eye"], 1].mean(), ex.landmarks[:, rs["right_eye"], 1].mean()
    mouth_y = ex.landmarks[:, rs["upper_lip"], 1].mean()
    assert max(eyes_y) < ex.landmarks[:, NOSE_TIP_SLOT, 1].mean() < mouth_y
    # subject's left eye appears on the image right
    assert ex.landmarks[:, rs["left_eye"], 0].mean() > ex.landmarks[:, rs["right_eye"], 0].mean()


def test_cartoon_then_man_finds_the_man():
    ex = _extract_real("pyfeat_noface_face.mov")
    q = ex.quality
    assert 0.2 < q["face_share"] < 0.8
    assert q["first_face_frame"] > q["n_frames"] / 3
    assert ex.meta["window_frames"][0] >= q["first_face_frame"]


def test_no_face_refusal_carries_the_quality_report():
    e = _extract_real("pyfeat_no_face.mp4")
    assert e.details["quality"]["n_face_frames"] == 0 and e.details["quality"]["scorable"] is False


def test_local_clip_window_rules_and_alignment():
    # the clip shipped in tests/data: 2.4 s at 30 fps -> 60 frames at 25 fps, shorter than Tp and Tf
    calls = []
    ex = extract(SINGLE_FACE, PreprocessContract(tp=128, tf=80), progress=lambda s, f: calls.append((s, f)))
    n = ex.meta["n_frames"]
    assert n == 60 and ex.meta["traj_padding"] == "loop" and ex.meta["rgb_sampling"] == "loop"
    idx, index_t = lm.trajectory_window(60, 128)
    np.testing.assert_array_equal(ex.index_t, index_t)
    # trajectory step i is window frame idx[i], relative to the first frame's nose tip
    nose0 = ex.landmarks[0, NOSE_TIP_SLOT]
    np.testing.assert_allclose(ex.trajs[:, 70, :2], ex.landmarks[idx[70]] - nose0, atol=1e-4)
    # RGB frames come from the same span as the trajectory, looped the same way
    assert ex.meta["rgb_source_frames"] == [i % 60 for i in range(80)]
    assert ex.meta["window_frames"] == [0, 59]
    assert {s for s, _ in calls} == {"decoding", "tracking"} and calls[-1] == ("tracking", 1.0)
    assert ex.quality["scorable"] and ex.quality["face_share"] == 1.0


def test_long_clip_keeps_latter_portion_with_aligned_rgb():
    ex = _extract_real("tfjs-models_facemesh_input.mp4")
    n = ex.meta["n_face_frames"]
    assert ex.meta["traj_padding"] == "latter" and ex.meta["rgb_sampling"] == "even"
    assert ex.meta["window_frames"] == [n - 128, n - 1]
    src = ex.meta["rgb_source_frames"]
    assert src[0] == n - 128 and src[-1] == n - 1 and len(src) == 80
    assert ex.index_t.max() == pytest.approx(2 * (n - 1) / 128 - 1)
    # the RGB frames are the face crops of those frames (resized), not other moments
    rows = ex.meta["rgb_window_index"]
    assert rows[0] == 0 and rows[-1] == 127


def _shift_clip(tmp_path, face_frame, shifts):
    import cv2

    h, w = face_frame.shape[:2]
    frames = []
    for dx, dy in shifts:
        m = np.array([[1, 0, 80 + dx], [0, 1, 60 + dy]], np.float64)
        frames.append(cv2.warpAffine(face_frame, m, (w + 160, h + 120), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return write_clip(tmp_path / "shift.mkv", frames, codec="ffv1", pix_fmt="yuv444p")


def test_trajectories_follow_known_motion(tmp_path, face_frame):
    # given a still real face moved by known sub-pixel shifts (a pan of up to ~45 px, losslessly encoded)
    t = np.arange(40)
    shifts = np.stack([30 * np.sin(t / 6.0) + 0.37 * t, 12 * np.cos(t / 5.0) - 0.21 * t], 1)
    ex = extract(_shift_clip(tmp_path, face_frame, shifts), PreprocessContract(tp=32, tf=16))
    assert ex.meta["n_face_frames"] == 40
    # when crop coordinates are mapped back to frame pixels and the known shift is removed
    lo = ex.meta["window_frames"][0]
    frame_xy = ex.landmarks * (ex.boxes[:, None, 2:3] / 256) + ex.boxes[:, None, :2]
    still = frame_xy - shifts[lo:, None, :]
    # then what is left is the landmark noise: under 1% of the inter-ocular (outer eye corner) distance
    iod = np.median(np.linalg.norm(frame_xy[:, 0] - frame_xy[:, 18], axis=-1))
    rms = np.sqrt(((still - still.mean(0)) ** 2).sum(-1).mean())
    print("known-motion residual (share of iod):", rms / iod)
    assert rms < 0.01 * iod, rms / iod
    # and the trajectory channels are those landmarks relative to the first window frame's nose tip
    idx, _ = lm.trajectory_window(40, 32)
    np.testing.assert_allclose(ex.trajs[:, :, :2], (ex.landmarks[idx - lo] - ex.landmarks[0, NOSE_TIP_SLOT])
                               .transpose(1, 0, 2), atol=1e-3)


def test_refuses_too_short_and_face_too_rare(tmp_path, face_frames):
    blank = np.full_like(face_frames[0], 30)
    short = write_clip(tmp_path / "short.mp4", face_frames[:5])
    rare = write_clip(tmp_path / "rare.mp4", face_frames[:3] + [blank] * 27)
    for path, code in ((short, "video_too_short"), (rare, "face_too_rare")):
        with pytest.raises(VideoError) as e:
            extract(path, PreprocessContract())
        assert e.value.code == code


def test_optional_channels_and_interocular_scale():
    c = PreprocessContract(tp=16, tf=16, channels=("x", "y", "z", "r", "g", "b"), scale_norm="interocular")
    ex = extract(SINGLE_FACE, c)
    assert ex.trajs.shape == (63, 16, 6)
    rs = lm.region_slices()
    d = np.linalg.norm(ex.trajs[rs["left_eye"].stop - 1, 0, :2] - ex.trajs[rs["right_eye"].stop - 1, 0, :2])
    assert d == pytest.approx(1.0, abs=1e-3)
    assert np.abs(ex.trajs[:, :, 2]).max() < 2      # z also in inter-ocular units


def test_cli_extract_and_plots(tmp_path, capsys):
    from service.cli import main

    out, plots = tmp_path / "x.npz", tmp_path / "plots"
    assert main(["extract", str(SINGLE_FACE), "--out", str(out), "--plots", str(plots)]) == 0
    summary = json.loads(capsys.readouterr().out)
    ex = Extraction.load_npz(out)
    assert ex.trajs.shape == (63, 128, 5) and ex.frames.shape == (80, 224, 224, 3)
    assert summary["quality"]["scorable"] is True and ex.quality == summary["quality"]
    for name in ("overlay.png", "trajectories.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # a refused video: exit code 2 and the stable code on stderr
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    assert main(["extract", str(bad), "--out", str(tmp_path / "y.npz")]) == 2
    assert json.loads(capsys.readouterr().err)["error"]["code"] == "empty_file"


def test_overlay_accepts_frames_and_landmarks(tmp_path, face_frame, mesh):
    from worker.face import detect_landmarks
    from worker.plots import overlay_png

    slots = lm.slots_from_468(detect_landmarks(face_frame, mesh))[:, :2]
    p = overlay_png(face_frame, tmp_path / "o.png", landmarks=slots)
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_insightface_scheme_needs_its_model_pack(tmp_path, monkeypatch):
    from model.errors import ModelUnavailable
    from worker.face import insightface_available

    monkeypatch.setenv("FEQA_INSIGHTFACE_DIR", str(tmp_path))      # an empty pack directory
    assert not insightface_available()
    with pytest.raises(ModelUnavailable):
        extract(SINGLE_FACE, PreprocessContract(landmark_scheme="insightface106_63"))


def test_decode_thread_ends_when_tracking_fails(monkeypatch):
    import threading

    from worker import extract as ex_mod

    class Boom(RuntimeError):
        pass

    def fail(*a, **k):
        raise Boom("tracker failed")

    def alive() -> list:
        return [t for t in threading.enumerate() if t.name in ("feqa-decode", "feqa-frames") and t.is_alive()]

    for own_thread in (True, False):       # the per-frame work on a thread behind the tracker, or inline
        limits = ex_mod.ExtractLimits(frames_thread=own_thread)
        # the per-frame work fails: its error comes back, every thread ends
        monkeypatch.setattr(ex_mod.QualityAccumulator, "add_frame", fail)
        with pytest.raises(Boom):
            extract(SINGLE_FACE, PreprocessContract(), limits=limits)
        assert not alive()
        monkeypatch.undo()
        # the tracker fails (on this thread) after a few frames: the same
        real, calls = ex_mod.FaceTracker.step, []
        monkeypatch.setattr(ex_mod.FaceTracker, "step", lambda self, im, real=real, calls=calls: fail()
                            if len(calls) > 5 else calls.append(1) or real(self, im))
        with pytest.raises(Boom):
            extract(SINGLE_FACE, PreprocessContract(), limits=limits)
        assert not alive() and len(calls) == 6
        monkeypatch.undo()


def test_frame_work_gives_the_same_extraction_on_its_own_thread_or_inline():
    from worker.extract import ExtractLimits

    a = extract(SINGLE_FACE, PreprocessContract(tp=32, tf=16), limits=ExtractLimits(frames_thread=True))
    b = extract(SINGLE_FACE, PreprocessContract(tp=32, tf=16), limits=ExtractLimits(frames_thread=False))
    for name in ("trajs", "index_t", "frames", "landmarks", "boxes"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.quality == b.quality
    assert a.meta["timing_s"]["frames_thread_cpu_s"] > 0 and b.meta["timing_s"]["frames_thread_cpu_s"] == 0


def test_cut_to_another_person_splits_and_keeps_the_longest_segment(tmp_path, face_frames):
    # given 30 frames of one man, then a hard cut to another person filmed in the same place for 12 frames
    import cv2

    from tests.worker.conftest import first_frames

    other = cv2.resize(first_frames(shared_video("liveportrait_d6.mp4"), 1)[0], (360, 360))
    second = face_frames[0].copy()
    second[:, 140:500] = other
    path = write_clip(tmp_path / "cut.mkv", face_frames[:30] + [second] * 12, codec="ffv1")
    ex = extract(path, PreprocessContract(tp=32, tf=16))
    q = ex.quality
    # then the two shots are separate segments and the model inputs come from the longer one only
    assert q["segments"] == 2 and q["used_segment_frames"] == [0, 29] and q["used_face_frames"] == 30
    assert ex.meta["window_frames"] == [0, 29] and max(ex.meta["rgb_source_frames"]) <= 29
    assert "face_track_split" in q["warnings"] and q["n_face_frames"] == 42


def test_insightface_scheme_wiring_with_a_stand_in_model(monkeypatch):
    # given a stand-in for insightface's FaceAnalysis (the real pack cannot be downloaded here) that returns
    # 106 points per face, taken from our mesh so that they sit on the face
    import sys
    import types

    from tests.worker.conftest import first_frames
    from worker import face as face_mod
    from worker.face import detect_landmarks

    class Face:
        def __init__(self, pts):
            self.landmark_2d_106 = pts[:106, :2]
            self.bbox = np.r_[pts[:, :2].min(0), pts[:, :2].max(0)]
            self.det_score = 0.9

    class FaceAnalysis:
        def __init__(self, **kw):
            self.kw = kw

        def prepare(self, **kw):
            pass

        def get(self, bgr):
            pts = detect_landmarks(np.ascontiguousarray(bgr[:, :, ::-1]))
            return [] if pts is None else [Face(pts)]

    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FaceAnalysis
    pkg = types.ModuleType("insightface")
    pkg.app = app
    monkeypatch.setitem(sys.modules, "insightface", pkg)
    monkeypatch.setitem(sys.modules, "insightface.app", app)
    monkeypatch.setattr(face_mod, "insightface_available", lambda: True)
    # when the contract asks for the 106-point scheme
    ex = extract(SINGLE_FACE, PreprocessContract(tp=64, tf=16, landmark_scheme="insightface106_63"))
    # then the 63 slots come from the 106 points through the reference index map, relative to point 86
    assert ex.trajs.shape == (63, 64, 5) and ex.meta["landmark_scheme"] == "insightface106_63"
    assert ex.meta["window_frames"][0] == 0
    mesh_pts = detect_landmarks(first_frames(SINGLE_FACE, 1)[0])
    expected = lm.slots_from_106(mesh_pts[:106, :2])
    # same geometry up to the crop's scale and offset: compare shapes after removing both
    got = ex.landmarks[0]

    def norm(p):
        p = p - p.mean(0)
        return p / np.linalg.norm(p)

    assert np.abs(norm(got) - norm(expected)).max() < 0.01
    assert ex.quality["pose"] is None          # no 3-D mesh in this scheme


def test_sideways_video_without_rotation_metadata_is_turned_upright(tmp_path, face_frames):
    # given a clip whose frames are stored turned a quarter counter-clockwise and no rotation metadata
    turned = [np.ascontiguousarray(np.rot90(f, k=1)) for f in face_frames[:30]]
    path = write_clip(tmp_path / "sideways.mp4", turned)
    ex = extract(path, PreprocessContract(tp=32, tf=16))
    # then extraction finds the turn that makes the face upright and records it
    assert ex.meta["rotation_guessed"] == 270 and ex.meta["rotation"] == 270
    assert (ex.meta["width"], ex.meta["height"]) == (640, 360)
    rs = lm.region_slices()
    assert ex.landmarks[:, rs["left_eye"], 1].mean() < ex.landmarks[:, rs["upper_lip"], 1].mean()
    assert ex.quality["n_face_frames"] == 30


def test_video_too_long_raised_from_the_decode_thread():
    from worker.extract import ExtractLimits
    from worker.video import DecodeLimits

    with pytest.raises(VideoError) as e:
        extract(SINGLE_FACE, limits=ExtractLimits(decode=DecodeLimits(max_duration_s=1.0)))
    assert e.value.code == "video_too_long"


def test_upside_down_video_is_turned_upright(tmp_path, face_frames, mesh):
    from worker.extract import guess_rotation
    from worker.video import DecodeLimits

    flipped = [np.ascontiguousarray(np.rot90(f, k=2)) for f in face_frames[:30]]
    path = write_clip(tmp_path / "upside_down.mp4", flipped)
    assert guess_rotation(path, mesh, DecodeLimits()) == 180
    ex = extract(path, PreprocessContract(tp=32, tf=16))
    assert ex.meta["rotation_guessed"] == 180
    rs = lm.region_slices()
    assert ex.landmarks[:, rs["left_eye"], 1].mean() < ex.landmarks[:, rs["upper_lip"], 1].mean()


def test_stage_clip_with_cuts_is_not_scorable():
    # several people and shot changes: the longest single-person shot is used, but it is too small a part
    ex = _extract_real("face_recognition_short_hamilton_clip.mp4")
    q = ex.quality
    assert q["segments"] > 1 and "face_track_split" in q["warnings"] and q["other_faces"]
    assert q["used_share"] < 0.5 and "face_often_missing" in q["reasons"] and not q["scorable"]
    assert q["measured_on"] == "window"


def test_clip_with_the_head_on_its_side_is_not_scored(tmp_path, face_frames):
    # given a real clip turned by 55 degrees (beyond the 45-degree roll limit, short of the 60-degree sideways
    # guess that re-turns whole videos)
    import cv2

    h, w = face_frames[0].shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -55, 1.0)
    m[:, 2] += [(640 - w) / 2, (640 - h) / 2]
    frames = [cv2.warpAffine(f, m, (640, 640), borderMode=cv2.BORDER_REPLICATE) for f in face_frames[:30]]
    ex = extract(write_clip(tmp_path / "tilted.mp4", frames))
    # then the face is tracked but the quality report blocks it as tilted
    q = ex.quality
    assert ex.meta["rotation_guessed"] == 0 and q["face_share"] == 1.0
    assert abs(q["pose"]["roll"]["median"]) > 45 and q["tilted_share"] > 0.9
    assert "head_tilted" in q["reasons"] and q["scorable"] is False


def test_rgba_decoding_gives_what_rgb_decoding_gives(monkeypatch):
    # given the single-face clip extracted as it is (decoded as RGBA: faster warps) with its crops kept ...
    from worker import extract as ex_mod
    from worker.video import iter_frames

    contract = PreprocessContract(tp=32, tf=16)
    fast = extract(SINGLE_FACE, contract, keep_crops=True)
    rec = ex_mod.extract_recording(SINGLE_FACE, contract)
    # ... and again with the decoder made to hand over RGB frames, as before
    monkeypatch.setattr(ex_mod, "iter_frames", lambda *a, **k: iter_frames(*a, **{**k, "pixel_format": "rgb24"}))
    plain = extract(SINGLE_FACE, contract, keep_crops=True)
    plain_rec = ex_mod.extract_recording(SINGLE_FACE, contract)
    # then every output is the same, bit for bit, and the crops and pictures are three-channel RGB
    assert fast.crops.shape == (len(fast.boxes), 256, 256, 3) and rec.pictures.shape[-1] == 3
    for name in ("trajs", "index_t", "frames", "landmarks", "boxes", "crops"):
        assert np.array_equal(getattr(fast, name), getattr(plain, name)), name
    for name in ("slots", "rgb", "boxes", "mesh", "small", "pictures"):
        assert np.array_equal(getattr(rec, name), getattr(plain_rec, name)), name
    assert fast.quality == plain.quality and rec.quality == plain_rec.quality
    # crops are stacked only when asked for
    assert plain_rec.n and extract(SINGLE_FACE, contract).crops is None
