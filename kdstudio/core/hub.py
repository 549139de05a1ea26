"""Downloads from the Hugging Face Hub: progress as events, a prompt cancel, and one clear
sentence for each way a download fails.

The download itself runs in a background thread, so that Cancel (or Ctrl-C) is answered at
once even while the connection is stalled, and so that a Hub that never answers its listing
call (huggingface_hub sets no timeout on it) is reported after a bounded wait instead of
hanging. A download left behind stops at its next chunk; huggingface_hub writes each file to
a temporary name and removes it on failure, so the cache never holds a partial file under a
real name, and a later download fetches only the files still missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kdstudio.core.errors import StoppedError
from kdstudio.core.events import EventSink, Progress

MB = 2**20
LOGIN = ("log in on this computer with 'hf auth login' (older versions: 'huggingface-cli "
         "login') or set the HF_TOKEN environment variable. KD Studio only passes the token on "
         "to the Hub; it never saves it.")
LOGIN_HINT = f"accept its terms on its page on huggingface.co, then {LOGIN}"


class NoAnswer(Exception):
    """The Hub accepted the connection but sent nothing back in time."""


def answer_timeout() -> float:
    """Seconds to wait for the Hub's first answers: a few times HF_HUB_ETAG_TIMEOUT."""
    from huggingface_hub import constants

    return 3.0 * float(constants.HF_HUB_ETAG_TIMEOUT)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False  # a progress bar exists: the listing answered
        self.saw_bytes = False
        self.abandoned = threading.Event()


def _event_tqdm(state: _State, stage: str, what: str, on_event: EventSink,
                stop: Any) -> type:
    from tqdm.auto import tqdm as _tqdm

    class EventTqdm(_tqdm):
        """Stands in for each of huggingface_hub's progress bars: reports the bytes written
        (in MB) as Progress events, or, where a version only shows a bar of files, the files;
        and stops the download when it was cancelled."""

        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            unit, desc = kwargs.get("unit", "it"), str(kwargs.get("desc") or "")
            # The network-transfer bar's total is a guess (compressed, deduplicated bytes);
            # the bar of bytes written to disk is the one a user can read.
            self._kind = ("transfer" if unit == "B" and desc.startswith("Downloading bytes")
                          else "bytes" if unit == "B" else "files")
            self._count = float(kwargs.get("initial") or 0)
            state.started = True

        def update(self, n: float | None = 1) -> bool | None:
            if state.abandoned.is_set() or (stop is not None and stop.is_set()):
                raise StoppedError(f"The download of {what} was cancelled.")
            with state.lock:
                self._count += float(n or 0)
                count = self._count
            total = float(self.total) if self.total else None
            if self._kind == "bytes":
                state.saw_bytes = True
                on_event(Progress(stage=stage, current=count / MB,
                                  total=total / MB if total else None, unit="MB"))
            elif self._kind == "files" and not state.saw_bytes:
                on_event(Progress(stage=stage, current=count, total=total, unit="files"))
            return None

    return EventTqdm


def run_download(call: Callable[[type], Any], *, stage: str, what: str,
                 on_event: EventSink, stop: Any) -> Any:
    """Run ``call(tqdm_class)`` in a background thread; return its result or raise its error.

    Raises StoppedError as soon as ``stop`` is set, and NoAnswer when the Hub has not answered
    its first calls within answer_timeout() seconds.
    """
    state = _State()
    tqdm_class = _event_tqdm(state, stage, what, on_event, stop)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = call(tqdm_class)
        except BaseException as exc:  # handed to the waiting caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="kdstudio-download").start()
    limit, since = answer_timeout(), time.monotonic()
    while not done.wait(0.05):
        if stop is not None and stop.is_set():
            state.abandoned.set()
            raise StoppedError(f"The download of {what} was cancelled.")
        if not state.started and time.monotonic() - since > limit:
            state.abandoned.set()
            raise NoAnswer(f"no answer within {limit:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def explain_failure(exc: BaseException, repo_id: str, revision: str, kind: str
                    ) -> tuple[str, str]:
    """A sentence naming what went wrong with ``repo_id`` and a hint saying what would work.
    ``kind`` is "model" or "data set"."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"the Hugging Face Hub ({constants.ENDPOINT})"
    other = ("choose 'Local folder' (a model folder on this computer) instead" if kind == "model"
             else "choose a local data file instead")
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    # `datasets` raises its own DatasetNotFoundError, without the Hub's error as its cause.
    dataset_missing = "DatasetNotFoundError" in names
    if any(isinstance(e, GatedRepoError) for e in chain) or (
            dataset_missing and "gated" in str(exc).lower()):
        return (f"The {kind} '{repo_id}' is gated: {where} only gives it to logged-in users who "
                "accepted its terms.", f"To use it, {LOGIN_HINT}")
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return (f"The {kind} '{repo_id}' has no revision '{revision}'.",
                "Give a branch, tag or commit that exists, or leave the revision empty for the "
                "latest (main).")
    if any(isinstance(e, RepositoryNotFoundError) for e in chain) or dataset_missing:
        return (f"There is no {kind} '{repo_id}' on {where}, or it is private.",
                f"Check the id (owner/name, as on the {kind}'s page). If it is on this computer, "
                f"{other}. If it is private, {LOGIN}")
    http = next((e for e in chain if isinstance(e, HfHubHTTPError)
                 and getattr(e, "response", None) is not None), None)
    if http is not None and http.response.status_code in (401, 403):
        return (f"{where} refused access to the {kind} '{repo_id}' "
                f"(HTTP {http.response.status_code}).", f"If you have access, {LOGIN}")
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain) or constants.HF_HUB_OFFLINE:
        return (f"Could not get '{repo_id}': this {kind} is not in the local Hugging Face "
                "cache, and downloads are switched off (HF_HUB_OFFLINE).",
                f"Unset HF_HUB_OFFLINE to download it, or {other}.")
    if any(isinstance(e, NoAnswer) for e in chain) or any("Timeout" in n for n in names):
        return (f"{where} did not answer in time while getting the {kind} '{repo_id}'.",
                "Check your network connection and try again (files already downloaded are "
                "kept). On a slow network raise HF_HUB_ETAG_TIMEOUT and "
                f"HF_HUB_DOWNLOAD_TIMEOUT (seconds), or {other}.")
    if names & {"RemoteProtocolError", "ReadError"} or "Consistency check failed" in str(exc):
        return (f"The connection to {where} broke off while downloading the {kind} "
                f"'{repo_id}'.", "Try again: the files that arrived whole are kept, and only the "
                "rest is downloaded.")
    if names & {"ConnectError", "ConnectTimeout", "LocalEntryNotFoundError"}:
        return (f"Could not reach {where} to get the {kind} '{repo_id}'.",
                f"Check your network connection (and HF_ENDPOINT, if set), or {other}.")
    text = str(exc).strip().splitlines()
    return (f"Could not get the {kind} '{repo_id}' from {where}: {type(exc).__name__}: "
            f"{text[0] if text else ''}".strip(),
            f"Check the id and your network connection, or {other}.")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out
