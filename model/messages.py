"""Plain-language messages for every stable code: what happened, and what to do about it.

One table for every place a person reads a code: the API's problem `title` and `detail`, an item's
`error`, FHIR `dataAbsentReason.text`, `feqa batch` output, and the web form (served as
`GET /v1/messages`). The codes themselves stay the machine-readable contract; these words may be
improved at any time. A code added anywhere (model.errors, the quality report, the API, the batch
tool) needs a row here: tests/model/test_messages.py walks them all.

Indices in messages count from 0, as `details.index` and an item's `index` do ("video 0" is the first
video of the upload).
"""
from __future__ import annotations

import re

# code -> (what happened, what to do)
_VIDEO = "Record the task again as an MP4, MOV or WebM video and upload that file."
_REFILM = "Record the task again with the whole face in view, from the front, evenly lit."
_LATER = "Try again in a few minutes; if it keeps happening, tell your IT team."
_IT = "Tell your IT team; they can look it up in the service log."

MESSAGES: dict[str, tuple[str, str]] = {
    # --- input and model errors (model.errors and the extraction) --------------------------------
    "invalid_input": ("The input could not be used.", "Check what was sent and send it again."),
    "not_a_video": ("The file is not a video the service can read.", _VIDEO),
    "unsupported_codec": ("The video is stored in a format the service cannot decode.",
                          "Export or record it again as MP4 (H.264) or WebM and upload that file."),
    "empty_file": ("The file is empty.", "Upload the recording again; the copy may not have finished."),
    "video_too_short": ("The video is too short, or the face is in view for too short a time.",
                        "Record at least 3 seconds with the face in view the whole time."),
    "video_too_long": ("The video is longer than the service accepts.",
                       "Trim the video to the one task (3 to 30 seconds is plenty) and upload it again."),
    "video_too_large": ("The video is too large (file size or picture size).",
                        "Record at a lower resolution (1080p or less) or trim the video, then upload it again."),
    "no_face": ("No face was found in the video.", _REFILM),
    "face_too_rare": ("The face was found in too few frames.", _REFILM),
    "several_faces": ("More than one face is in view, so the patient's face is not certain.",
                      "Record again with only the patient in view."),
    "contract_mismatch": ("The model cannot use the inputs prepared for it.",
                          "This is a model installation problem. " + _IT),
    "unknown_expression": ("The task (expression) named is not one the service knows.",
                           "Use one of the tasks listed by GET /v1/models, e.g. smile or frown."),
    "model_unavailable": ("No model is loaded for this task.",
                          "Choose a task the service offers (GET /v1/models lists them); "
                          "the administrator can install the missing model."),
    "model_checksum_mismatch": ("A model file is damaged or was changed after it was installed.",
                                "The administrator should reinstall the model. " + _IT),
    "internal_error": ("Something went wrong inside the service.", _IT),
    # --- the API ---------------------------------------------------------------------------------
    "unauthorized": ("No API key was sent, or the key is not valid (or was revoked).",
                     "Sign in with the API key your administrator gave you, or ask for a new one."),
    "rate_limited": ("Too many requests were sent with this API key in a short time.",
                     "Wait a moment (the Retry-After header says how long) and try again."),
    "not_found": ("Nothing was found at this address for your API key.",
                  "Check the assessment id; it may have been deleted or may belong to another clinic."),
    "upload_too_large": ("The upload is larger than the service accepts.",
                         "Send a shorter or more compressed video, or fewer videos at once."),
    "invalid_request": ("The request is not in the form the API expects.",
                        "Check the fields against the API documentation (/docs) and send it again."),
    "unsupported_media_type": ("The upload is not sent as a form with video files.",
                               "Send multipart/form-data with 'video' file parts and 'expression' fields."),
    "missing_video": ("No video was sent.", "Add at least one video file and send it again."),
    "expression_mismatch": ("The videos and the tasks do not pair up.",
                            "Send one 'expression' field per video, in the same order as the videos."),
    "unknown_protocol": ("The protocol named is not one the service knows.",
                         "Use pfed5 or toronto, or leave the protocol out."),
    "broker_unavailable": ("The job queue is not reachable, so nothing was kept.",
                           "Send the upload again in a few seconds."),
    "database_unavailable": ("The job store is not reachable.", "Try again in a few seconds."),
    # --- request limits and checks at the edge (issue 14, docs/security.md) ---------------------
    "storage_unavailable": ("The service cannot store uploads right now, so nothing was kept.",
                            "Send the upload again later; if it keeps happening, tell your IT team."),
    "idempotency_key_reused": ("This upload's Idempotency-Key was already used for other videos, tasks or "
                               "another patient.", "Use a new key for a new upload (the batch tool does this)."),
    "request_timeout": ("The upload stopped arriving before it was complete.",
                        "Check the network connection and send it again."),
    "headers_too_large": ("The request carried too many headers.", "Send the request with fewer headers."),
    "cross_origin_refused": ("The change was requested from another web page than this service's own.",
                             "Use the service's own web page; if you did, reload it and try again."),
    "invalid_field": ("A form field is too long or holds characters that are not allowed.",
                      "Shorten the value (a patient reference has at most 256 characters) and remove control "
                      "characters."),
    "nothing_to_retry": ("There is no failed video left to retry in this assessment.",
                         "Upload the video again as a new assessment."),
    "deleted": ("The assessment was deleted.", "Upload the videos again if you still need a score."),
    "worker_lost": ("The scoring process stopped several times on this video.",
                    "Check that the file plays, record it again if it does not, and tell your IT team."),
    "timeout": ("Scoring took longer than allowed.", _LATER),
    "scorer_unavailable": ("The scoring service on the worker machine could not be reached, several times.",
                           _LATER),
    "model_version_gone": ("The model version this assessment was started with is no longer running, so "
                           "this video was not scored (one assessment is never scored by two versions).",
                           "Upload the videos again as a new assessment: it is scored by the version now "
                           "installed. If every video of this assessment failed, Retry does the same."),
    # --- quality report: why a video was not scored (worker.quality reasons) ---------------------
    "face_often_missing": ("The face was out of view for much of the video.", _REFILM),
    "long_gap": ("The face was out of view for more than a second in the middle of the video.",
                 "Record again, keeping the face in view the whole time."),
    "face_too_small": ("The face is too small in the picture.",
                       "Move the camera closer, so that the face fills about a third of the picture."),
    "too_dark": ("The face is too dark.", "Turn on more light in front of the patient and record again."),
    "too_bright": ("The face is too bright (over-exposed).",
                   "Avoid direct light or a window behind the camera and record again."),
    "too_blurry": ("The face is blurred.", "Hold the camera still, clean the lens, and record again."),
    "head_turned": ("The head is turned away from the camera.",
                    "Ask the patient to face the camera and record again."),
    "head_moves_too_much": ("The head moved too much while recording.",
                            "Ask the patient to keep the head still (rest it if needed) and record again."),
    "head_tilted": ("The head is tilted (chin far up or down, or leaning to one side).",
                    "Ask the patient to hold the head upright, facing the camera, and record again."),
    # quality warnings (shown, do not block a score)
    "other_faces": ("Another face was seen in the video at times.", "Next time, record with only the patient in view."),
    "face_missing_at_times": ("The face was out of view at times.", "Next time, keep the face in view throughout."),
    "head_turned_at_times": ("The head was turned away from the camera at times.",
                             "Check the score; next time, ask the patient to face the camera throughout."),
    # --- whole-recording findings (shown with a score) --------------------------------------------
    "fewer_repetitions_than_asked": ("The patient did the movement fewer times than the task asks.",
                                     "Check the recording; record again if the task was cut short."),
    "no_movement": ("No movement was seen for this task.",
                    "Check that the patient did the task; record again if not."),
    "segmented_by_face_presence": ("The score uses only the part of the video where the face was in view.",
                                   "Nothing, unless that part is too short to show the task."),
    "repetitions_disagree": ("The repetitions of the movement scored quite differently.",
                             "Review the recording; the score is the median of unlike repetitions."),
    "partial_repetition": ("A repetition was cut off by the start or end of the recording; it is not scored.",
                           "Nothing needed; next time start and stop recording with a relaxed face."),
    "only_partial_repetitions": ("The only movement seen was cut off by the start or end of the recording, so "
                                 "the score rests on a fragment.",
                                 "Record the task again, starting and ending with a relaxed face."),
    "more_repetitions_than_asked": ("The patient did the movement more times than the task asks.",
                                    "Nothing needed; every repetition is scored and the median is used."),
    "short_clip_padded": ("The video was short, so the model saw part of it more than once.",
                          "Nothing needed; a longer recording (3 s or more) gives a steadier score."),
    # --- training data (training.datasets RowIssue reasons, training.runs; feqa train / evaluate) ----
    "bad_row": ("A row of the dataset table has a value that cannot be read or lies outside its range.",
                "Correct the row at the line named (numbers, scores and ids as the layout describes) and run "
                "again."),
    "duplicate_row": ("The same clip is listed twice in the dataset table.",
                      "Remove the repeated row (the line named) and run again."),
    "frame_count_mismatch": ("The table's frame count disagrees with the frames of the clip.",
                             "Check the start, end and frame count of that row against the video and correct "
                             "it."),
    "bad_range": ("A repetition's start and end frames are not a valid range.",
                  "Give whole frame numbers with the start not after the end (counted from 1)."),
    "range_outside_video": ("A repetition's frames run past the end of its video.",
                            "Check the row's end frame against the video, or the video against the table."),
    "no_scores": ("A video has no rater scores in the scores table.",
                  "Add the video's scores, or leave the video out of the repetitions table."),
    "video_not_found": ("A video named in the dataset table is not under the data folder.",
                        "Check the data folder given and the file name in the table."),
    "missing_frames": ("A clip's frame folder is missing or holds no frames.",
                       "Check the data folder given and that the clip's frames were unpacked."),
    "extraction_error": ("The face could not be extracted from a clip for an unexpected reason.",
                         "Check that the clip plays; the training log has the details."),
    "too_few_clips": ("A task had too few usable training clips, so it was not trained.",
                      "Add clips for that task (or fix those refused); the other tasks were trained."),
    "nothing_usable": ("Nothing in the dataset could be used for training.",
                       "Fix the rows and clips listed as refused, or check the data folder, then run again."),
    "invalid_dataset": ("The dataset options or tables could not be used.",
                        "Check the files and options named in the message and run again."),
    # --- the batch tool and the web form (client side) -------------------------------------------
    "expression_not_recognised": ("The task could not be told from the file or folder name.",
                                  "Name the file <patient>_<task>.mp4 or put it in a folder named after the "
                                  "task (see feqa batch --help), or use a CSV manifest."),
    "file_not_found": ("The file does not exist (any more).", "Check the path in the folder or manifest."),
    "unsupported_file": ("The file type is not a video the service accepts.",
                         "Convert it to MP4, MOV or WebM, or move it out of the folder."),
    "connection_failed": ("The service could not be reached.",
                          "Check the address and the network; the next run resumes where this one stopped."),
    "interrupted": ("The run was stopped before this video was done.", "Run the same command again to resume."),
    "network_error": ("The service could not be reached.", "Check the connection and try again."),
}

FALLBACK = ("Something went wrong.", _IT)
# An exception class name in brackets ("(InvalidDataError)") or after a colon: never shown to a person.
_CLASS_NAME = re.compile(r"\s*\((?:[A-Z][A-Za-z]*(?:Error|Exception|Unavailable|Exceeded|Mismatch)|"
                         r"[A-Z][a-z]+[A-Z][A-Za-z]*)\)")

# An absolute server path inside a text ("no model in /app/models/x"): only its last part is shown.
_PATH = re.compile(r"(?<![\w:/])/(?:[\w.\-]+/)+([\w.\-]+)")


def known(code: str) -> bool:
    return code in MESSAGES


def message(code: str | None) -> dict[str, str]:
    """{"code", "title" (what happened), "what_to_do"} for a stable code; a generic text for an unknown one."""
    title, what = MESSAGES.get(code or "", FALLBACK)
    return {"code": code or "internal_error", "title": title, "what_to_do": what}


def plain(text: str | None) -> str:
    """The text without exception class names or server paths, e.g. "not readable (InvalidDataError)" ->
    "not readable", "no model in /app/models/demo" -> "no model in demo"."""
    return _PATH.sub(r"\1", _CLASS_NAME.sub("", text or "")).strip()


def explain(code: str | None, specific: str | None = None) -> str:
    """One paragraph for a person: the specific facts (or the generic title), then what to do."""
    m = message(code)
    first = plain(specific) or m["title"]
    first = first[0].upper() + first[1:]
    if not first.endswith((".", "!", "?")):
        first += "."
    return f"{first} {m['what_to_do']}"


def reasons_text(codes: list[str] | tuple[str, ...] | None) -> str:
    """Quality reasons or findings as one sentence list, e.g. for FHIR text and batch output."""
    return " ".join(message(c)["title"] for c in codes or [])


def table() -> dict[str, dict[str, str]]:
    """Every message, for GET /v1/messages (the web form) and the docs."""
    return {code: {"title": t, "what_to_do": w} for code, (t, w) in MESSAGES.items()}


def video_label(index: int) -> str:
    """How messages name a video of an upload: counted from 0, as `details.index` does."""
    return f"video {index}"
