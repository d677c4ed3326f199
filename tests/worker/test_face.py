"""Face detection, single-image landmarks, and tracking one patient."""
from __future__ import annotations

import numpy as np

from worker.face import FaceTracker, detect_landmarks, iou, mesh_box


def test_detect_landmarks_single_image(face_frame, mesh):
    pts = detect_landmarks(face_frame, mesh)
    assert pts.shape == (468, 3) and pts.dtype == np.float32
    # subject's left eye outer corner (263) is on the image right; eyes above the nose tip above the lips
    assert pts[263, 0] > pts[33, 0]
    assert pts[33, 1] < pts[1, 1] < pts[13, 1]
    assert 0 <= pts[:, 0].min() and pts[:, 0].max() < face_frame.shape[1]


def test_detect_landmarks_none_without_face(mesh):
    rng = np.random.default_rng(0)
    assert detect_landmarks(np.zeros((360, 640, 3), np.uint8), mesh) is None
    assert detect_landmarks(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), mesh) is None


def _canvas(*faces, size=(1280, 480)):
    c = np.full((size[1], size[0], 3), 40, np.uint8)
    for img, (x, y) in faces:
        c[y:y + img.shape[0], x:x + img.shape[1]] = img
    return c


def test_tracker_follows_the_first_patient_when_another_appears(face_frames, mesh):
    # given the patient on the left, joined after 12 frames by a second (mirrored, larger) face on the right
    import cv2

    other = cv2.resize(face_frames[0][:, ::-1], (800, 450))[40:440, 120:700]
    frames = [_canvas((f, (0, 60))) for f in face_frames[:12]]
    frames += [_canvas((f, (0, 60)), (other, (680, 40))) for f in face_frames[12:30]]
    tracker = FaceTracker(mesh, redetect_every=5)
    steps = [tracker.step(f) for f in frames]
    # then every frame's mesh stays on the left face, and the second face is counted
    assert all(s.pts is not None for s in steps)
    assert all(mesh_box(s.pts)[2] < 640 for s in steps)
    assert any(s.other_faces >= 1 for s in steps[12:]) and not any(s.other_faces for s in steps[:12])


def test_tracker_loses_the_face_on_blank_frames_and_reacquires_it_elsewhere(face_frames, mesh):
    blank = np.full((480, 1280, 3), 40, np.uint8)
    frames = [_canvas((f, (300, 60))) for f in face_frames[:8]] + [blank] * 4
    frames += [_canvas((f, (600, 100))) for f in face_frames[8:16]]
    tracker = FaceTracker(mesh)
    steps = [tracker.step(f) for f in frames]
    assert all(s.pts is not None for s in steps[:8]) and all(s.pts is None for s in steps[8:12])
    assert steps[12].reacquired and steps[12].pts is not None
    # the new box is where the face moved to
    assert iou(mesh_box(steps[-1].pts), mesh_box(steps[7].pts) + np.array([300, 40, 300, 40])) > 0.7


def test_prelu_rewrite_gives_the_same_network_outputs():
    # a Conv -> PRelu graph with negative, fractional and >1 slopes, and the shipped 468-point mesh
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from worker.face import ASSETS, LANDMARK_FILE, prelu_as_convs

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    slope = np.array([-0.5, 0.25, 1.5, 0.0], np.float32).reshape(1, 4, 1, 1)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("PRelu", ["c", "s"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(slope, "s")])
    tiny = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString()
    rewritten = prelu_as_convs(tiny)
    assert "PRelu" not in {n.op_type for n in onnx.load_from_string(rewritten).graph.node}
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    run = lambda m, feed: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    np.testing.assert_allclose(run(rewritten, {"x": x})[0], run(tiny, {"x": x})[0], rtol=1e-5, atol=1e-5)

    mesh_bytes = (ASSETS / LANDMARK_FILE).read_bytes()
    crop = {"input_1": rng.random((1, 3, 192, 192), dtype=np.float32)}
    a, b = run(mesh_bytes, crop), run(prelu_as_convs(mesh_bytes), crop)
    assert np.abs(a[0] - b[0]).max() < 1e-3 and np.abs(a[1] - b[1]).max() < 1e-4    # crop pixels, logit


def test_uint8_image_input_matches_the_float_input():
    import onnxruntime as ort

    from worker.face import ASSETS, DETECTOR_FILE, uint8_hwc_input

    det = (ASSETS / DETECTOR_FILE).read_bytes()
    img = np.random.default_rng(1).integers(0, 256, (1, 192, 192, 3), dtype=np.uint8)
    run = lambda m, feed: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    ref = run(det, {"input": (img.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)})
    got = run(uint8_hwc_input(det, 127.5, -1.0, divide=True), {"image": img})
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)


def test_tight_512_clip_is_found_on_its_first_frame(tmp_path, face_frames, mesh):
    # given a 512x512 clip cropped tightly (1.0 x the mesh box) around the face of a real video
    import cv2

    from tests.worker.conftest import write_clip
    from worker.extract import extract
    from worker.video import iter_frames

    pts = detect_landmarks(face_frames[0], mesh)
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    k, (cx, cy) = 512 / float((hi - lo).max()), (lo + hi) / 2
    m = np.array([[k, 0, 256 - k * cx], [0, k, 256 - k * cy]])
    tight = [cv2.warpAffine(f, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
             for f in face_frames[:12]]
    clip = write_clip(tmp_path / "tight.mp4", tight)
    first = next(iter(iter_frames(clip))).rgb
    # the plain pass misses it (the full-range detector scores a face filling the frame low) ...
    plain, best, size = mesh.detector._detect(np.ascontiguousarray(first), 1.0)
    assert plain == [] and best < mesh.detector.score_threshold and size > 0.5
    # ... the retry on the smaller letterbox finds it, and the track starts on the first frame
    st = FaceTracker(mesh).step(np.ascontiguousarray(first))
    assert st.pts is not None and st.reacquired and st.pts[263, 0] > st.pts[33, 0]
    ex = extract(clip)
    assert ex.quality["first_face_frame"] == 0 and ex.quality["face_share"] == 1.0


def test_channel_padding_as_convolution_gives_the_same_outputs():
    import onnx
    import onnxruntime as ort

    from worker.face import ASSETS, DETECTOR_FILE, LANDMARK_FILE, channel_pad_as_conv

    run = lambda m, feed: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    x = np.random.default_rng(2).random((1, 3, 192, 192), dtype=np.float32)
    for name, inp in ((DETECTOR_FILE, "input"), (LANDMARK_FILE, "input_1")):
        raw = (ASSETS / name).read_bytes()
        new = channel_pad_as_conv(raw)
        assert "Pad" in {n.op_type for n in onnx.load_from_string(raw).graph.node}
        assert "Pad" not in {n.op_type for n in onnx.load_from_string(new).graph.node}
        for a, b in zip(run(raw, {inp: x}), run(new, {inp: x}), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)


def test_after_a_second_without_a_face_the_detector_runs_every_other_frame(face_frames, mesh):
    blank = np.full((360, 640, 3), 40, np.uint8)
    frames = [blank] * 30 + list(face_frames[:6])
    tracker = FaceTracker(mesh, idle_after=25, idle_detect_every=2)
    steps = [tracker.step(np.ascontiguousarray(f)) for f in frames]
    # every frame is searched for the first second, then every other one
    assert all(s.detected for s in steps[:26]) and [s.detected for s in steps[25:30]] == [True, False, True,
                                                                                          False, True]
    # a face that comes back is picked up at most one frame late and then tracked on every frame
    first = next(i for i, s in enumerate(steps) if s.pts is not None)
    assert first in (30, 31) and all(s.pts is not None for s in steps[first:])


def test_rgba_frames_track_exactly_as_rgb_frames(face_frames, mesh):
    # given the same frames as RGB and as RGBA (what extraction decodes: its warps run 2-3x faster on 4 channels)
    import cv2

    rgb = [np.ascontiguousarray(f) for f in face_frames[:24]]
    rgba = [cv2.cvtColor(f, cv2.COLOR_RGB2RGBA) for f in rgb]
    # when each sequence is tracked by its own tracker (detector every 5 frames: both models see both kinds)
    a = [s for s in map(FaceTracker(mesh, redetect_every=5).step, rgb)]
    b = [s for s in map(FaceTracker(mesh, redetect_every=5).step, rgba)]
    # then every frame gives the same mesh and presence, bit for bit; single images too
    assert all(s.pts is not None for s in a)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.pts, y.pts) and x.presence == y.presence and x.detected == y.detected
    assert np.array_equal(detect_landmarks(rgb[3], mesh), detect_landmarks(rgba[3], mesh))
