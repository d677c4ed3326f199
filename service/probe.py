"""Is this file a video we can decode, and how long is it? Asked before anything is queued.

`worker.video.probe` (PyAV only: the API process never loads OpenCV or onnxruntime) runs in a short-lived
child process, forked from a small preloaded server (multiprocessing "forkserver"), with an address-space
limit (`PROBE_MEMORY_BYTES` above what the child starts with) and a wall-clock timeout. Whatever a hostile
file makes FFmpeg allocate or loop over while it opens it and decodes its first picture, the API process
itself does not grow or stall; and at most `PROBE_CONCURRENCY` probes run at once, so concurrent crafted
uploads cannot add up. The MP4 sample-index check (`worker.mp4index`) refuses index bombs before FFmpeg
is even called.
"""
from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from model.errors import VideoError

PROBE_MEMORY_BYTES = 768 * 1024 * 1024   # address space a probe may add to its starting size
PROBE_TIMEOUT_S = 20.0
PROBE_CONCURRENCY = 2

_slots = threading.BoundedSemaphore(PROBE_CONCURRENCY)
_ctx_lock = threading.Lock()
_ctx: Any = None


def _context() -> Any:
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["service.probe", "worker.video", "av"])
            _ctx = ctx
        return _ctx


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(conn: Any, path: str, limits: dict, memory_bytes: int) -> None:
    """In the probe process: limit the address space, probe, send the answer back."""
    import resource

    if memory_bytes:
        cap = _vm_size() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from worker.video import DecodeLimits
    from worker.video import probe as worker_probe

    try:
        facts = worker_probe(path, DecodeLimits(**limits))
        conn.send(("ok", facts))
    except VideoError as exc:
        conn.send(("error", exc.code, exc.message, exc.details))
    except MemoryError:
        conn.send(("error", "video_too_large", "reading the file needs more memory than a video within the "
                   "limits can", {}))
    except Exception as exc:   # PyAV raises many kinds for garbage input
        conn.send(("error", "not_a_video", f"the file is not a video we can read ({type(exc).__name__})", {}))
    finally:
        conn.close()


def probe_isolated(path: Path, limits: dict, *, memory_bytes: int = PROBE_MEMORY_BYTES,
                   timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    ctx = _context()
    with _slots:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(child, str(path), limits, memory_bytes), daemon=True)
        proc.start()
        child.close()
        try:
            answer = parent.recv() if parent.poll(timeout_s) else None
        except EOFError:        # the child died without answering (killed by the memory limit, a crash)
            answer = ()
        finally:
            parent.close()
            if answer is None:
                proc.kill()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(1)
    if answer is None:
        raise VideoError("reading the file took too long; it is not a video we can read", code="not_a_video",
                         details={"timeout_s": timeout_s})
    if not answer:
        raise VideoError("the file could not be read within the memory limit", code="video_too_large")
    if answer[0] == "ok":
        return answer[1]
    _, code, message, details = answer
    raise VideoError(message, code=code, details=details or None)


def probe_upload(path: Path, *, max_duration_s: float, max_bytes: int, isolated: bool = True,
          memory_bytes: int = PROBE_MEMORY_BYTES, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Facts about the video (at least duration_s); raises VideoError with a stable code."""
    limits: dict[str, Any] = {"max_duration_s": max_duration_s, "max_file_bytes": max_bytes}
    if isolated:
        return probe_isolated(path, limits, memory_bytes=memory_bytes, timeout_s=timeout_s)
    from worker.video import DecodeLimits
    from worker.video import probe as worker_probe

    return worker_probe(path, DecodeLimits(**limits))
