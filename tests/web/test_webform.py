"""The web form end to end, in a real headless Chromium against a real API + Celery worker.

Given the API and one worker (bench/servers.py) serving untrained models, when a clinician signs in
with a key and uploads a real face video, then the page shows the score on the 0-4 scale with its
meaning, the model facts with a "Not for clinical use" warning, and both pictures; a bad upload
shows its error code next to that expression's input; the form works from the keyboard, including a
webcam recording (Chromium's fake camera). Screenshots go to test-artifacts/ (docs/img/ comes from
scripts/screenshots.py, with the demo models).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.servers import feqa_serve, untrained_models
from tests.conftest import real_video
from tests.web.conftest import MAX_UPLOAD, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

VIEWPORT = (1100, 1300)   # the whole form in one screenshot
MEANINGS = ("normal", "slight", "mild", "moderate", "severe")   # the untrained models' MDS-UPDRS scale


def faceless_video(path: Path) -> Path:
    """A real, decodable H.264 clip of a plain grey wall: no face to score."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90 + i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def stack(web_stack):
    return web_stack


def test_sign_in_upload_and_read_the_report(page, stack, artifacts_dir, tmp_path):
    key = stack.create_key("clinic-a")
    pg = page
    pg.goto("/")
    # Given a wrong key, the error is tied to the key field.
    pg.fill("#api-key", "feqa_wrong_key")
    pg.click("#sign-in-button")
    pg.wait_for_selector("#api-key-error:not([hidden])")
    assert "unauthorized" in pg.inner_text("#api-key-error")
    assert pg.get_attribute("#api-key", "aria-invalid") == "true"
    assert "api-key-error" in pg.get_attribute("#api-key", "aria-describedby")

    # When signed in with the real key, the cookie is HttpOnly + SameSite=Strict and the page says who.
    pg.fill("#api-key", key)
    pg.press("#api-key", "Enter")
    pg.wait_for_selector("#signed-in:not([hidden])")
    assert "clinic-a" in pg.inner_text("#auth-state")
    cookie = next(c for c in pg.context.cookies() if c["name"] == "feqa_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert pg.evaluate("document.cookie").find("feqa_session") == -1  # invisible to page scripts
    pg.wait_for_selector("#model-warning:not([hidden])")
    assert "Not for clinical use" in pg.inner_text("#model-warning")

    # Upload a real face video for one task and a video without a face for another, and submit.
    pg.fill("#patient-ref", "P-0042")
    pg.set_input_files("#file-smile", str(real_video()))
    assert "pyfeat_single_face.mp4" in pg.inner_text("#chosen-smile")
    pg.set_input_files("#file-frown", str(faceless_video(tmp_path / "wall.mp4")))
    pg.screenshot(path=str(artifacts_dir / "webform-form.png"), full_page=True)
    pg.click("#submit")
    pg.wait_for_selector("#progress:not([hidden])")
    bar = pg.locator("#progress-list [role=progressbar]").first
    assert bar.get_attribute("aria-valuemin") == "0" and bar.get_attribute("aria-valuemax") == "100"
    assert bar.get_attribute("aria-labelledby")
    assert pg.get_attribute("#status-line", "aria-live") == "polite"
    pg.screenshot(path=str(artifacts_dir / "webform-progress.png"), full_page=True)

    # Then the report shows the score, the model facts, the warning and the pictures.
    pg.wait_for_selector("#report:not([hidden])", timeout=240_000)
    card = pg.locator("#results article[data-expression=smile]")
    text = card.inner_text()
    if card.locator(".score-value").count():
        value = int(card.locator(".score-value").inner_text())
        assert 0 <= value <= 4
        assert card.locator(".score-meaning").inner_text().lower() == MEANINGS[value]
    else:  # the quality gate abstained: the page must say so plainly, without a number
        assert "Not scored" in text and "not scorable" in text
    assert "untrained" in text.lower()
    assert "version" in pg.text_content("#model-details") and pg.is_visible("#model-details summary")
    assert "Not for clinical use" in pg.inner_text("#report-warning")
    assert pg.inner_text("#r-patient") == "P-0042"
    images = card.locator(".pictures img")
    images.nth(1).wait_for(timeout=120_000)  # pictures are drawn after the score is published
    assert images.count() == 2
    for i in range(2):
        images.nth(i).scroll_into_view_if_needed()
        pg.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle())
    # The faceless video is not scored: the page says why, gives no number, and marks its input.
    wall = pg.locator("#results article[data-expression=frown]")
    assert wall.locator(".score-value").count() == 0
    assert re.search(r"Not scored|Failed", wall.inner_text())
    assert re.search(r"no_face|face_too_rare|no face", wall.inner_text(), re.I)
    assert pg.inner_text("#r-status") in ("partly failed", "succeeded")
    if pg.inner_text("#r-status") == "partly failed":  # a failure: the form returns with the error at its input
        assert pg.get_attribute("#file-frown", "aria-invalid") == "true"
        assert "no_face" in pg.inner_text("#error-frown") or "face" in pg.inner_text("#error-frown")
        # Sending the form again sends only what is still to do: the scored smile video was let go.
        assert pg.inner_text("#chosen-smile") == "" and "wall.mp4" in pg.inner_text("#chosen-frown")
    pg.locator("#report").screenshot(path=str(artifacts_dir / "webform-report.png"))

    # The printed report: controls hidden, facts and warning shown, one page.
    pg.emulate_media(media="print")
    assert not pg.is_visible("#print") and not pg.is_visible("#assess") and not pg.is_visible("#sign-out")
    assert pg.is_visible("#r-patient") and pg.is_visible("#report-warning") and pg.is_visible("#r-model")
    assert not pg.is_visible("#model-details")   # the licence and training-data facts stay on screen
    pdf = pg.pdf(format="A4")
    (artifacts_dir / "webform-report.pdf").write_bytes(pdf)
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1
    pg.screenshot(path=str(artifacts_dir / "webform-print.png"), full_page=True)
    pg.emulate_media(media="screen")

    # The FHIR link downloads the Observation with the cookie.
    fhir = pg.request.get(pg.get_attribute("#fhir-link", "href"))
    assert fhir.ok and fhir.json()["resourceType"] == "Observation"

    # Signing out drops the cookie: the API then refuses the browser.
    pg.click("#sign-out")
    pg.wait_for_selector("#sign-in:not([hidden])")
    assert not [c for c in pg.context.cookies() if c["name"] == "feqa_session"]
    assert pg.request.get("/v1/models").status == 401


def test_bad_files_show_their_error_next_to_the_expression_input(page, stack, artifacts_dir, tmp_path):
    sign_in(page, stack.create_key("clinic-b"))
    pg = page
    # Given a file that is not a video, the form refuses it before upload, next to its input.
    pg.set_input_files("#file-frown", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    assert pg.is_visible("#error-frown")
    assert "unsupported_media_type" in pg.inner_text("#error-frown")
    assert pg.get_attribute("#file-frown", "aria-invalid") == "true"
    assert "error-frown" in pg.get_attribute("#file-frown", "aria-describedby")

    # Given a video larger than the server's limit, the form says so before uploading it.
    pg.set_input_files("#file-frown", files=[{"name": "long.mp4", "mimeType": "video/mp4",
                                              "buffer": b"\x00" * (MAX_UPLOAD + 1)}])
    assert "upload_too_large" in pg.inner_text("#error-frown")
    assert pg.get_attribute("#file-frown", "aria-invalid") == "true"

    # Given a file that claims to be MP4 but is not, the API rejects it and its code shows at that input.
    pg.set_input_files("#file-frown", files=[{"name": "broken.mp4", "mimeType": "video/mp4",
                                              "buffer": b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500}])
    assert pg.get_attribute("#file-frown", "aria-invalid") is None  # a new choice clears the old error
    pg.click("#submit")
    pg.wait_for_selector("#error-frown:not([hidden])")
    assert "not_a_video" in pg.inner_text("#error-frown")
    assert pg.get_attribute("#file-frown", "aria-invalid") == "true"
    assert pg.evaluate("document.activeElement.id") == "file-frown"  # focus moved to the field at fault
    assert pg.is_hidden("#error-smile")
    assert pg.is_hidden("#progress")
    pg.locator("#task-frown").screenshot(path=str(artifacts_dir / "webform-field-error.png"))

    # Nothing chosen at all: a form-level error, no request.
    pg.click("#task-frown button.clear")
    pg.click("#submit")
    assert "at least one task" in pg.inner_text("#form-error")


def test_keyboard_only_sign_in_protocol_switch_and_webcam_recording(page, stack, artifacts_dir):
    pg = page
    key = stack.create_key("clinic-c")

    def serve_everything(route):   # this stack serves smile and frown only; here every task is offered
        import json as _json

        response = route.fetch()
        if not response.ok:
            route.fulfill(response=response)
            return
        body = response.json()
        for proto in body["protocols"].values():
            for task in proto["tasks"]:
                task.update(served=True, reason=None)
        route.fulfill(status=200, content_type="application/json", body=_json.dumps(body))

    pg.route("**/v1/models", serve_everything)
    pg.goto("/")
    # Tab from the top reaches the key field; typing and Enter signs in.
    for _ in range(6):
        pg.keyboard.press("Tab")
        if pg.evaluate("document.activeElement.id") == "api-key":
            break
    assert pg.evaluate("document.activeElement.id") == "api-key"
    outline = pg.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused field must show a visible focus outline"
    pg.keyboard.type(key)
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#signed-in:not([hidden])")

    # Arrow keys switch the protocol radio group; the Toronto tasks appear, PFED5's hide.
    pg.focus("input[name=protocol][value=pfed5]")
    pg.keyboard.press("ArrowDown")
    assert pg.is_visible("#task-blow") and not pg.is_visible("#task-smile")
    assert pg.is_visible("text=Fill your cheeks with air")
    pg.keyboard.press("ArrowUp")
    assert pg.is_visible("#task-smile")

    # Record with the (fake) webcam from the keyboard: Enter on the buttons, countdown, running length.
    pg.focus("#task-smile button.record")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#rec-start:not([disabled])")
    assert pg.evaluate("document.activeElement.id") == "rec-start"
    chosen_type = pg.evaluate("""() => ['video/webm;codecs=vp9','video/webm;codecs=vp8','video/webm','video/mp4']
        .find(t => MediaRecorder.isTypeSupported(t))""")
    pg.keyboard.press("Enter")
    pg.wait_for_function("() => document.getElementById('countdown').textContent === '3'", timeout=3000)
    pg.wait_for_selector("#rec-stop:not([disabled])", timeout=15_000)   # the countdown, then the recorder starts
    pg.wait_for_function("() => document.getElementById('rec-time').textContent >= '00:02'", timeout=6000)
    assert pg.evaluate("document.activeElement.id") == "rec-stop"
    pg.locator("#task-smile").screenshot(path=str(artifacts_dir / "webform-recording.png"))
    pg.keyboard.press("Enter")
    pg.wait_for_function("() => document.getElementById('chosen-smile').textContent.includes('Recorded')")
    # Stopping by keyboard keeps the focus in the recorder, on the button that records again.
    pg.wait_for_function("() => document.activeElement.id === 'rec-start'")
    assert pg.inner_text("#rec-start") == "Record again" and pg.is_enabled("#rec-start")
    chosen = pg.inner_text("#chosen-smile")
    ext = "mp4" if "mp4" in chosen_type else "webm"
    assert f"smile-recording.{ext}" in chosen and "Recorded 00:0" in chosen
    pg.keyboard.press("Escape")
    assert pg.is_hidden("#recorder")
    assert pg.evaluate("document.activeElement.className") == "record"  # focus returns to its button


def test_a_models_refresh_landing_after_the_camera_opened_leaves_the_recorder_open(page, stack):
    """The list of served models comes back after sign-in; on a busy server it can land after the
    clinician has already opened the camera. It must not close the camera nor touch its buttons."""
    pg = page
    key = stack.create_key("clinic-late-models")
    held: list = []
    signed_in = {"done": False}

    def hold_after_sign_in(route):
        if signed_in["done"]:
            held.append(route)   # answered below, once the camera is open
        else:
            route.continue_()

    pg.route("**/v1/models", hold_after_sign_in)
    pg.goto("/")
    signed_in["done"] = True
    pg.fill("#api-key", key)
    pg.press("#api-key", "Enter")
    pg.wait_for_selector("#signed-in:not([hidden])")
    for _ in range(100):
        if held:
            break
        pg.wait_for_timeout(50)
    assert held, "the page asks for the served models after sign-in"

    pg.click("#task-smile button.record")
    pg.wait_for_selector("#rec-start:not([disabled])")
    assert pg.is_disabled("#rec-stop")
    held[0].continue_()
    # this stack serves no Toronto task: once the answer is applied, the Toronto choice says so
    pg.wait_for_selector("#served-toronto:not([hidden])")
    assert pg.is_visible("#recorder"), "a late models answer closed the open camera"
    assert pg.is_enabled("#rec-start") and pg.is_disabled("#rec-stop")
    assert pg.evaluate("document.getElementById('preview').srcObject !== null")

    # switching to a protocol whose tasks hide the recorder's task still closes the camera
    pg.evaluate("""() => { const r = document.querySelector('input[name=protocol][value=toronto]');
        r.disabled = false; r.checked = true; r.dispatchEvent(new Event('change')); }""")
    assert pg.is_hidden("#recorder")


def test_anonymous_use_on_loopback_when_the_server_allows_it(browser, stack, tmp_path):
    # Given the key-only stack, the page asks for a key and the API refuses the keyless browser.
    ctx = browser.new_context(base_url=stack.base_url)
    pg = ctx.new_page()
    pg.goto("/")
    assert "Ask your administrator" in pg.inner_text("#api-key-hint")
    assert pg.request.get("/v1/session").json()["authenticated"] is False
    ctx.close()
    # Given `feqa serve` on loopback (the single-machine default: SQLite store and broker, its own worker),
    # the page says that no key is needed, and a video goes through to a score without signing in.
    models = untrained_models(tmp_path / "models", ("smile",))
    with feqa_serve(tmp_path, model_dir=models) as serve:
        ctx = browser.new_context(base_url=serve.base_url)
        pg = ctx.new_page()
        pg.goto("/")
        pg.wait_for_function("() => document.getElementById('api-key-hint').textContent.includes('Not signed in')")
        session = pg.request.get("/v1/session").json()
        assert (session["authenticated"], session["method"], session["anonymous_allowed"]) == (True, "anonymous", True)
        assert pg.is_visible("#sign-in") and pg.is_hidden("#signed-in")
        pg.set_input_files("#file-smile", str(real_video()))
        pg.click("#submit")
        pg.wait_for_selector("#report:not([hidden])", timeout=240_000)
        assert pg.inner_text("#r-status") == "succeeded"
        ctx.close()


def test_page_and_static_files_are_local_and_safe(stack):
    import httpx

    with httpx.Client(base_url=stack.base_url) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        # No CDN: every script, stylesheet and image the page names is served by this server.
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
            assert ref.startswith("/"), f"external reference {ref!r} in the page"
            assert http.get(ref).status_code == 200, ref
        js = http.get("/static/app.js")
        assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert js.headers["x-content-type-options"] == "nosniff"
        # no external address (the SVG namespace name is an identifier, never fetched)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\b)", js.text)
        for bad in ("/static/..%2f..%2fsettings.py", "/static/%2e%2e/templates/index.html", "/static/nope.js"):
            r = http.get(bad)
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", bad
        # The session endpoint validates its body and names the field.
        r = http.post("/v1/session", json={})
        assert r.status_code == 422 and "api_key" in r.text


SAFARI_LIKE = """(() => {  // Safari records MP4 only: refuse every WebM type, as it does
  const supported = MediaRecorder.isTypeSupported.bind(MediaRecorder);
  MediaRecorder.isTypeSupported = (t) => !String(t).startsWith('video/webm') && supported(t);
})();"""


@pytest.mark.parametrize("recorder", ["webm", "mp4"])
def test_a_webcam_recording_is_uploaded_and_decoded_by_the_worker(browser, stack, artifacts_dir, recorder):
    context = browser.new_context(viewport={"width": 1100, "height": 1300}, base_url=stack.base_url)
    if recorder == "mp4":
        context.add_init_script(SAFARI_LIKE)
    pg = context.new_page()
    try:
        sign_in(pg, stack.create_key(f"clinic-rec-{recorder}"))
        pg.click("#task-frown button.record")
        pg.wait_for_selector("#rec-start:not([disabled])")
        pg.click("#rec-start")
        pg.wait_for_selector("#rec-stop:not([disabled])", timeout=15_000)   # a 3-s countdown, then the recorder starts
        pg.wait_for_function("() => document.getElementById('rec-time').textContent >= '00:02'", timeout=6000)
        pg.click("#rec-stop")
        pg.wait_for_function("() => document.getElementById('chosen-frown').textContent.includes('Recorded')")
        assert f"frown-recording.{recorder}" in pg.inner_text("#chosen-frown")
        pg.click("#rec-cancel")
        pg.click("#submit")
        pg.wait_for_selector("#report:not([hidden])", timeout=240_000)
        card = pg.locator("#results article[data-expression=frown]").inner_text()
        # The synthetic camera shows no face: the worker must have decoded the file to find that out.
        assert re.search(r"\((no_face|face_too_rare)\)", card) or "Video quality" in card, card
        assert "not_a_video" not in card and "unsupported_codec" not in card
        pg.locator("#report").screenshot(path=str(artifacts_dir / f"webform-recorded-{recorder}.png"))
    finally:
        context.close()
