"""Finding the control of a config key in the window and bringing it into view.

Every control a ``Binder`` makes carries its field as the Qt property ``configField``
("method.balance", "training.learning_rate"); ``find_control`` looks it up (or the objectName
"<section>_<key>" of a control bound by hand). ``reveal`` unfolds what hides it, picks its tab,
scrolls to it and gives it the keyboard focus; the window first switches to its page.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QScrollArea, QTabWidget, QWidget

PROPERTY = "configField"


def find_control(root: QWidget, setting: str) -> QWidget | None:
    """The control bound to ``setting`` ("section.key") under ``root``, or None."""
    for w in root.findChildren(QWidget):
        if w.property(PROPERTY) == setting:
            return w
    return root.findChild(QWidget, setting.replace(".", "_"))


def _ancestors(w: QWidget) -> list[QWidget]:
    out = []
    p = w.parentWidget()
    while p is not None:
        out.append(p)
        p = p.parentWidget()
    return out


def reveal(control: QWidget) -> bool:
    """Unfold the folded sections around ``control``, show its tab, scroll it into view and
    focus it; False when it stays out of sight (a row the current task does not use)."""
    for a in _ancestors(control):
        body, set_open = getattr(a, "body", None), getattr(a, "set_open", None)
        if isinstance(body, QWidget) and callable(set_open) and body.isAncestorOf(control):
            set_open(True)  # a fold-out section (Collapsible, the Method page's advanced settings)
        if isinstance(a, QTabWidget):
            for i in range(a.count()):
                if a.widget(i).isAncestorOf(control):
                    a.setCurrentIndex(i)
    window = control.window()
    if not control.isVisibleTo(window):
        return False
    control.setFocus(Qt.FocusReason.OtherFocusReason)
    areas = [a for a in _ancestors(control) if isinstance(a, QScrollArea)]

    def scroll() -> None:  # once the unfolded section has its size
        for area in areas:
            area.ensureWidgetVisible(control, 40, 40)

    scroll()
    QTimer.singleShot(0, control, scroll)
    return True
