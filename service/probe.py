"""Is this file a video we can decode, and how long is it? Asked before anything is queued.

Uses `worker.video.probe` (the extraction engineer's, PyAV only: the API process must not load
OpenCV or onnxruntime). Until that exists a minimal PyAV probe stands in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from model.errors import VideoError


def _fallback_probe(path: Path) -> dict[str, Any]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("the file holds no video stream", code="not_a_video")
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise VideoError("the video has no decodable frame", code="not_a_video")
            return {"duration_s": duration, "width": frame.width, "height": frame.height,
                    "codec": stream.codec_context.name}
    except VideoError:
        raise
    except Exception as exc:   # PyAV raises many kinds for garbage input
        raise VideoError("the file is not a video we can read (MP4, MOV or WebM expected)",
                         code="not_a_video") from exc


def probe(path: Path, *, max_duration_s: float, max_bytes: int) -> dict[str, Any]:
    """Facts about the video (at least duration_s); raises VideoError with a stable code."""
    try:
        from worker.video import DecodeLimits
        from worker.video import probe as worker_probe
    except ImportError:
        return _fallback_probe(path)
    facts = worker_probe(path, DecodeLimits(max_duration_s=max_duration_s, max_file_bytes=max_bytes))
    if not isinstance(facts, dict):
        facts = {k: getattr(facts, k) for k in dir(facts) if not k.startswith("_")
                 and not callable(getattr(facts, k))}
    return facts
