"""The Train page's 'GPUs: 1 ... N' control (the number of training processes)."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from kdstudio.ui.context import AppContext


def gpu_control(ctx: AppContext) -> QWidget:
    """'GPUs: 1 ... N' on a machine with several; disabled, with the reason, otherwise. More
    than one runs the training as child processes through Accelerate, one per GPU."""
    from PySide6.QtWidgets import QSpinBox

    from kdstudio.ui.child_run import gpu_count

    n, why = gpu_count()
    box = QWidget()
    box.setObjectName("gpuControl")
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    label = QLabel("GPUs:")
    spin = QSpinBox()
    spin.setObjectName("gpuSpin")
    spin.setAccessibleName("GPUs the run uses")
    spin.setRange(1, max(1, n))
    spin.setValue(1)
    spin.valueChanged.connect(lambda v: setattr(ctx, "processes", int(v)))
    note = QLabel()
    note.setObjectName("gpuNote")
    note.setWordWrap(True)
    if n > 1:
        spin.setToolTip(f"Run on 1 to {n} GPUs: more than one starts one training process per "
                        "GPU through Accelerate (DDP); training.batch_size is each process's "
                        "share of the global batch.")
        note.setText(f"of {n}" + (f" ({why})" if why else ""))
    else:
        spin.setEnabled(False)
        note.setText(f"One process: {why}.")
        spin.setToolTip(f"Several GPUs run one process each; {why}.")
    row.addWidget(label)
    row.addWidget(spin)
    row.addWidget(note, 1)
    box.spin = spin  # type: ignore[attr-defined]
    return box
