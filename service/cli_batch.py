"""`feqa batch`: score (or rescore) a folder of videos or a CSV manifest through a running FEQA API.

Inputs
  * a folder: every video file below it (.mp4 .mov .m4v .webm .mkv .avi). The expression comes from
      - the file name `<patient>_<expression>.<ext>`, e.g. `P0042_smile.mp4`, `P0042_sit_at_rest.mov`
        (patient reference = the part before the expression), or
      - a sub-folder named after the expression: `smile/P0042.mp4` (patient reference = file stem), or
      - a file named after the expression in a per-patient folder: `P0042/smile.mp4`.
    Files whose expression cannot be recognised are reported as failed rows (`error_code`
    `expression_not_recognised`) and are not uploaded.
  * a CSV manifest with a header: `video` (or `path`), `expression`, optional `patient_ref`.
    Relative video paths are relative to the manifest's folder.

One assessment is submitted per video, at most `--concurrency` at a time, with the header
`Idempotency-Key = sha256(video sha256 + expression + model version from GET /v1/models)`: a re-run
re-uses the jobs the server already has. Rows already in `--out` that succeeded with the current model
version are skipped altogether; `--rescore` scores everything again with the current model version.
Requests are retried with exponential backoff on 429, 5xx and connection errors.

Exit status: 0 when every video succeeded, 1 when some failed, 2 on a usage or connection error.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "Score a folder of videos or a CSV manifest through the API (bounded concurrency, idempotent)."

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
FIELDS = ["video", "expression", "patient_ref", "assessment_id", "status", "score", "score_rounded", "meaning",
          "abstained", "model_name", "model_version", "trained_on", "clinical_use", "quality_scorable",
          "quality_reasons", "error_code", "error_message"]
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Job:
    video: Path
    expression: str | None
    patient_ref: str | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 2)[2]  # the naming conventions, idempotency and exit status
    parser.add_argument("input", metavar="INPUT", help="folder of videos, or a CSV manifest (video,expression,patient_ref)")
    parser.add_argument("--api", default=os.environ.get("FEQA_API", "http://127.0.0.1:8000"),
                        help="API base URL (default $FEQA_API or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=os.environ.get("FEQA_API_KEY"),
                        help="API key (default $FEQA_API_KEY; prefer the variable: arguments show in `ps`)")
    parser.add_argument("--out", required=True, help="output file (CSV or JSONL); existing rows are reused")
    parser.add_argument("--format", choices=["csv", "jsonl"], default=None,
                        help="output format (default: from the --out suffix, else csv)")
    parser.add_argument("--concurrency", type=int, default=4, help="videos in flight at once (default 4)")
    parser.add_argument("--protocol", choices=["pfed5", "toronto"], default=None,
                        help="only videos of this protocol's expressions; sent to the API")
    parser.add_argument("--rescore", action="store_true",
                        help="score every video again with the current model version, even if done")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one video (default 1800)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (default 1)")
    parser.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/connection errors (default 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- finding the videos ---------------------------------------------------------------------------
def _expressions(protocol: str | None) -> tuple[str, ...]:
    from model.contract import EXPRESSIONS, PROTOCOLS  # light module: constants and a dataclass

    return PROTOCOLS[protocol] if protocol else EXPRESSIONS


def parse_name(path: Path, root: Path, expressions: Iterable[str]) -> tuple[str | None, str | None]:
    """(expression, patient_ref) from the naming conventions in the module docstring."""
    stem, parent = path.stem, path.parent
    by_length = sorted(expressions, key=len, reverse=True)  # `sit_at_rest` before any shorter suffix
    if parent != root and parent.name in by_length:
        return parent.name, stem
    for expr in by_length:
        if stem.endswith("_" + expr) and len(stem) > len(expr) + 1:
            return expr, stem[: -len(expr) - 1]
    if stem in by_length:
        return stem, (parent.name if parent != root else None)
    return None, None


def jobs_from_folder(root: Path, expressions: tuple[str, ...]) -> list[Job]:
    jobs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
        expr, patient = parse_name(path, root, expressions)
        jobs.append(Job(path.resolve(), expr, patient))  # absolute: re-runs from another folder match rows
    return jobs


def jobs_from_manifest(manifest: Path, expressions: tuple[str, ...]) -> list[Job]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower() for c in reader.fieldnames or []}
        if not ({"video", "path"} & cols) or "expression" not in cols:
            raise ValueError(f"{manifest}: the manifest needs the columns `video` (or `path`) and `expression`")
        jobs = []
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            video = Path(row.get("video") or row.get("path") or "")
            if not video.is_absolute():
                video = manifest.parent / video
            expr = row.get("expression") or None
            if expr is not None and expr not in expressions:
                expr = None
            jobs.append(Job(video.resolve(), expr, row.get("patient_ref") or None))
    return jobs


# -- the output file ------------------------------------------------------------------------------
def output_format(out: Path, fmt: str | None) -> str:
    return fmt or ("jsonl" if out.suffix.lower() in {".jsonl", ".ndjson"} else "csv")


def read_rows(out: Path, fmt: str) -> list[dict[str, str]]:
    if not out.exists() or out.stat().st_size == 0:
        return []
    with open(out, newline="", encoding="utf-8") as f:
        if fmt == "jsonl":
            return [{k: "" if v is None else str(v) for k, v in json.loads(line).items()} for line in f if line.strip()]
        return list(csv.DictReader(f))


class RowWriter:
    """Writes rows as they finish (a crash keeps what was done); thread-safe."""

    def __init__(self, out: Path, fmt: str, keep: list[dict[str, str]]) -> None:
        self._lock = threading.Lock()
        self._fmt = fmt
        self._f = open(out, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._f, fieldnames=FIELDS, extrasaction="ignore") if fmt == "csv" else None
        if self._csv:
            self._csv.writeheader()
        for row in keep:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._csv:
                self._csv.writerow({k: _cell(row.get(k)) for k in FIELDS})
            else:
                self._f.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


# -- one video ------------------------------------------------------------------------------------
def base_row(job: Job) -> dict[str, Any]:
    return {"video": str(job.video), "expression": job.expression or "", "patient_ref": job.patient_ref or ""}


def row_from_item(row: dict[str, Any], job_doc: dict[str, Any]) -> dict[str, Any]:
    items = job_doc.get("items") or [{}]
    item = items[0]
    result = item.get("result") or {}
    model = result.get("model") or {}
    quality = result.get("quality") or {}
    error = item.get("error") or {}
    row.update({
        "assessment_id": job_doc.get("id", ""),
        "status": item.get("status") or job_doc.get("status", ""),
        "score": result.get("score"),
        "score_rounded": result.get("score_rounded"),
        "meaning": result.get("meaning"),
        "abstained": result.get("abstained"),
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "trained_on": model.get("trained_on"),
        "clinical_use": model.get("clinical_use"),
        "quality_scorable": quality.get("scorable"),
        "quality_reasons": quality.get("reasons") or result.get("reasons"),
        "error_code": error.get("code"),
        "error_message": error.get("message"),
    })
    return row


def process(client: Any, job: Job, versions: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    from service.client import ApiError, ConnectionFailed, file_sha256, idempotency_key

    row = base_row(job)
    if job.expression is None:
        return {**row, "status": "failed", "error_code": "expression_not_recognised",
                "error_message": "no expression in the file name, folder or manifest (see `feqa batch --help`)"}
    if not job.video.is_file():
        return {**row, "status": "failed", "error_code": "file_not_found", "error_message": "no such file"}
    version = versions.get(job.expression, "")
    row["model_version"] = version
    try:
        key = idempotency_key(file_sha256(job.video), job.expression, version)
        if args.rescore:  # a fresh job even where the server still holds one for this key
            key = idempotency_key(key, "rescore", str(os.getpid()))
        created = client.submit([(job.video, job.expression)], patient_ref=job.patient_ref,
                                protocol=args.protocol, idempotency_key=key)
        row["assessment_id"] = created.get("id", "")
        done = client.wait(created["id"], timeout=args.timeout, poll=args.poll)
        return row_from_item(row, done)
    except ApiError as exc:
        return {**row, "status": "failed", "error_code": exc.code, "error_message": exc.detail or exc.title}
    except (ConnectionFailed, TimeoutError) as exc:
        code = "timeout" if isinstance(exc, TimeoutError) else "connection_failed"
        return {**row, "status": "failed", "error_code": code, "error_message": str(exc)}


# -- the command ----------------------------------------------------------------------------------
def collect_jobs(args: argparse.Namespace) -> list[Job]:
    """The videos to score; with --protocol, videos of the other protocol's expressions are left out."""
    src = Path(args.input)
    expressions = _expressions(None)
    if src.is_dir():
        jobs = jobs_from_folder(src, expressions)
    elif src.is_file() and src.suffix.lower() == ".csv":
        jobs = jobs_from_manifest(src, expressions)
    else:
        raise ValueError(f"{src}: not a folder of videos nor a .csv manifest")
    if args.protocol:
        wanted = set(_expressions(args.protocol))
        kept = [j for j in jobs if j.expression is None or j.expression in wanted]
        if len(kept) < len(jobs):
            print(f"feqa batch: leaving out {len(jobs) - len(kept)} video(s) of other protocols", file=sys.stderr)
        jobs = kept
    return jobs


def is_done(previous: dict[str, str] | None, versions: dict[str, str]) -> bool:
    if not previous or previous.get("status") != "succeeded":
        return False
    return bool(previous.get("model_version")) and previous.get("model_version") == versions.get(
        previous.get("expression", ""))


def run(args: argparse.Namespace) -> int:
    from service.client import ApiError, ConnectionFailed, FeqaClient

    try:
        jobs = collect_jobs(args)
    except (ValueError, OSError) as exc:
        print(f"feqa batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not jobs:
        print(f"feqa batch: no videos found in {args.input}", file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1:
        print("feqa batch: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    fmt = output_format(out, args.format)
    client = FeqaClient(args.api, args.api_key, retries=args.retries)
    try:
        versions = client.model_versions()
    except (ApiError, ConnectionFailed) as exc:
        print(f"feqa batch: cannot read the models from {args.api}: {exc}", file=sys.stderr)
        client.close()
        return EXIT_USAGE
    try:
        rows = _run_jobs(client, jobs, versions, out, fmt, args)
    finally:
        client.close()
    return summarise(rows, out)


def _run_jobs(client: Any, jobs: list[Job], versions: dict[str, str], out: Path, fmt: str,
              args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    previous = {(r.get("video"), r.get("expression")): r for r in read_rows(out, fmt)}
    todo, kept = [], []
    for job in jobs:
        prev = previous.get((str(job.video), job.expression or ""))
        (kept if not args.rescore and is_done(prev, versions) else todo).append((job, prev))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = RowWriter(out, fmt, [prev for _, prev in kept])
    rows: list[dict[str, Any]] = [dict(prev) for _, prev in kept]
    if kept:
        print(f"feqa batch: skipping {len(kept)} video(s) already scored with the current model version",
              file=sys.stderr)
    bar = tqdm(total=len(todo), unit="video", file=sys.stderr, disable=args.no_progress, desc="scoring")
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            futures = [pool.submit(process, client, job, versions, args) for job, _ in todo]
            for fut in as_completed(futures):
                row = fut.result()
                writer.write(row)
                rows.append(row)
                bar.update(1)
                bar.set_postfix(failed=sum(r.get("status") != "succeeded" for r in rows), refresh=False)
    finally:
        bar.close()
        writer.close()
    return rows


def summarise(rows: list[dict[str, Any]], out: Path) -> int:
    failed = [r for r in rows if r.get("status") != "succeeded"]
    print(f"feqa batch: {len(rows) - len(failed)} succeeded, {len(failed)} failed; wrote {out}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK
