"""Refresh the screenshots in docs/img/: real Chromium, real face videos through the real pipeline and the
demo models (models/demo, trained on simulated data), the real API, worker and job store.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--out docs/img]

Three visits of one patient reference are scored (the five PFED5 tasks, then two shorter visits), so that the
history view has something to show; the script then sets the first two visits' dates back by 8 and 4 weeks
in the job store (the scores are the real ones; only the dates are staged, so that the plot spreads out). Needs /usr/bin/chromium and pdftoppm (poppler-utils) for the printed page.
Takes a few minutes on two cores.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import feqa_stack  # noqa: E402
from tests.conftest import VIDEOS  # noqa: E402

VISITS = [
    {"sit_at_rest": "tfjs-models_facemesh_input.mp4", "smile": "pyfeat_single_face.mp4",
     "frown": "liveportrait_d6.mp4", "squeeze_eyes": "liveportrait_d13.mp4",
     "clench_teeth": "pyfeat_WolfgangLanger_Pexels.mp4"},
    {"smile": "pyfeat_WolfgangLanger_Pexels.mp4", "frown": "liveportrait_d13.mp4"},
    {"smile": "liveportrait_d6.mp4", "frown": "face_recognition_short_hamilton_clip.mp4"},
]
PATIENT = "STUDY-0042"


def wait_report(pg) -> None:
    pg.wait_for_selector("#report:not([hidden])", timeout=600_000)
    pg.wait_for_function("() => !document.querySelector('.pictures-pending') && "
                         "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)",
                         timeout=300_000)


def stage_dates(store, ids: list[str], weeks: tuple[int, ...]) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from worker.jobs.db import Assessment

    with store.session() as s:
        for aid, w in zip(ids, weeks, strict=True):
            s.execute(update(Assessment).where(Assessment.id == aid).values(
                created_at=datetime.now(UTC) - timedelta(weeks=w)))


def submit_visit(pg, visit: dict) -> None:
    pg.click("#nav-new")
    pg.fill("#patient-ref", PATIENT)
    for expression, name in visit.items():
        pg.set_input_files(f"#file-{expression}", str(VIDEOS / name))
    pg.click("#submit")
    wait_report(pg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, feqa_stack(Path(tmp), model_dir=ROOT / "models" / "demo",
                                                         broker="sqlite") as stack, sync_playwright() as p:
        key = stack.create_key("demo-clinic")
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(viewport={"width": 1100, "height": 900}, base_url=stack.base_url)
        pg = ctx.new_page()
        pg.goto("/")
        pg.fill("#api-key", key)
        pg.press("#api-key", "Enter")
        pg.wait_for_selector("#signed-in:not([hidden])")
        pg.wait_for_selector("#task-blow.unserved", state="attached")   # the demo models: PFED5 only
        pg.fill("#patient-ref", PATIENT)
        for expression, name in VISITS[0].items():
            pg.set_input_files(f"#file-{expression}", str(VIDEOS / name))
        pg.screenshot(path=str(out / "webform.png"), full_page=True)
        pg.click("#submit")
        wait_report(pg)
        pg.locator("#report").screenshot(path=str(out / "webform-report.png"))
        pg.locator("#results article[data-expression=smile]").screenshot(path=str(out / "webform-card.png"))
        pg.locator("#results article[data-expression=smile] .pic-overlay button").click()
        pg.wait_for_selector("#zoom[open]")
        pg.wait_for_timeout(300)
        pg.screenshot(path=str(out / "webform-zoom.png"))
        pg.keyboard.press("Escape")
        pg.emulate_media(media="print")
        pdf = out / "webform-print.pdf"
        pdf.write_bytes(pg.pdf(format="A4"))
        pg.emulate_media(media="screen")
        if shutil.which("pdftoppm"):
            subprocess.run(["pdftoppm", "-r", "90", "-png", "-singlefile", str(pdf), str(out / "webform-print")],
                           check=True)
        pdf.unlink()
        pg.set_viewport_size({"width": 393, "height": 850})
        pg.locator("#results article[data-expression=smile]").evaluate("e => e.scrollIntoView()")
        pg.screenshot(path=str(out / "webform-phone.png"))
        pg.set_viewport_size({"width": 1100, "height": 900})
        ids = [pg.evaluate("location.hash.split('=')[1]")]
        for visit in VISITS[1:]:
            submit_visit(pg, visit)
            ids.append(pg.evaluate("location.hash.split('=')[1]"))
        stage_dates(stack.store(), ids[:2], weeks=(8, 4))
        pg.click("#report-history")
        pg.wait_for_selector(".history-task")
        pg.locator("#history").screenshot(path=str(out / "webform-history.png"))
        browser.close()
    for f in sorted(out.glob("webform*.png")):
        print(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
