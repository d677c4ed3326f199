"""Movement measures leave the service as FHIR components (UCUM units) and batch columns (issue 12, item 5)."""
from __future__ import annotations

from worker.jobs.store import NewItem

REGIONS = {"mouth_corners": {"rom_iod": 0.066, "peak_speed_iod_s": 0.18, "time_to_peak_s": 0.72, "asymmetry": 0.14},
           "brows": {"rom_iod": 0.005, "peak_speed_iod_s": 0.01, "time_to_peak_s": 0.3, "asymmetry": None}}
SMILE = {"score": 1.2, "score_rounded": 1, "meaning": "slight", "abstained": False,
         "scale": {"name": "mds_updrs_3_2", "title": "t", "min": 0, "max": 4, "meanings": {}},
         "aggregation": {"rule": "median_over_repetitions_of_mean_over_windows", "n_windows": 15, "spread": 0.4},
         "repetitions": [{"index": k, "score": s, "measures": {}} for k, s in enumerate((1.0, 1.2, 1.4))],
         "findings": ["repetitions_disagree"],
         "measures": {"regions": REGIONS, "fatigue": -0.2, "variability": 0.1, "n_repetitions": 3, "rest": None}}
REST = {"score": 0.5, "score_rounded": 1, "meaning": "slight", "abstained": False, "repetitions": [],
        "measures": {"regions": {}, "fatigue": None, "variability": None, "n_repetitions": 0,
                     "rest": {"blink_rate_per_min": 12.0, "n_blinks": 2, "spontaneous_movement_iod": 0.02,
                              "lips_apart_share": 0.1, "tremor_power_iod2": 2e-5, "tremor_peak_hz": 5.1,
                              "face_time_s": 10.0}}}


def test_fhir_has_a_component_per_measure_in_ucum(client, app):
    store = app.state.store
    aid = store.new_id()
    store.create_assessment(aid, "local", [NewItem("smile", f"uploads/{aid}/0.video", "0", 1),
                                           NewItem("sit_at_rest", f"uploads/{aid}/1.video", "0", 1)],
                            protocol="pfed5")
    for item, res in zip(store.item_ids(aid), (SMILE, REST), strict=True):
        store.claim_item(item, "w", 3)
        store.finish_item(item, res, {}, {})
    comps = client.get(f"/v1/assessments/{aid}/fhir").json()["component"]
    by_code = {c["code"]["coding"][0]["code"]: c for c in comps}
    assert list(by_code)[0] == "mds-updrs-3.2.smile"                      # the score first, then its measures
    rom = by_code["mds-updrs-3.2.smile.mouth_corners.rom_iod"]["valueQuantity"]
    assert rom == {"value": 0.066, "unit": "IOD", "system": "http://unitsofmeasure.org", "code": "{IOD}"}
    assert by_code["mds-updrs-3.2.smile.mouth_corners.peak_speed_iod_s"]["valueQuantity"]["code"] == "{IOD}/s"
    assert by_code["mds-updrs-3.2.smile.mouth_corners.time_to_peak_s"]["valueQuantity"]["code"] == "s"
    assert by_code["mds-updrs-3.2.smile.fatigue"]["valueQuantity"]["value"] == -0.2
    assert "mds-updrs-3.2.smile.brows.asymmetry" not in by_code                # null values are left out
    assert by_code["mds-updrs-3.2.sit_at_rest.rest.blink_rate_per_min"]["valueQuantity"]["code"] == "/min"
    assert by_code["mds-updrs-3.2.sit_at_rest.rest.tremor_peak_hz"]["valueQuantity"]["code"] == "Hz"
    assert "mds-updrs-3.2.sit_at_rest.rest.n_blinks" not in by_code           # a count is not a measure row
    assert len(comps) == 2 + 7 + 2 + 5                                        # 7 region values, 2, 5 rest
    assert "4-6 Hz" in by_code["mds-updrs-3.2.sit_at_rest.rest.tremor_power_iod2"]["code"]["text"]


def test_batch_columns_carry_the_whole_recording_fields():
    from service.cli_batch import COLUMNS, FIELDS

    item = {"status": "succeeded", "result": SMILE}
    row = {c.name: c.get(item) for c in COLUMNS if c.get}
    assert row["scale"] == "mds_updrs_3_2" and row["score_spread"] == 0.4 and row["n_repetitions"] == 3
    assert row["repetition_scores"] == [1.0, 1.2, 1.4] and row["findings"] == ["repetitions_disagree"]
    assert row["rom_iod_mouth_corners"] == 0.066 and row["asymmetry_brows"] is None
    assert row["fatigue"] == -0.2 and row["blink_rate_per_min"] is None
    rest = {c.name: c.get({"result": REST}) for c in COLUMNS if c.get}
    assert rest["blink_rate_per_min"] == 12.0 and rest["tremor_power_iod2"] == 2e-5
    assert FIELDS.index("findings") > FIELDS.index("error_message")            # added after the old columns
