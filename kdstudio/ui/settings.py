"""App settings: window geometry, last-used models, data sets and folders, recent runs.

Kept as JSON in the platformdirs config directory (or $KDSTUDIO_HOME when set, so tests and
portable installs stay self-contained), written atomically. A corrupt file is set aside
with a warning instead of stopping the app.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from kdstudio.core.runs import APP_NAME, atomic_write_json

DEFAULTS: dict[str, Any] = {
    "geometry": "",
    "last_teacher": "",
    "last_student": "",
    "last_dataset": "",
    "last_folder": "",
    "recent_runs": [],
    "recent_configs": [],
    "first_start_done": False,
}
MAX_RECENT = 10


def settings_path() -> Path:
    env = os.environ.get("KDSTUDIO_HOME")
    if env:
        return Path(env).expanduser() / "settings.json"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "settings.json"


class Settings:
    """A dict of settings with load/save; ``warning`` says what happened to a bad file."""

    def __init__(self, path: Path | None = None):
        self.path = path or settings_path()
        self.values: dict[str, Any] = dict(DEFAULTS)
        self.warning = ""
        self.load()

    def load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("the file does not hold a JSON object")
        except (OSError, ValueError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                self.path.rename(aside)
                where = f"it was moved to {aside}"
            except OSError:
                where = "it was left in place"
            self.warning = (f"The settings file {self.path} could not be read ({exc}); {where} "
                            "and KD Studio starts with default settings.")
            return
        for key, default in DEFAULTS.items():
            value = data.get(key, default)
            if isinstance(value, type(default)):
                self.values[key] = value

    def save(self) -> None:
        atomic_write_json(self.path, self.values)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def push_recent(self, key: str, item: str) -> None:
        items = [i for i in self.values.get(key, []) if i != item]
        self.values[key] = [item, *items][:MAX_RECENT]
