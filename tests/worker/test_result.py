"""The one result model (worker.result.ItemResult): what the worker stores is what the API documents.

Given results shaped as the pipeline builds them, when validated, then the stored JSON keeps exactly
the keys that were set (nothing added), extra fields pass, and a score off its scale is refused.
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from model.scales import MDS_UPDRS, TORONTO
from worker.result import ItemResult, validated

FACTS = {"name": "m", "version": "1", "sha256": "0" * 64, "trained_on": "untrained", "training_data": None,
         "clinical_use": False}


def scored(**kw) -> dict:
    base = {"expression": "smile", "score": 2.4, "score_rounded": 2, "meaning": "mild", "abstained": False,
            "reasons": [], "model": FACTS, "quality": {"scorable": True, "reasons": [], "face_share": 0.98},
            "not_for_clinical_use": True, "timings": {"decoding": 0.1, "total": 0.3},
            "video": {"duration_s": 3.0, "fps_in": 30.0, "fps_out": 25.0, "rotation": 0, "n_frames": 90}}
    return {**base, **kw}


def test_validated_keeps_the_keys_set_and_adds_none():
    r = scored()
    assert validated(r) == r


def test_whole_recording_fields_and_unknown_extras_pass_through():
    r = scored(scale=TORONTO.to_dict(), score=4.6, score_rounded=5, meaning="severely impaired",
               aggregation={"rule": "median", "n_windows": 3, "spread": 0.2},
               repetitions=[{"index": 0, "onset_s": 0.5, "peak_s": 1.0, "offset_s": 1.6, "score": 4.5,
                             "measures": {"rom_iod": 0.3}}],
               findings=["repetitions_disagree"], measures={"regions": {}}, something_new={"x": 1})
    assert validated(r) == r


@pytest.mark.parametrize("scale, score", [(None, 4.2), (MDS_UPDRS.to_dict(), -0.1), (TORONTO.to_dict(), 0.5)])
def test_a_score_off_its_scale_is_refused(scale, score):
    r = scored(score=score, score_rounded=None) | ({"scale": scale} if scale else {})
    with pytest.raises(ValidationError, match="outside the scale"):
        ItemResult.model_validate(r)


def test_an_abstained_result_carries_no_score():
    assert validated(scored(score=None, score_rounded=None, meaning=None, abstained=True,
                            reasons=["face_often_missing"]))["abstained"] is True
    with pytest.raises(ValidationError, match="abstained"):
        ItemResult.model_validate(scored(abstained=True))


def test_the_api_documents_this_model(tmp_path):
    from service.api.main import create_app
    from worker.settings import Settings

    doc = create_app(Settings(var_dir=tmp_path)).openapi()["components"]["schemas"]
    assert set(doc["ItemResult"]["properties"]) == set(ItemResult.model_fields)
    assert doc["ItemOut"]["properties"]["result"]["anyOf"][0] == {"$ref": "#/components/schemas/ItemResult"}


def test_the_client_reads_the_same_model():
    from service.client import FeqaClient

    typed = FeqaClient.result({"index": 0, "result": scored(scale=MDS_UPDRS.to_dict())})
    assert isinstance(typed, ItemResult) and typed.score == 2.4 and typed.scale.max == 4
    assert typed.model.trained_on == "untrained" and typed.quality.scorable is True
    assert FeqaClient.result({"index": 0, "result": None}) is None
