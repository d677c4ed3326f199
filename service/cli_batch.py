"""`feqa batch`: score (or rescore) a folder of videos or a CSV manifest through a running FEQA API.

Inputs
  * a folder: every file below it gets a row, in path order (hidden files and the output file aside).
    Videos (.mp4 .mov .m4v .webm .mkv .avi .flv .3gp .mpg .mpeg .ogv) are sent; any other file gets
    the row status `skipped`, error_code `unsupported_file`. The expression comes from
      - the file name `<patient>_<expression>.<ext>`, e.g. `P0042_smile.mp4`, `P0042_sit_at_rest.mov`
        (patient reference = the part before the expression), or
      - a sub-folder named after the expression: `smile/P0042.mp4` (patient reference = file stem), or
      - a file named after the expression in a per-patient folder: `P0042/smile.mp4`.
    Files whose expression cannot be recognised are reported as failed rows (`error_code`
    `expression_not_recognised`) and are not uploaded.
  * a CSV manifest with a header: `video` (or `path`), `expression`, optional `patient_ref`; rows in
    the manifest's order. Relative video paths are relative to the manifest's folder.

Output: one row per input, in input order, CSV or JSONL; numbers stay numbers and true/false stay
booleans when a re-run reads the file back. Every row that has a model names its version.

One assessment is submitted per video, at most `--concurrency` at a time, with the header
`Idempotency-Key = sha256(video sha256 + expression + model version from GET /v1/models + patient
reference + protocol)`: a re-run re-uses the jobs the server already has, and the same file listed for
two patients is two assessments. Rows already in `--out` that succeeded with the current model
version are skipped altogether; `--rescore` scores everything again with the current model version.
Requests are retried with exponential backoff on 429, 5xx and connection errors. `--dry-run` lists
what would be sent (and what is skipped, and why) without sending anything.

Ctrl-C stops within a second or two: the rows done so far are written (the rest as `interrupted`),
a summary is printed, and running the same command again resumes.

Exit status: 0 when every video succeeded (skipped files aside), 1 when some failed, 2 on a usage or
connection error, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from model.messages import explain, message, reasons_text

HELP = "Score a folder of videos or a CSV manifest through the API (bounded concurrency, idempotent)."

# What the service decodes (PyAV/FFmpeg containers); the web form offers the same list.
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".flv", ".3gp", ".mpg", ".mpeg", ".ogv"}
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
UNSUPPORTED_FILE, NOT_RECOGNISED, INTERRUPTED = "unsupported_file", "expression_not_recognised", "interrupted"


# -- the output columns ---------------------------------------------------------------------------
def _result(item: dict) -> dict:
    return item.get("result") or {}


def _model(item: dict) -> dict:
    return _result(item).get("model") or {}


def _quality(item: dict) -> dict:
    return _result(item).get("quality") or {}


def _reasons(item: dict) -> list[str] | None:
    return _quality(item).get("reasons") or _result(item).get("reasons")


# the face regions of worker.measures.REGIONS (spelled out: this client tool does not import the worker)
MEASURE_REGIONS = ("brows", "eyes", "nose", "upper_lip", "lower_lip", "mouth_corners")


def _region_measure(region: str, name: str) -> Callable[[dict], Any]:
    return lambda it: (((_result(it).get("measures") or {}).get("regions") or {}).get(region) or {}).get(name)


def _rest_measure(name: str) -> Callable[[dict], Any]:
    return lambda it: (((_result(it).get("measures") or {}).get("rest")) or {}).get(name)


@dataclass(frozen=True)
class Column:
    """One output column: its type (kept through CSV and JSONL re-runs) and where a finished item has it.

    To add a column, append one here: `get(item)` reads it from the item of GET /v1/assessments/{id}
    (None: keep what the row already has)."""
    name: str
    kind: type = str               # str, float, int, bool or list
    get: Callable[[dict], Any] | None = None


COLUMNS: list[Column] = [
    Column("video"), Column("expression"), Column("patient_ref"), Column("assessment_id"), Column("status"),
    Column("score", float, lambda it: _result(it).get("score")),
    Column("score_rounded", int, lambda it: _result(it).get("score_rounded")),
    Column("meaning", str, lambda it: _result(it).get("meaning")),
    Column("abstained", bool, lambda it: _result(it).get("abstained")),
    Column("model_name", str, lambda it: _model(it).get("name")),
    Column("model_version", str, lambda it: _model(it).get("version")),
    Column("trained_on", str, lambda it: _model(it).get("trained_on")),
    Column("clinical_use", bool, lambda it: _model(it).get("clinical_use")),
    Column("quality_scorable", bool, lambda it: _quality(it).get("scorable")),
    Column("quality_reasons", list, _reasons),
    Column("reasons_text", str, lambda it: reasons_text(_reasons(it)) or None),
    Column("error_code", str, lambda it: (it.get("error") or {}).get("code")),
    Column("error_message", str, lambda it: (it.get("error") or {}).get("message")),
    # whole-recording fields (issue 12): scale, repetitions, findings and the computed measures
    Column("scale", str, lambda it: (_result(it).get("scale") or {}).get("name")),
    Column("aggregation_rule", str, lambda it: (_result(it).get("aggregation") or {}).get("rule")),
    Column("score_spread", float, lambda it: (_result(it).get("aggregation") or {}).get("spread")),
    Column("n_repetitions", int, lambda it: len(_result(it).get("repetitions") or []) if _result(it) else None),
    Column("repetition_scores", list, lambda it: [r.get("score") for r in _result(it).get("repetitions") or []]
           if _result(it) else None),
    Column("findings", list, lambda it: _result(it).get("findings")),
    *[Column(f"{m}_{region}", float, _region_measure(region, m))
      for region in MEASURE_REGIONS for m in ("rom_iod", "asymmetry")],
    Column("fatigue", float, lambda it: (_result(it).get("measures") or {}).get("fatigue")),
    Column("variability", float, lambda it: (_result(it).get("measures") or {}).get("variability")),
    *[Column(name, float, _rest_measure(name))
      for name in ("blink_rate_per_min", "spontaneous_movement_iod", "lips_apart_share", "tremor_power_iod2")],
]
FIELDS = [c.name for c in COLUMNS]
KINDS = {c.name: c.kind for c in COLUMNS}


def typed(name: str, value: Any) -> Any:
    """A cell read back from CSV (or from an older JSONL that wrote strings) as its column's type."""
    kind = KINDS.get(name, str)
    if kind is str or value is None:
        return value
    if not isinstance(value, str):
        return value   # JSONL kept the type
    text = value.strip()
    if text == "":
        return [] if kind is list else None
    if kind is list:
        return [v for v in text.split("; ") if v]
    try:
        if kind is bool:
            return {"true": True, "false": False}.get(text.lower(), value)
        return int(float(text)) if kind is int else float(text)
    except ValueError:
        return value


def cell(value: Any) -> str:
    """A value as a CSV cell (read back by `typed`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


# -- finding the inputs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    video: Path
    expression: str | None
    patient_ref: str | None

    @property
    def problem(self) -> str | None:
        """Why this input is not sent at all (a local error code), or None."""
        if self.video.suffix.lower() not in VIDEO_SUFFIXES:
            return UNSUPPORTED_FILE
        return NOT_RECOGNISED if self.expression is None else None


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
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent, send nothing")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one video (default 1800)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (default 1)")
    parser.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/connection errors (default 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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


def jobs_from_folder(root: Path, expressions: tuple[str, ...], exclude: Iterable[Path] = ()) -> list[Job]:
    """Every file below `root` (hidden ones and `exclude` aside), in path order."""
    skip = {Path(p).resolve() for p in exclude}
    jobs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.resolve() in skip:
            continue
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


def collect_jobs(args: argparse.Namespace) -> list[Job]:
    """The inputs in order; with --protocol, videos of the other protocol's expressions are left out."""
    src = Path(args.input)
    expressions = _expressions(None)
    if src.is_dir():
        jobs = jobs_from_folder(src, expressions, exclude=[args.out])
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


# -- the output file ------------------------------------------------------------------------------
def output_format(out: Path, fmt: str | None) -> str:
    return fmt or ("jsonl" if out.suffix.lower() in {".jsonl", ".ndjson"} else "csv")


def read_rows(out: Path, fmt: str) -> list[dict[str, Any]]:
    """The rows of an earlier run, each value as its column's type."""
    if not out.exists() or out.stat().st_size == 0:
        return []
    with open(out, newline="", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()] if fmt == "jsonl" else list(csv.DictReader(f))
    return [{k: typed(k, v) for k, v in r.items()} for r in raw if isinstance(r, dict)]


class RowWriter:
    """Rows in input order. `put(i, row)` appends every row whose predecessors are all done (a crash keeps
    them); `finish(rows)` rewrites the whole file, in order, atomically."""

    def __init__(self, out: Path, fmt: str, n: int = 0) -> None:
        self._out, self._fmt = out, fmt
        self._rows: list[dict[str, Any] | None] = [None] * n
        self._next = 0
        self._f = open(out, "w", newline="", encoding="utf-8")
        self._begin(self._f)

    def _begin(self, f: TextIO) -> None:
        if self._fmt == "csv":
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()

    def _line(self, f: TextIO, row: dict[str, Any]) -> None:
        if self._fmt == "csv":
            csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore").writerow({k: cell(row.get(k)) for k in FIELDS})
        else:
            f.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")

    def write(self, row: dict[str, Any]) -> None:
        """Append one row now (order is the caller's)."""
        self._rows.append(row)
        self._next = len(self._rows)
        self._line(self._f, row)
        self._f.flush()

    def put(self, index: int, row: dict[str, Any]) -> None:
        self._rows[index] = row
        while self._next < len(self._rows) and self._rows[self._next] is not None:
            self._line(self._f, self._rows[self._next])  # type: ignore[arg-type]
            self._next += 1
        self._f.flush()

    def finish(self, rows: list[dict[str, Any]]) -> None:
        self._f.close()
        tmp = self._out.with_name(self._out.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            self._begin(f)
            for row in rows:
                self._line(f, row)
        os.replace(tmp, self._out)

    def close(self) -> None:
        self._f.close()


# -- one input ------------------------------------------------------------------------------------
class Interrupted(Exception):
    """Ctrl-C: stop polling and sending."""


def base_row(job: Job, model: dict[str, str] | None = None) -> dict[str, Any]:
    model = model or {}
    return {"video": str(job.video), "expression": job.expression or "", "patient_ref": job.patient_ref or "",
            "model_name": model.get("name"), "model_version": model.get("version")}


def failed(row: dict[str, Any], code: str, specific: str | None = None, status: str = "failed",
           explained: str | None = None) -> dict[str, Any]:
    """A row with an error: `explained` is the server's text (it already says what to do), else the
    specific facts followed by what to do (model.messages)."""
    return {**row, "status": status, "error_code": code, "error_message": explained or explain(code, specific)}


def local_row(job: Job, served: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The row of an input that is not sent (unsupported file, unrecognised expression, no model)."""
    row = base_row(job, served.get(job.expression or ""))
    if job.problem == UNSUPPORTED_FILE:
        return failed(row, UNSUPPORTED_FILE, f"{job.video.suffix or 'a file without extension'} is not a video "
                      "type the service accepts", status="skipped")
    if job.problem == NOT_RECOGNISED:
        return failed(row, NOT_RECOGNISED, "no expression in the file name, folder or manifest")
    offered = ", ".join(sorted(served)) or "none"
    return failed(row, "model_unavailable", f"no model is loaded for {job.expression!r}; served: {offered}")


def row_from_item(row: dict[str, Any], job_doc: dict[str, Any]) -> dict[str, Any]:
    item = (job_doc.get("items") or [{}])[0]
    row = {**row, "assessment_id": job_doc.get("id", row.get("assessment_id", "")),
           "status": item.get("status") or job_doc.get("status", "")}
    for col in COLUMNS:
        if col.get is not None:
            value = col.get(item)
            if value is not None:
                row[col.name] = value
    return row


def process(client: Any, job: Job, served: dict[str, dict[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    from service.client import ApiError, ConnectionFailed, file_sha256, idempotency_key

    if job.problem or job.expression not in served:
        return local_row(job, served)
    row = base_row(job, served[job.expression])
    if not job.video.is_file():
        return failed(row, "file_not_found", "no such file")
    version = str(row.get("model_version") or "")
    try:
        key = idempotency_key(file_sha256(job.video), job.expression, version, job.patient_ref or "",
                              args.protocol or "")
        if args.rescore:  # a fresh job even where the server still holds one for this key
            key = idempotency_key(key, "rescore", str(os.getpid()))
        created = client.submit([(job.video, job.expression)], patient_ref=job.patient_ref,
                                protocol=args.protocol, idempotency_key=key)
        row["assessment_id"] = created.get("id", "")
        done = client.wait(created["id"], timeout=args.timeout, poll=args.poll)
        return row_from_item(row, done)
    except ApiError as exc:
        return failed(row, exc.code, explained=exc.detail or explain(exc.code, exc.title))
    except ConnectionFailed as exc:
        return failed(row, "connection_failed", str(exc))
    except TimeoutError as exc:
        return failed(row, "timeout", str(exc))


def interrupted_row(job: Job, previous: dict[str, Any] | None, served: dict[str, dict[str, str]]) -> dict[str, Any]:
    row = {**(previous or {}), **base_row(job, served.get(job.expression or ""))}
    return failed(row, INTERRUPTED, "stopped before this video was done", status=INTERRUPTED)


# -- the command ----------------------------------------------------------------------------------
def is_done(previous: dict[str, Any] | None, versions: dict[str, str]) -> bool:
    if not previous or previous.get("status") != "succeeded":
        return False
    return bool(previous.get("model_version")) and str(previous.get("model_version")) == versions.get(
        previous.get("expression") or "")


def read_served(client: Any) -> dict[str, dict[str, str]]:
    """expression -> {"name", "version"} of the model serving it, from GET /v1/models."""
    out: dict[str, dict[str, str]] = {}
    for m in client.models():
        if m.get("expression"):
            out[str(m["expression"])] = {"name": str(m.get("name", "")), "version": str(m.get("version", ""))}
    return out


def run(args: argparse.Namespace) -> int:
    from service.client import ApiError, ConnectionFailed, FeqaClient

    try:
        jobs = collect_jobs(args)
    except (ValueError, OSError) as exc:
        print(f"feqa batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not jobs:
        print(f"feqa batch: no files found in {args.input}", file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1:
        print("feqa batch: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    fmt = output_format(out, args.format)
    stop = threading.Event()

    def sleep(seconds: float) -> None:   # the client's polls and back-offs end at once on Ctrl-C
        if stop.wait(seconds):
            raise Interrupted()

    client = FeqaClient(args.api, args.api_key, retries=args.retries, sleep=sleep)
    try:
        served = read_served(client)
    except (ApiError, ConnectionFailed) as exc:
        print(f"feqa batch: cannot read the models from {args.api}: {exc}", file=sys.stderr)
        if args.dry_run:   # still list the inputs; what is served is unknown
            dry_run(jobs, None, out, fmt, args)
        client.close()
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("feqa batch: interrupted before anything was sent", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.dry_run:
        client.close()
        return dry_run(jobs, served, out, fmt, args)
    try:
        rows, interrupted = _run_jobs(client, jobs, served, out, fmt, args, stop)
    except KeyboardInterrupt:   # in the instant before the work started: the output file is untouched
        print("feqa batch: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not interrupted:
        client.close()   # else a thread may still be inside a request: leave it to the process exit
    return summarise(rows, out, interrupted)


def plan(jobs: list[Job], served: dict[str, dict[str, str]] | None, out: Path, fmt: str,
         args: argparse.Namespace) -> tuple[list[dict[str, Any] | None], list[int], dict[tuple, dict]]:
    """(rows already known: kept from the output file or not sendable, indexes to send, previous rows).
    `served` None: not known (the API did not answer a dry run), so no video is held back for it."""
    previous = {(r.get("video"), r.get("expression") or ""): r for r in read_rows(out, fmt)}
    versions = {e: m["version"] for e, m in (served or {}).items()}
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        prev = previous.get((str(job.video), job.expression or ""))
        if not args.rescore and is_done(prev, versions):
            rows[i] = {**prev, "_kept": True}   # type: ignore[dict-item]
        elif job.problem or (served is not None and job.expression not in served):
            rows[i] = local_row(job, served or {})
        else:
            todo.append(i)
    return rows, todo, previous


def dry_run(jobs: list[Job], served: dict[str, dict[str, str]] | None, out: Path, fmt: str,
            args: argparse.Namespace) -> int:
    rows, todo, _ = plan(jobs, served, out, fmt, args)
    for i, job in enumerate(jobs):
        row = rows[i]
        action = "send" if row is None else "done" if row.get("_kept") else row.get("error_code")
        model = (served or {}).get(job.expression or "", {})
        print("\t".join([str(action), str(job.video), job.expression or "-", job.patient_ref or "-",
                         model.get("version") or "-"]))
    print(f"feqa batch --dry-run: {len(todo)} would be sent, {sum(bool(r and r.get('_kept')) for r in rows)} "
          f"already done, {sum(bool(r and not r.get('_kept')) for r in rows)} not sendable; nothing was sent",
          file=sys.stderr)
    return EXIT_OK if served else EXIT_USAGE


def _run_jobs(client: Any, jobs: list[Job], served: dict[str, dict[str, str]], out: Path, fmt: str,
              args: argparse.Namespace, stop: threading.Event) -> tuple[list[dict[str, Any]], bool]:
    """Score the inputs with daemon threads (so Ctrl-C never waits for a request in flight); rows in order."""
    from tqdm import tqdm

    rows, todo, previous = plan(jobs, served, out, fmt, args)
    n_kept = sum(bool(r and r.get("_kept")) for r in rows)
    if n_kept:
        print(f"feqa batch: skipping {n_kept} video(s) already scored with the current model version",
              file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = RowWriter(out, fmt, len(jobs))
    for i, row in enumerate(rows):
        if row is not None:
            writer.put(i, row)
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in todo:
        work.put(i)
    results: queue.SimpleQueue[tuple[int, dict[str, Any]]] = queue.SimpleQueue()

    def worker() -> None:
        while not stop.is_set():
            try:
                i = work.get_nowait()
            except queue.Empty:
                return
            try:
                row = process(client, jobs[i], served, args)
            except Interrupted:
                return
            except Exception as exc:   # a bug must cost one row, not the run
                row = failed(base_row(jobs[i]), "internal_error", f"the batch tool failed ({type(exc).__name__})")
            results.put((i, row))

    for _ in range(min(args.concurrency, len(todo))):
        threading.Thread(target=worker, name="feqa-batch", daemon=True).start()
    bar = tqdm(total=len(todo), unit="video", file=sys.stderr, disable=args.no_progress, desc="scoring")
    done, interrupted = 0, False
    try:
        while done < len(todo):
            try:
                i, row = results.get(timeout=0.2)
            except queue.Empty:
                continue
            rows[i] = row
            writer.put(i, row)
            done += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
    finally:
        with _no_sigint():
            bar.close()
            while not results.empty():
                i, row = results.get_nowait()
                rows[i] = row
            final = [r if r is not None else interrupted_row(jobs[i], previous.get((str(jobs[i].video),
                                                                                     jobs[i].expression or "")),
                                                             served)
                     for i, r in enumerate(rows)]
            writer.finish([{k: v for k, v in r.items() if k != "_kept"} for r in final])
    return final, interrupted


class _no_sigint:
    """A second Ctrl-C while the rows are written must not leave a half-written file."""

    def __enter__(self) -> None:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def summarise(rows: list[dict[str, Any]], out: Path, interrupted: bool = False) -> int:
    counts = Counter(r.get("status") for r in rows)
    kept = sum(bool(r.get("_kept")) for r in rows)
    n_failed = len(rows) - counts["succeeded"] - counts["skipped"]
    print(f"feqa batch: {counts['succeeded']} succeeded ({kept} from earlier runs), {n_failed} failed or not done, "
          f"{counts['skipped']} skipped; wrote {out}", file=sys.stderr)
    for code, n in sorted(Counter(r.get("error_code") for r in rows if r.get("error_code")).items()):
        print(f"feqa batch:   {code}: {n} - {message(code)['title']}", file=sys.stderr)
    if interrupted:
        print("feqa batch: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if n_failed else EXIT_OK
