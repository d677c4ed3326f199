"""Turn store rows into API responses: the assessment JSON and its FHIR R4 Observation."""
from __future__ import annotations

from datetime import UTC, datetime

from model.contract import PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS
from model.messages import explain, message, reasons_text
from worker.jobs.db import Assessment, Item
from worker.jobs.status import IN_FLIGHT, NO_PICTURES, ItemStatus, PicturesState
from worker.jobs.store import assessment_status, aware

ARTIFACTS = ("overlay", "trajectories")


def assessment_url(base: str, assessment_id: str) -> str:
    return f"{base}/v1/assessments/{assessment_id}"


# A scored item still without pictures this long after its result: its worker died before drawing them.
PICTURES_GRACE_S = 600.0


def pictures_state(it: Item, now: datetime | None = None) -> PicturesState:
    """Whether an item's picture links may still appear (pending), are set (ready) or never will (none)."""
    if it.status in IN_FLIGHT:
        return PicturesState.PENDING
    if it.status != ItemStatus.SUCCEEDED:
        return PicturesState.NONE     # failed, or deleted (its pictures removed with it)
    drawn = it.artifacts or {}
    if any(name in drawn for name in ARTIFACTS):
        return PicturesState.READY
    if NO_PICTURES in drawn:
        return PicturesState.NONE
    finished = aware(it.finished_at) if it.finished_at else None
    if finished is not None and ((now or datetime.now(UTC)) - finished).total_seconds() > PICTURES_GRACE_S:
        return PicturesState.NONE
    return PicturesState.PENDING


def item_out(base: str, a: Assessment, it: Item) -> dict:
    url = assessment_url(base, a.id)
    links = {name: f"{url}/items/{it.idx}/{name}.png" if it.artifacts and name in it.artifacts else None
             for name in ARTIFACTS}
    out = {"index": it.idx, "expression": it.expression, "status": it.status,
           "progress": {"stage": it.stage, "percent": it.percent}, "pictures": pictures_state(it),
           "links": links}
    out["result"] = it.result
    out["error"] = (error_out(it.error_code, it.error_message, it.error_details)
                    if it.status == ItemStatus.FAILED else None)
    return out


def error_out(code: str | None, stored: str | None, details: dict | None) -> dict:
    """A failed item's error in plain words: the stored facts then what to do (model.messages)."""
    m = message(code or "internal_error")
    return {"code": m["code"], "title": m["title"], "message": explain(m["code"], stored),
            "what_to_do": m["what_to_do"], "details": details}


def assessment_out(base: str, a: Assessment, items: list[Item]) -> dict:
    url = assessment_url(base, a.id)
    return {"id": a.id, "status": assessment_status(items), "protocol": a.protocol, "patient_ref": a.patient_ref,
            "created_at": aware(a.created_at).isoformat(), "updated_at": aware(a.updated_at).isoformat(),
            "models": a.models or None,   # the pinned model set (worker.jobs.store: claim_item)
            "items": [item_out(base, a, it) for it in items],
            "links": {"self": url, "fhir": f"{url}/fhir", "retry": f"{url}/retry"}}


# --- FHIR R4 ------------------------------------------------------------------------------------
def _code_for(expression: str) -> tuple[str, str]:
    """Local codes: no LOINC code for MDS-UPDRS item 3.2 (facial expression) was found."""
    if expression in PFED5_EXPRESSIONS:
        return f"mds-updrs-3.2.{expression}", f"MDS-UPDRS 3.2 facial expression, task: {expression}"
    if expression in TORONTO_EXPRESSIONS:
        return f"toronto.{expression}", f"Toronto NeuroFace orofacial task: {expression}"
    return expression, expression


def _component(system: str, it: Item) -> dict:
    code, display = _code_for(it.expression)
    comp: dict = {"code": {"coding": [{"system": system, "code": code, "display": display}], "text": display}}
    res = it.result or {}
    if it.status == ItemStatus.SUCCEEDED and not res.get("abstained") and res.get("score") is not None:
        comp["valueQuantity"] = {"value": round(float(res["score"]), 3), "unit": "score",
                                 "system": "http://unitsofmeasure.org", "code": "{score}"}
        rounded, meaning = res.get("score_rounded"), str(res.get("meaning") or "")   # on the model's own scale
        scale = str((res.get("scale") or {}).get("name") or "severity")    # e.g. toronto_neuroface-2, not 0-4
        comp["interpretation"] = [{"coding": [{"system": system, "code": f"{scale}-{rounded}",
                                               "display": meaning}],
                                   "text": meaning}]
    else:
        reason = "not-performed" if res.get("abstained") else "error"
        text = reasons_text(res.get("reasons")) or explain(it.error_code or "internal_error", it.error_message)
        comp["dataAbsentReason"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": reason}], "text": text}
    model = res.get("model")
    if model:
        comp["extension"] = [{"url": f"{system}/model", "valueString":
                              f"{model.get('name')} {model.get('version')} sha256:{model.get('sha256')} "
                              f"trained_on:{model.get('trained_on')}"}]
    return comp


UCUM = "http://unitsofmeasure.org"


def _quantity(value: float, ucum: str) -> dict:
    """A FHIR Quantity in UCUM: "{IOD}" is an annotated ratio (inter-ocular distances), shown as "IOD"."""
    return {"value": value, "unit": ucum.replace("{", "").replace("}", ""), "system": UCUM, "code": ucum}


def measure_components(system: str, it: Item) -> list[dict]:
    """One Observation component per computed movement measure of a scored item (worker.measures.MEASURES):
    per region (median over the repetitions), fatigue and variability, and at rest the rest measures."""
    from worker.measures import MEASURE_BY_NAME, REGIONS

    res = it.result or {}
    ms = res.get("measures") or {}
    if it.status != ItemStatus.SUCCEEDED or not ms:
        return []
    base, display = _code_for(it.expression)
    values: list[tuple[str, str, str, float]] = []       # (code, display, measure name, value)
    for region, vals in (ms.get("regions") or {}).items():
        for name, v in (vals or {}).items():
            if name in MEASURE_BY_NAME and v is not None and region in REGIONS:
                values.append((f"{base}.{region}.{name}", f"{display}: {region.replace('_', ' ')} {name}", name, v))
    for name in ("fatigue", "variability"):
        if ms.get(name) is not None:
            values.append((f"{base}.{name}", f"{display}: {name}", name, ms[name]))
    for name, v in (ms.get("rest") or {}).items():
        if name in MEASURE_BY_NAME and v is not None:
            values.append((f"{base}.rest.{name}", f"{display}: {name.replace('_', ' ')}", name, v))
    return [{"code": {"coding": [{"system": system, "code": code, "display": disp}],
                      "text": f"{disp} ({MEASURE_BY_NAME[name].meaning})"},
             "valueQuantity": _quantity(round(float(v), 4), MEASURE_BY_NAME[name].unit)}
            for code, disp, name, v in values]


def fhir_observation(a: Assessment, items: list[Item], system: str) -> dict:
    protocol = a.protocol or ("pfed5" if all(i.expression in PFED5_EXPRESSIONS for i in items) else
                              "toronto" if all(i.expression in TORONTO_EXPRESSIONS for i in items) else "mixed")
    panel = {"pfed5": ("mds-updrs-3.2", "MDS-UPDRS Part III item 3.2: facial expression (automated estimate)"),
             "toronto": ("toronto-facial", "Toronto facial grading tasks (automated estimate)")}.get(
        protocol, ("facial-expression", "Facial expression assessment (automated estimate)"))
    models = {f"{r['model']['name']} {r['model']['version']}" for it in items
              if (r := it.result) and r.get("model")}
    clinical = all((it.result or {}).get("model", {}).get("clinical_use") for it in items if it.result)
    note = ("Automated estimate by FEQA (TraMP-Former); preliminary until reviewed and signed by a clinician. "
            f"Models: {', '.join(sorted(models)) or 'none'}.")
    if not clinical:
        note += " NOT FOR CLINICAL USE: produced by a model not validated for clinical use."
    obs = {"resourceType": "Observation", "id": a.id, "status": "preliminary",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "exam", "display": "Exam"}]}],
           "code": {"coding": [{"system": system, "code": panel[0], "display": panel[1]}], "text": panel[1]},
           "effectiveDateTime": aware(a.created_at).isoformat(),
           "issued": datetime.now(UTC).isoformat(),
           "device": {"display": f"FEQA {', '.join(sorted(models)) or ''}".strip()},
           "note": [{"text": note}],
           "component": [c for it in items for c in (_component(system, it), *measure_components(system, it))]}
    if a.patient_ref:
        obs["subject"] = {"identifier": {"value": a.patient_ref}}
    return obs


def fhir_bundle(patient_ref: str, pages: list[tuple[Assessment, list[Item]]], system: str, base: str) -> dict:
    """A FHIR R4 Bundle (type collection) of one patient's Observations, oldest first."""
    entries = [{"fullUrl": f"{assessment_url(base, a.id)}/fhir", "resource": fhir_observation(a, items, system)}
               for a, items in sorted(pages, key=lambda p: (aware(p[0].created_at), p[0].id))]
    return {"resourceType": "Bundle", "type": "collection", "timestamp": datetime.now(UTC).isoformat(),
            "total": len(entries), "entry": entries,
            "meta": {"tag": [{"system": system, "code": "patient-history",
                              "display": f"FEQA assessments of patient reference {patient_ref}"}]}}
