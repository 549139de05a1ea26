"""The Hub for real: the real huggingface_hub client against a tiny Hub on 127.0.0.1.

tests/hub_server.py serves a small causal LM (the built-in everyday-gpt, two revisions) in the
Hub's layout; nothing leaves this machine. Each test checks what the user sees (events, the
message) and what is left in the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdstudio.core.errors import ModelError, StoppedError
from kdstudio.core.events import Progress
from kdstudio.core.models import resolve_model_source
from tests.hub_server import FakeHub, folder_files

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "resources" / "models" / "everyday-gpt"
REPO = "kd-test/tiny-gpt"
SECRET = "hf_kdstudioTestTokenNeverWritten123"


def use_hub(server: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point huggingface_hub (and datasets) at ``server``, with a cache in ``tmp_path``.

    huggingface_hub reads HF_ENDPOINT once, at import, into constants.ENDPOINT and the
    resolve-URL template, so an in-process test sets those (a child process gets the env)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(c, "ENDPOINT", server.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.setattr(c, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-stored-tokens"))
    monkeypatch.setattr(c, "HF_HUB_ETAG_TIMEOUT", 2)
    monkeypatch.setattr(c, "HF_HUB_DOWNLOAD_TIMEOUT", 2)
    monkeypatch.setattr(c, "DOWNLOAD_CHUNK_SIZE", 512 * 1024)  # several progress events a file
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return cache


def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub waits 1 s before each of its 5 retries of a broken file; not in tests."""
    from huggingface_hub import file_download

    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda s: None))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub().start()
    files = folder_files(MODEL)
    server.add_repo("model", REPO, files)
    v1 = dict(files)
    v1["config.json"] = files["config.json"].replace(b"{", b'{\n  "kd_revision": "v1",', 1)
    server.add_repo("model", REPO, v1, ref="v1")
    server.cache = use_hub(server, tmp_path, monkeypatch)
    yield server
    server.stop()


def wait_downloads_ended(timeout: float = 10.0) -> None:
    """A cancelled download's thread stops at its next chunk; wait for it (and its workers)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        names = [t.name for t in threading.enumerate()]
        if not any(n.startswith(("kdstudio-download", "ThreadPoolExecutor")) for n in names):
            return
        time.sleep(0.05)
    raise AssertionError(f"download threads still running: {threading.enumerate()}")


def assert_cache_sound(cache: Path) -> None:
    """No partial file under a real name: no leftovers, every link resolves, every blob is
    whole (its name is the sha256 the server sent as its ETag)."""
    assert not list(cache.rglob("*.incomplete")), list(cache.rglob("*.incomplete"))
    for link in cache.rglob("snapshots/*/**/*"):
        assert link.exists(), f"dangling {link}"
    for blob in cache.rglob("blobs/*"):
        if blob.suffix == ".lock":
            continue
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


def cancel_midway(server: FakeHub, events: list) -> float:
    """Start a download, cancel it while model.safetensors is half sent; seconds to stop."""
    server.pause_in = "model.safetensors"
    stop = threading.Event()
    box: dict = {}

    def go():
        try:
            resolve_model_source(REPO, on_event=events.append, stop=stop, role="teacher")
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    assert server.paused.wait(20), "the download never reached the middle of the weights"
    # Let the small files finish (a file still in flight at the cancel is dropped, and fetched
    # again later), so that the test knows which ones must not be fetched twice.
    end = time.monotonic() + 10
    while len(list(server.cache.rglob("snapshots/*/*"))) < 5 and time.monotonic() < end:
        time.sleep(0.02)
    t0 = time.monotonic()
    stop.set()
    t.join(10)
    took = time.monotonic() - t0
    assert isinstance(box.get("error"), StoppedError), box
    server.pause_in = None
    server.resume.set()  # the stalled connection goes on; the abandoned download stops
    wait_downloads_ended()
    return took


def test_download_with_progress_events(hub):
    events: list = []
    t0 = time.monotonic()
    folder = Path(resolve_model_source(REPO, on_event=events.append, role="teacher"))
    took = time.monotonic() - t0
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).read_bytes() == (MODEL / name).read_bytes()
    assert not (folder / "README.md").exists()  # only what a model needs is fetched
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and {e.stage for e in progress} == {"download teacher"}
    assert {e.unit for e in progress} == {"MB"}
    mid = [e for e in progress if e.total and 0 < e.current < e.total]
    assert len(mid) >= 3, "no progress inside the weights file"
    last = progress[-1]
    wanted = sum((folder / f).stat().st_size for f in os.listdir(folder)) / 2**20
    assert last.current == pytest.approx(last.total) == pytest.approx(wanted)
    assert_cache_sound(hub.cache)
    # The second time comes from the cache: the Hub is asked what main is, nothing is fetched.
    before = len(hub.requests("GET", "/resolve/"))
    assert resolve_model_source(REPO) == str(folder)
    assert len(hub.requests("GET", "/resolve/")) == before
    print(f"download {took:.2f} s")


def test_cancel_midway_leaves_no_broken_cache_and_continues_later(hub):
    events: list = []
    took = cancel_midway(hub, events)
    assert took < 1.0, f"cancel took {took:.2f} s"  # at once, even with the connection stalled
    assert_cache_sound(hub.cache)
    assert not list(hub.cache.rglob("snapshots/*/model.safetensors"))
    kept = {p.name for p in hub.cache.rglob("snapshots/*/*")}
    assert "config.json" in kept
    # Continued later: only what is missing is downloaded again.
    folder = Path(resolve_model_source(REPO, role="teacher"))
    assert (folder / "model.safetensors").read_bytes() == (MODEL / "model.safetensors").read_bytes()
    fetched = [p.split("/")[-1] for _, p, s in hub.requests("GET", "/resolve/")]
    assert all(fetched.count(name) == 1 for name in kept), fetched
    assert fetched.count("model.safetensors") == 2
    assert_cache_sound(hub.cache)


def test_revision(hub):
    main = Path(resolve_model_source(REPO))
    v1 = Path(resolve_model_source(REPO, revision="v1"))
    assert main != v1 and v1.name == hub.repos[("model", REPO)].refs["v1"]
    assert b"kd_revision" in (v1 / "config.json").read_bytes()
    assert b"kd_revision" not in (main / "config.json").read_bytes()
    assert hub.requests("GET", "/revision/v1")
    with pytest.raises(ModelError, match="has no revision 'v9'") as info:
        resolve_model_source(REPO, revision="v9")
    assert "branch, tag or commit" in str(info.value)


def test_gated_repo_says_how_to_log_in_and_no_token_is_written(hub, monkeypatch, tmp_path,
                                                                kd_home):
    hub.gated.add(REPO)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(ModelError) as info:
        resolve_model_source(REPO, role="teacher")
    text = str(info.value)
    assert "gated" in text and REPO in text
    assert "hf auth login" in text and "huggingface-cli login" in text and "HF_TOKEN" in text
    assert "Traceback" not in text
    assert f"Bearer {SECRET}" in hub.auth_headers  # the user's token went to the Hub...
    for f in tmp_path.rglob("*"):  # ...and nowhere on disk
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert not Path(tmp_path / "hf-token").exists()


def test_wrong_id_suggests_the_folder_option(hub):
    t0 = time.monotonic()
    with pytest.raises(ModelError) as info:
        resolve_model_source("kd-test/no-such-model", role="teacher")
    text = str(info.value)
    assert "There is no model 'kd-test/no-such-model'" in text and "Local folder" in text
    assert time.monotonic() - t0 < 3


def test_connection_dropped_mid_file_is_resumed(hub, monkeypatch):
    no_retry_pause(monkeypatch)
    hub.drop_in, hub.drops = "model.safetensors", 1
    folder = Path(resolve_model_source(REPO))
    assert (folder / "model.safetensors").read_bytes() == (MODEL / "model.safetensors").read_bytes()
    assert [s for _, p, s in hub.requests("GET", "model.safetensors")] == [200, 206]
    assert_cache_sound(hub.cache)


def test_connection_that_keeps_dropping_gives_one_sentence(hub, monkeypatch):
    no_retry_pause(monkeypatch)
    hub.drop_in, hub.drops = "model.safetensors", 1000
    with pytest.raises(ModelError) as info:
        resolve_model_source(REPO)
    assert "broke off" in str(info.value) and "Try again" in str(info.value)
    wait_downloads_ended()
    assert_cache_sound(hub.cache)
    assert not list(hub.cache.rglob("snapshots/*/model.safetensors"))


def test_hub_that_does_not_answer_times_out(hub, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_ETAG_TIMEOUT", 0.5)
    hub.slow, hub.slow_s = "/api/models/", 60  # huggingface_hub sets no timeout on this call
    t0 = time.monotonic()
    with pytest.raises(ModelError) as info:
        resolve_model_source(REPO)
    took = time.monotonic() - t0
    assert "did not answer in time" in str(info.value) and "HF_HUB_ETAG_TIMEOUT" in str(info.value)
    assert took < 4, took


def test_file_that_stalls_times_out(hub, monkeypatch):
    import huggingface_hub.constants as c

    no_retry_pause(monkeypatch)
    monkeypatch.setattr(c, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    hub.pause_in = "model.safetensors"  # half of it, then nothing (never resumed)
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did not answer in time"):
        resolve_model_source(REPO)
    assert time.monotonic() - t0 < 8
    wait_downloads_ended()
    assert_cache_sound(hub.cache)


# -- Hub data sets, through `datasets` --------------------------------------------------------

ROWS = b"".join(b'{"text": "sentence number %d about the weather", "label": %d}\n' % (i, i % 2)
                for i in range(60))


@pytest.fixture
def data_hub(hub, monkeypatch, tmp_path, request):
    """The same server with a data set (train and test files); `datasets` reads its endpoint
    from datasets.config, also fixed at import. Each test gets its own id, since `datasets`
    keeps listings in memory for the life of the process."""
    import datasets.config as dc

    monkeypatch.setattr(dc, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(dc, "HUB_DATASETS_URL",
                        hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(dc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dc, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    hub.data_id = f"kd-test/{request.node.name.replace('_', '-')[:60]}"
    hub.add_repo("dataset", hub.data_id, {"data/train.jsonl": ROWS,
                                          "data/test.jsonl": ROWS[:400].rsplit(b"\n", 1)[0] + b"\n"})
    return hub


def test_hub_data_set_downloads(data_hub):
    from kdstudio.core.data import _load_raw

    d = _load_raw(data_hub.data_id)
    assert d["train"].num_rows == 60 and d["test"].num_rows >= 5
    assert d["train"][0]["text"].startswith("sentence number 0")
    assert data_hub.requests("GET", "/datasets/" + data_hub.data_id + "/resolve/")


def test_hub_data_set_wrong_id_and_gated(data_hub, monkeypatch, tmp_path):
    from kdstudio.core.data import _load_raw
    from kdstudio.core.errors import DataError

    with pytest.raises(DataError) as info:
        _load_raw("kd-test/no-such-data")
    assert "'kd-test/no-such-data'" in str(info.value) and "local data file" in str(info.value)
    data_hub.gated.add(data_hub.data_id)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(DataError) as info:
        _load_raw(data_hub.data_id)
    assert "gated" in str(info.value) and "hf auth login" in str(info.value)
    assert "HF_TOKEN" in str(info.value)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_hub_data_set_connection_dropped_mid_file(data_hub, monkeypatch):
    from kdstudio.core.data import _load_raw

    no_retry_pause(monkeypatch)
    data_hub.drop_in, data_hub.drops = "data/train.jsonl", 1
    d = _load_raw(data_hub.data_id)
    assert d["train"].num_rows == 60  # whole, after a second request
    assert len(data_hub.requests("GET", "train.jsonl")) == 2


def test_hub_data_set_server_too_slow(data_hub, monkeypatch):
    """What `datasets` does not allow: its first call to the Hub's API (the data set's info)
    goes through huggingface_hub's session, which has no timeout, so a Hub that stalls it holds
    the load for as long as it stalls (here 2 s, with the timeouts set to 0.2 s; a minute
    earlier in this test's life); load_dataset also takes no progress hook and no cancel. The
    later calls do time out, and the user gets one sentence."""
    import huggingface_hub.constants as c

    from kdstudio.core.data import _load_raw
    from kdstudio.core.errors import DataError

    monkeypatch.setattr(c, "HF_HUB_ETAG_TIMEOUT", 0.2)
    monkeypatch.setattr(c, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    data_hub.slow, data_hub.slow_s = "/api/datasets/", 2
    t0 = time.monotonic()
    with pytest.raises(DataError) as info:
        _load_raw(data_hub.data_id)
    assert "Timeout" in str(info.value) and "HF_HUB_ETAG_TIMEOUT" in str(info.value)
    assert time.monotonic() - t0 >= 2


# -- cancel from the command line -------------------------------------------------------------

def test_ctrl_c_in_the_middle_of_the_teachers_download(hub, tmp_path, capsys):
    """`kdstudio run` with a Hub teacher; Ctrl-C (a real SIGINT to this process) while the
    weights are half sent: the command stops at once, says nothing was saved, and the cache
    holds no broken file."""
    import signal

    from kdstudio.cli.commands import main
    from tests.conftest import tiny_config

    cfg = tiny_config("causal-lm", REPO)
    path = tmp_path / "run.toml"
    cfg.save(path)
    hub.pause_in = "model.safetensors"
    stopped_at: list[float] = []

    def press_ctrl_c() -> None:
        if hub.paused.wait(60):
            stopped_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    rc = main(["run", str(path)])
    took = time.monotonic() - stopped_at[0]
    out = capsys.readouterr().out
    assert rc == 0 and "Stopped before training began" in out, out
    assert "Traceback" not in out
    assert took < 2, took
    hub.pause_in = None
    hub.resume.set()
    wait_downloads_ended()
    assert_cache_sound(hub.cache)
    assert not list(hub.cache.rglob("snapshots/*/model.safetensors"))
