"""Engine messages in the app's words: a config key becomes the control that shows it.

The engine's messages name config keys ("Set evaluation.baseline = false"), which is right
for the command line and its TOML files. In the app the same key is a control on a page: the
Binder gives every control its field (the property ``configField``) and its words (its
accessible name), and a combo box holds the words of each value. ``app_words(message, root)``
looks each key up among ``root``'s pages and writes the page, the control and the value as
the app shows them:

    "Set evaluation.baseline = false"
    -> 'Untick “Also train the same student without the teacher” (Method page)'
"""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtWidgets import QAbstractButton, QComboBox, QWidget

from kdstudio.ui.widgets.reveal import find_control



def _known_keys() -> list[str]:
    """Every 'section.field' of a run config: only these are words to translate (a file name
    such as data.csv, or a key the user mistyped, stays as it is)."""
    import dataclasses

    from kdstudio.core.config import RunConfig

    keys = []
    for section in dataclasses.fields(RunConfig):
        kind = section.type if isinstance(section.type, type) else None
        default = getattr(RunConfig(), section.name, None)
        if kind is None and dataclasses.is_dataclass(default):
            kind = type(default)
        if kind is not None and dataclasses.is_dataclass(kind):
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(kind)]
    return sorted(keys, key=len, reverse=True)  # the longest first: no key cut at a shorter one


_KEY = r"(?<![\w./\\])(?:%s)(?![\w.])" % "|".join(re.escape(k) for k in _known_keys())
# Keys no Binder control shows (the model choosers), in the words of their page.
UNBOUND = {"student.name": ("Student", "Models"), "teacher.name": ("Teacher", "Models"),
           "student.revision": ("Student revision", "Models"),
           "teacher.revision": ("Teacher revision", "Models")}
_VALUE = r"""(?:"[^"]*"|'[^']*'|[\w+-]+(?:\.\d+)?)"""


def _page_of(control: QWidget) -> str:
    """The title of the page a control sits on ("Method"), or ''."""
    w: Any = control
    while w is not None:
        title = getattr(type(w), "title", "")
        if isinstance(title, str) and title and hasattr(w, "page_name"):
            return title
        w = w.parentWidget()
    return ""


class _Words:
    """The controls of one window, found by their config key."""

    def __init__(self, root: QWidget | None):
        self.root = root
        self.found: dict[str, QWidget | None] = {}

    def control(self, key: str) -> QWidget | None:
        if key not in self.found:
            self.found[key] = find_control(self.root, key) if self.root is not None else None
        return self.found[key]

    def name(self, key: str) -> str:
        """“Control” (Page page), or the key's own words where no control shows it."""
        w = self.control(key)
        if w is None and key in UNBOUND:
            label, page = UNBOUND[key]
            return f"\u201c{label}\u201d ({page} page)"
        label = (w.accessibleName() if w is not None else "") or \
            key.split(".", 1)[1].replace("_", " ")
        page = _page_of(w) if w is not None else ""
        return f"\u201c{label}\u201d" + (f" ({page} page)" if page else "")

    def value(self, key: str, raw: str) -> str:
        """A value as the control shows it (a combo box's words, on / off for a switch)."""
        v = raw.strip("\"'")
        w = self.control(key)
        if isinstance(w, QComboBox):
            for i in range(w.count()):
                if str(w.itemData(i)) == v:
                    return f"\u201c{w.itemText(i)}\u201d"
        if v in ("true", "false", "True", "False"):
            return "on" if v.lower() == "true" else "off"
        return f"\u201c{v}\u201d"

    def set_to(self, key: str, raw: str) -> str:
        """'Set key = value' as an instruction on the control."""
        w, v = self.control(key), raw.strip("\"'").lower()
        if isinstance(w, QAbstractButton) and w.isCheckable() and v in ("true", "false"):
            return f"{'Tick' if v == 'true' else 'Untick'} {self.name(key)}"
        return f"Set {self.name(key)} to {self.value(key, raw)}"


def app_words(message: str, root: QWidget | None) -> str:
    """``message`` with every config key (and 'key = value', 'key is value') in the words of
    the control that shows it under ``root`` (the main window)."""
    words = _Words(root)
    message = re.sub(r"\s*\(allowed: [^)]*\)", "", message)
    message = re.sub(rf"[Ss]et ({_KEY}) = ({_VALUE})",
                     lambda m: words.set_to(m[1], m[2]), message)
    message = re.sub(rf"\btask = ({_VALUE})",
                     lambda m: f"the task \u201c{_task_title(m[1])}\u201d (Method page)", message)
    names = "|".join(re.escape(n) for n in _task_names())
    message = re.sub(rf"'?(?<![\w-])({names})(?![\w-])'?",
                     lambda m: f"\u201c{_task_title(m[1])}\u201d", message)
    message = re.sub(rf"({_KEY}) is ({_VALUE})",
                     lambda m: f"{words.name(m[1])} is {words.value(m[1], m[2])}", message)
    return re.sub(_KEY, lambda m: words.name(m[0]), message)


def _task_names() -> list[str]:
    from kdstudio.core.tasks import all_tasks

    return [t.name for t in all_tasks()]


def _task_title(raw: str) -> str:
    from kdstudio.core.tasks import get_task

    name = raw.strip("\"'")
    try:
        return get_task(name).title
    except Exception:  # noqa: BLE001 - an unknown task keeps its own name
        return name
