"""Memory and latency under the crafted-upload and slow-client attacks of issue 14 (docs/security.md).

Starts a real API (`python -m service.api.server`, the deployed server) and one solo Celery worker on
127.0.0.1 with SQLite store and broker under `--work-dir`, then for each attack reads the process's
resident memory from /proc/<pid>/status (the peak VmHWM is reset through /proc/<pid>/clear_refs first):

- API, over its idle RSS (target <= +100 MB): a 1.5 KB MP4 whose index claims 50 million samples; six
  concurrent uploads of an 8192x4096 H.264 clip; 48 MiB of `patient_ref` form fields; a 100 MiB header;
- worker, over its steady state after scoring a real 10.9 s 720p clip (target <= +300 MB): that clip
  again, and a stream whose pictures switch from 64x64 to 8704x8704 after the first frames;
- `/healthz` latency from another client (target <= +100 ms): idle, during the 100 MiB header, and with
  50 slow-header plus 20 stalled-body connections open.

    .venv/bin/python -m bench.security [--work-dir var/bench/security] [--json out.json]

Linux only (/proc). Prints a table and the JSON; sends nothing anywhere but 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.attacks import declared_huge, sample_table_bomb, size_switch_stream

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MB = 1024 * 1024
CLIP = ROOT.parent / "shared" / "videos" / "tfjs-models_facemesh_input.mp4"
TARGETS = {"api_mb_over_idle": 100, "worker_mb_over_steady": 300, "healthz_added_ms": 100}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mem(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def reset_peak(pid: int) -> float:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return mem(pid)["VmRSS"]


def peak_over(pid: int, base: float) -> float:
    return round(mem(pid)["VmHWM"] - base, 1)


class Services:
    def __init__(self, work: Path, models: Path) -> None:
        self.var = work / "var"
        self.var.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FEQA_")
                    and k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update({"FEQA_VAR_DIR": str(self.var), "FEQA_ALLOW_ANONYMOUS": "false", "FEQA_MODEL_DIR": str(models),
                         "FEQA_RATE_LIMIT_PER_MINUTE": "0", "FEQA_HEARTBEAT_INTERVAL_S": "1",
                         "FEQA_QUEUE": f"feqa.bench.{uuid.uuid4().hex[:6]}", "PYTHONPATH": str(ROOT),
                         "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        from worker.jobs.db import migrate
        from worker.jobs.store import Store

        url = f"sqlite:///{self.var / 'feqa.sqlite3'}"
        migrate(url)                      # as `feqa migrate` does before a deployment starts
        self.key = Store(url).create_key("bench")
        logs = self.var / "logs"
        logs.mkdir(exist_ok=True)
        self.api = subprocess.Popen([PYTHON, "-m", "service.api.server", "--host", "127.0.0.1", "--port",
                                     str(self.port), "--log-level", "warning"], env=self.env, cwd=ROOT,
                                    stdout=open(logs / "api.log", "ab"), stderr=subprocess.STDOUT)
        self.worker = subprocess.Popen([PYTHON, "-m", "service.cli", "worker", "--pool", "solo", "--concurrency", "1",
                                        "--name", f"bench-{uuid.uuid4().hex[:4]}@%h"], env=self.env, cwd=ROOT,
                                       stdout=open(logs / "worker.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("API/worker not ready in 180 s; see " + str(logs))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=120)

    def upload(self, http: httpx.Client, path: Path, expression: str = "smile") -> httpx.Response:
        return http.post("/v1/assessments", files={"video": (path.name, path.read_bytes(), "video/mp4")},
                         data={"expression": expression})

    def wait_done(self, http: httpx.Client, aid: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = http.get(f"/v1/assessments/{aid}").json()
            if body["status"] in ("succeeded", "failed", "partly_failed"):
                return body
            time.sleep(0.3)
        raise TimeoutError(aid)

    def stop(self) -> None:
        for p in (self.worker, self.api):
            p.terminate()
        for p in (self.worker, self.api):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def fields_attack(svc: Services) -> str:
    boundary = uuid.uuid4().hex
    field = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"patient_ref\"\r\n\r\n" + "p" * 4000
             + "\r\n").encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", svc.port)) as s:
        s.sendall((f"POST /v1/assessments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.key}\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode())
        s.settimeout(10)
        try:
            while sent < 48 * MB and not select.select([s], [], [], 0)[0]:   # until the server answers
                s.sendall(b"%x\r\n%s\r\n" % (len(field), field))
                sent += len(field)
        except OSError:
            pass
        try:
            answer = s.recv(200).split(b"\r\n")[0].decode()
        except OSError:
            answer = "closed"
    return f"{answer} after {sent / MB:.1f} MiB sent"


def header_attack(port: int) -> str:
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            block = b"a" * (256 * 1024)
            while sent < 100 * MB:
                s.sendall(block)
                sent += len(block)
        except OSError:
            pass
        try:
            answer = s.recv(200).split(b"\r\n")[0].decode() or "closed"
        except OSError:
            answer = "closed"
    return f"{answer} after {sent / MB:.1f} MiB sent"


def healthz_latency(base: str, seconds: float) -> dict:
    lat = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=30) as http:
        while time.monotonic() < deadline:
            t = time.perf_counter()
            http.get("/healthz")
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)
    lat.sort()
    return {"n": len(lat), "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2), "max_ms": round(lat[-1], 2)}


def during(fn, base: str, seconds: float = 4.0) -> tuple[dict, object]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    lat = healthz_latency(base, seconds)
    t.join(120)
    return lat, (result[0] if result else None)


def during_process(port: int, base: str, seconds: float = 4.0) -> tuple[dict, str]:
    """The 100 MiB header sent from its own process (no GIL shared with the latency client)."""
    proc = subprocess.Popen([PYTHON, "-c", f"from bench.security import header_attack; print(header_attack({port}))"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)            # the attacker's interpreter starting
    lat = healthz_latency(base, seconds)
    out, _ = proc.communicate(timeout=120)
    return lat, out.strip()


def slow_clients(svc: Services, hold_s: float) -> str:
    socks = []
    for _ in range(50):           # headers that never finish
        s = socket.create_connection(("127.0.0.1", svc.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    boundary = uuid.uuid4().hex
    for _ in range(20):           # bodies that stall
        s = socket.create_connection(("127.0.0.1", svc.port))
        s.sendall((f"POST /v1/assessments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.key}\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 1000000\r\n\r\n"
                   f"--{boundary}\r\n").encode())
        socks.append(s)
    time.sleep(hold_s)
    closed = 0
    for s in socks:
        s.settimeout(0.1)
        try:
            s.recv(1)          # b"" (closed) or the start of an answer (408): the server acted
            closed += 1
        except (TimeoutError, OSError):
            pass
        s.close()
    return f"{len(socks)} connections held {hold_s:.0f} s; {closed} answered or closed by the server"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="bench.security", description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench" / "security")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    files = work / "files"
    files.mkdir(exist_ok=True)
    models = work / "models"
    if not any(models.glob("smile-*.onnx")):
        from model.export import export_untrained

        export_untrained(models, expressions=["smile"])
    bomb = sample_table_bomb(files / "bomb.mp4")
    huge = files / "huge-8192x4096.mp4"
    if not huge.exists():
        declared_huge(huge, 8192, 1, height=4096)
    switch = files / "switch-8704.mp4"
    if not switch.exists():
        size_switch_stream(switch, 8704)
    out: dict = {"targets": TARGETS, "api": {}, "worker": {}, "healthz": {}}
    svc = Services(work / "run", models)
    try:
        with svc.client() as http:
            for _ in range(3):
                http.get("/healthz")
            # steady state: one real clip scored (the worker's models warm, the API's probe server started)
            r = svc.upload(http, CLIP)
            svc.wait_done(http, r.json()["id"])
            time.sleep(1)
            api_idle, worker_steady = mem(svc.api.pid)["VmRSS"], mem(svc.worker.pid)["VmRSS"]
            out["api"]["idle_rss_mb"], out["worker"]["steady_rss_mb"] = round(api_idle, 1), round(worker_steady, 1)

            base = reset_peak(svc.api.pid)
            r = svc.upload(http, bomb)
            out["api"]["sample_table_bomb"] = {"answer": f"{r.status_code} {r.json().get('code')}",
                                               "file_bytes": bomb.stat().st_size,
                                               "peak_mb_over_idle": peak_over(svc.api.pid, base)}
            base = reset_peak(svc.api.pid)
            codes: list = []
            ts = [threading.Thread(target=lambda: codes.append(svc.upload(svc.client(), huge).status_code))
                  for _ in range(6)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
            out["api"]["six_uploads_8192x4096"] = {"answers": sorted(codes), "file_bytes": huge.stat().st_size,
                                                   "peak_mb_over_idle": peak_over(svc.api.pid, base)}
            base = reset_peak(svc.api.pid)
            out["api"]["form_fields_48mib"] = {"answer": fields_attack(svc),
                                               "peak_mb_over_idle": peak_over(svc.api.pid, base)}

            out["healthz"]["idle"] = healthz_latency(svc.base, 3.0)
            base = reset_peak(svc.api.pid)
            lat, answer = during_process(svc.port, svc.base)
            out["healthz"]["during_100mib_header"] = lat
            out["api"]["header_100mib"] = {"answer": answer, "peak_mb_over_idle": peak_over(svc.api.pid, base)}
            lat, answer = during(lambda: slow_clients(svc, 12.0), svc.base, 12.0)
            out["healthz"]["during_slow_clients"] = lat
            out["api"]["slow_clients"] = {"answer": answer}

            base = reset_peak(svc.worker.pid)
            r = svc.upload(http, CLIP)
            body = svc.wait_done(http, r.json()["id"])
            out["worker"]["real_720p_10.9s"] = {"status": body["status"],
                                                "peak_mb_over_steady": peak_over(svc.worker.pid, base)}
            base = reset_peak(svc.worker.pid)
            r = svc.upload(http, switch)
            if r.status_code == 202:
                body = svc.wait_done(http, r.json()["id"])
                answer = f"{body['status']} {(body['items'][0].get('error') or {}).get('code')}"
            else:
                answer = f"{r.status_code} {r.json().get('code')}"
            out["worker"]["switch_64_to_8704"] = {"answer": answer,
                                                  "peak_mb_over_steady": peak_over(svc.worker.pid, base)}
        idle = out["healthz"]["idle"]
        for k in ("during_100mib_header", "during_slow_clients"):
            out["healthz"][k]["added_p99_ms"] = round(out["healthz"][k]["p99_ms"] - idle["p99_ms"], 2)
    finally:
        svc.stop()
    print(table(out))
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return out


def table(out: dict) -> str:
    rows = [f"{'attack':34s} {'answer':44s} {'peak over base (MB)':>20s}"]
    for name, v in out["api"].items():
        if isinstance(v, dict):
            rows.append(f"API    {name:27s} {str(v.get('answer', v.get('answers'))):44s} "
                        f"{v.get('peak_mb_over_idle', ''):>20}")
    for name, v in out["worker"].items():
        if isinstance(v, dict):
            rows.append(f"worker {name:27s} {str(v.get('answer', v.get('status'))):44s} "
                        f"{v.get('peak_mb_over_steady', ''):>20}")
    for name, v in out["healthz"].items():
        rows.append(f"healthz {name:26s} p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms, max {v['max_ms']} ms"
                    + (f", added p99 {v['added_p99_ms']} ms" if "added_p99_ms" in v else ""))
    return "\n".join(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
