"""The one way a config field is tied to a widget: from the field's own metadata.

core/config.py gives every field its help text and, where it has them, its allowed values
(``choices``) and bounds (``min``/``max``). A ``Binder`` builds a control for a field from
them: the help text becomes its tooltip, the choices its combo box items (the page gives only
the words shown for each value), the bounds its range. An edit is written through
``ctx.set_value``; ``refresh()`` shows the config's values without emitting anything.

    self.binder = Binder(ctx, on_edit=self.edited.emit)
    w = self.binder.spin("training", "batch_size", "Batch size", name="batchSizeSpin")
    c = self.binder.combo("training", "scheduler", "Schedule", SCHEDULER_TEXT)
    ...
    self.binder.refresh()          # after the config changed
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox, QWidget

from kdstudio.core.config import RunConfig
from kdstudio.ui.widgets.common import named, show_value

Field = tuple[str, str]  # (section, key); section '' for a top-level key


def config_field(section: str, key: str) -> dataclasses.Field:
    """The dataclass field behind ``section.key`` of a RunConfig."""
    cls: Any = RunConfig
    if section:
        cls = _section_type(section)
    for f in dataclasses.fields(cls):
        if f.name == key:
            return f
    raise KeyError(f"{section}.{key}" if section else key)


def _section_type(section: str) -> type:
    default = next(f for f in dataclasses.fields(RunConfig) if f.name == section).default_factory
    return default if isinstance(default, type) else type(default())


def field_help(section: str, key: str) -> str:
    return config_field(section, key).metadata.get("help", "")


def field_rules(section: str, key: str) -> dict[str, Any]:
    """The field's ``choices``, ``min`` and ``max`` (None where it has none)."""
    meta = config_field(section, key).metadata
    return {k: meta.get(k) for k in ("choices", "min", "max")}


def field_type(section: str, key: str) -> type:
    tp = config_field(section, key).type
    return {"int": int, "float": float, "bool": bool, "str": str}.get(tp, tp) if isinstance(tp, str) else tp


def _narrow(rules: dict[str, Any], lo: float | None, hi: float | None) -> tuple[float, float]:
    """The field's bounds, narrowed by the page's ``lo``/``hi`` (which also close an open end)."""
    low, high = rules["min"], rules["max"]
    low = lo if low is None else low if lo is None else max(low, lo)
    high = hi if high is None else high if hi is None else min(high, hi)
    return (-1e6 if low is None else low), (1e6 if high is None else high)


@dataclasses.dataclass
class Binding:
    widget: QWidget
    read: Callable[..., Any]      # the widget's signal's arguments -> the config value
    show: Callable[[Any], None]   # the config value -> the widget, signals blocked


class Binder:
    """Builds controls for config fields, writes their edits and shows the config in them."""

    def __init__(self, ctx: Any, on_edit: Callable[[], None] | None = None):
        self.ctx = ctx
        self.on_edit = on_edit
        self.bindings: dict[Field, Binding] = {}
        self._writing: Field | None = None

    @property
    def controls(self) -> dict[Field, QWidget]:
        return {f: b.widget for f, b in self.bindings.items()}

    # -- building ------------------------------------------------------------------------------
    def spin(self, section: str, key: str, label: str, *, name: str = "", step: float = 1,
             decimals: int | None = None, lo: float | None = None, hi: float | None = None,
             special: str = "", suffix: str = "", scale: float = 1.0, tip: str = "",
             widget: QAbstractSpinBox | None = None, tracking: bool = False,
             read: Callable[..., Any] | None = None, show: Callable[[Any], Any] | None = None) -> Any:
        """A spin box within the field's min/max (``lo``/``hi`` only narrow them or close an
        open end); whole numbers without ``decimals``. ``scale`` shows e.g. a share as percent."""
        low, high = _narrow(field_rules(section, key), lo, hi)
        if widget is None:
            widget = QSpinBox() if decimals is None else QDoubleSpinBox()
        if isinstance(widget, QSpinBox):
            widget.setRange(int(low * scale), int(min(high * scale, 2_147_483_647)))
            widget.setSingleStep(int(step))
        else:
            if decimals is not None:
                widget.setDecimals(decimals)
            widget.setRange(low * scale, high * scale)
            widget.setSingleStep(step)
        if special:
            widget.setSpecialValueText(special)
        if suffix:
            widget.setSuffix(suffix)
        widget.setKeyboardTracking(tracking)
        tp = field_type(section, key)
        if read is None:
            read = (lambda v: int(round(v / scale))) if tp is int else \
                (lambda v: round(float(v) / scale, 10))
        shown = show or (lambda v: v * scale)
        self.bind(widget, section, key, widget.valueChanged, read,
                  lambda v: show_value(widget, shown(v)), label=label, name=name, tip=tip)
        return widget

    def combo(self, section: str, key: str, label: str, texts: dict[Any, str] | None = None, *,
              name: str = "", tip: str = "") -> QComboBox:
        """A combo box of the field's choices, each shown by its words in ``texts``."""
        widget = QComboBox()
        for value in field_rules(section, key)["choices"] or ():
            widget.addItem((texts or {}).get(value, str(value)), value)
        self.bind(widget, section, key, widget.activated, lambda _i: widget.currentData(),
                  lambda v: show_value(widget, v), label=label, name=name, tip=tip)
        return widget

    def check(self, section: str, key: str, label: str, text: str = "", *, name: str = "",
              tip: str = "") -> QCheckBox:
        widget = QCheckBox(text)
        self.bind(widget, section, key, widget.toggled, bool, lambda v: show_value(widget, v),
                  label=label, name=name, tip=tip)
        return widget

    def bind(self, widget: QWidget, section: str, key: str, signal: Any,
             read: Callable[..., Any], show: Callable[[Any], None], *, label: str = "",
             name: str = "", tip: str = "") -> QWidget:
        """Tie any widget to a field: ``signal``'s value goes through ``read`` into the config;
        ``show`` puts the config's value into the widget. Names it (objectName defaults to
        "<section>_<key>"), gives it the field's help as its tooltip and the property
        ``configField`` ("<section>.<key>")."""
        named(widget, name or f"{section}_{key}", label, tip or field_help(section, key))
        # The field it shows, for finding it again (widgets/reveal.py: "show me this setting").
        widget.setProperty("configField", f"{section}.{key}" if section else key)
        self.bindings[(section, key)] = Binding(widget, read, show)
        field = (section, key)
        signal.connect(lambda *args: self.write(field, self.bindings[field].read(*args)))
        return widget

    # -- writing and showing -------------------------------------------------------------------
    def write(self, field: Field, value: Any) -> None:
        """Write one field; the widget being edited is not refreshed by its own write."""
        self._writing = field
        try:
            self.ctx.set_value(field[0], field[1], value)
        finally:
            self._writing = None
        if self.on_edit is not None:
            self.on_edit()

    def refresh(self) -> None:
        """Show the config's values in every bound widget (signals blocked)."""
        cfg = self.ctx.config
        for (section, key), b in self.bindings.items():
            if (section, key) != self._writing:
                b.show(getattr(getattr(cfg, section) if section else cfg, key))
