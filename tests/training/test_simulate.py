"""Given the licensed identity photos, when simulated patients are rendered, then severity lowers the
expression's amplitude, the videos are real 25 fps mp4s, and the manifest says what they are."""
from __future__ import annotations

import csv
import json

import av
import numpy as np

from training.datasets import read_dataset_manifest
from training.simulate import (
    IDENTITY_DIR,
    MOUTH_CORNERS,
    FaceGeometry,
    MeshWarp,
    identity_face,
    mesh_motion,
    plan_clip,
    pseudo_identities,
    simulate,
    variant_face,
)


def test_every_identity_has_a_photo_a_licence_and_a_notice():
    data = json.loads((IDENTITY_DIR / "identities.json").read_text())["identities"]
    assert len(data) >= 4
    notice = (IDENTITY_DIR / "NOTICE").read_text()
    for ident in data:
        assert (IDENTITY_DIR / ident["photo"]).exists()
        assert ident["licence"] and ident["source"]
        assert ident["photo"] in notice


def test_pseudo_identities_keep_their_base_for_splitting():
    ids = pseudo_identities(10)
    assert len({i.id for i in ids}) == 10 and len({i.base for i in ids}) == 5
    assert all(i.mirrored == i.id.endswith("-mirror") for i in ids)
    shaped = ids[6].variant(2)
    assert shaped.base == ids[6].base and shaped.mirrored == ids[6].mirrored and shaped.id.endswith("-shape2")


def test_a_shape_variant_reshapes_the_face_and_changes_its_tone_but_keeps_the_photo():
    ident = pseudo_identities(1)[0]
    img, mesh = identity_face(ident)
    same_img, none = variant_face(ident, img, mesh)
    assert same_img is img and not none.any()
    img1, static1 = variant_face(ident.variant(1), img, mesh)
    img2, static2 = variant_face(ident.variant(2), img, mesh)
    iod = FaceGeometry(mesh).iod
    for im, st in ((img1, static1), (img2, static2)):
        assert st.shape == (468, 2) and 0.01 * iod < np.abs(st).max() < 0.2 * iod   # visible, still a face
        assert im.shape == img.shape and np.abs(im.astype(int) - img.astype(int)).mean() > 2
    assert not np.allclose(static1, static2)
    again, static1b = variant_face(ident.variant(1), img, mesh)           # fixed per pseudo-identity
    assert np.array_equal(static1, static1b) and np.array_equal(img1, again)


def test_shape_variants_are_added_to_training_identities_only(tmp_path):
    manifest = simulate(tmp_path, identities=3, per_severity=1, expressions=("smile",), progress=False,
                        test_identities=("pyfeat_man",), val_identities=("tfjs_woman",), shapes=2, workers=2)
    samples = read_dataset_manifest(manifest)
    by_split = {sp: sorted({s.subject for s in samples if s.split == sp}) for sp in ("train", "val", "test")}
    assert by_split == {"train": ["astronaut", "astronaut-shape1"], "val": ["tfjs_woman"],
                        "test": ["pyfeat_man"]}
    assert all(__import__("os").path.exists(s.video) for s in samples) and len(samples) == 20


def test_higher_severity_moves_the_mouth_corners_less():
    img, mesh = identity_face(pseudo_identities(1)[0])
    geo = FaceGeometry(mesh)
    amp = {}
    for sev in (0, 4):
        rng = np.random.default_rng(3)
        d = mesh_motion(geo, plan_clip("smile", sev, rng), rng)
        amp[sev] = np.abs(d[-1, list(MOUTH_CORNERS.values())]).max()
    assert amp[0] > 2.5 * amp[4] > 0


def test_mesh_warp_moves_pixels_only_near_displaced_points():
    img, mesh = identity_face(pseudo_identities(1)[0])
    warp = MeshWarp(mesh[:, :2], img.shape[:2])
    assert np.array_equal(warp(img, np.zeros((468, 2), np.float32)), img)
    disp = np.zeros((468, 2), np.float32)
    disp[MOUTH_CORNERS["left"]] = (6, -4)
    out = warp(img, disp)
    diff = np.abs(out.astype(int) - img.astype(int)).sum(-1)
    x, y = mesh[MOUTH_CORNERS["left"], :2].astype(int)
    assert diff[y - 6:y + 7, x - 6:x + 7].max() > 0
    assert diff[:20].max() == 0  # the top of the image does not move


def test_simulate_writes_videos_and_a_generic_manifest(tmp_path):
    manifest = simulate(tmp_path, identities=1, per_severity=1, expressions=("frown",), progress=False,
                        test_identities=("astronaut",))
    text = manifest.read_text()
    assert text.startswith("# SIMULATED DATA - NOT FOR CLINICAL USE")
    samples = read_dataset_manifest(manifest)
    assert sorted(s.score for s in samples) == [0, 1, 2, 3, 4]
    assert {s.split for s in samples} == {"test"} and {s.group for s in samples} == {"astronaut"}
    with av.open(samples[0].video) as c:
        st = c.streams.video[0]
        frames = [f for f in c.decode(video=0)]
        assert round(float(st.average_rate)) == 25 and len(frames) >= 60
        assert "NOT FOR CLINICAL USE" in c.metadata.get("comment", "")
    with open(manifest) as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert all("not for clinical use" in r["note"] for r in rows)
