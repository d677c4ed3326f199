"""Given the licensed identity photos, when simulated patients are rendered, then severity lowers the
expression's amplitude, the videos are real 25 fps mp4s, and the manifest says what they are."""
from __future__ import annotations

import csv
import json

import av
import numpy as np

from training.datasets import read_manifest
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
    ids = pseudo_identities(8)
    assert len({i.id for i in ids}) == 8 and len({i.base for i in ids}) == 4
    assert all(i.mirrored == i.id.endswith("-mirror") for i in ids)


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
    samples = read_manifest(manifest)
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
