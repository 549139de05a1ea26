"""ONNX: torch's dynamo exporter, a pass that stores a tied head once, int8 or fp16 on top,
and an onnxruntime session that runs the result like the PyTorch student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdstudio.core.errors import ExportError
from kdstudio.core.events import EventSink, Stage
from kdstudio.core.export.graph import ONNX_INPUTS, Graph, half_copy, output_name, quiet
from kdstudio.core.export.quantize import NOTE as INT8_NOTE
from kdstudio.core.export.quantize import quantize_int8, replace_nodes

LARGE_ONNX_BYTES = 1_800_000_000  # protobuf cannot hold 2 GB: larger graphs keep weights beside
FP16_NOTE = ("fp16: weights and arithmetic in float16, outputs cast to float32. Made for GPUs "
             "(CUDAExecutionProvider); the figures here are onnxruntime's CPU kernels, which "
             "run it too.")


def require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs the package(s) {', '.join(missing)}, which are not "
                          "installed.",
                          hint=f"Install them with 'pip install {' '.join(missing)}' (or "
                               "'pip install kdstudio[export]'), or export to safetensors "
                               "instead.")


def write_onnx(reference: Graph, model: nn.Module, task: Any, normalize: bool,
               quantize: str | None, first: dict[str, torch.Tensor], folder: Path,
               on_event: EventSink, notes: list[str]) -> OrtModel:
    """Export, optimise and (for int8) quantize the graph into folder/model.onnx."""
    import onnx
    from torch.export import Dim

    # The trace must see two rows and some padding, or it may fix the batch size at one or
    # take transformers' "no padding" shortcut and drop the mask.
    ids = first["input_ids"][:1, :1].expand(2, 8).contiguous()
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    graph = reference if quantize != "fp16" else Graph(half_copy(model), task, normalize).eval()
    on_event(Stage("export to ONNX", "fp16 weights" if quantize == "fp16" else ""))
    batch, seq = Dim("batch"), Dim("sequence")
    try:
        with quiet():
            program = torch.onnx.export(
                graph, (ids, mask), None, dynamo=True, verbose=False, optimize=True,
                input_names=list(ONNX_INPUTS), output_names=[output_name(task)],
                dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                "attention_mask": {0: batch, 1: seq}})
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"torch's ONNX exporter could not export this {type(model).__name__}: "
                          f"{type(exc).__name__}: {first_line}",
                          hint="Export to safetensors instead; ONNX export of this architecture "
                               "may need a newer torch or transformers.") from exc
    proto = program.model_proto
    for node in proto.graph.node:  # debug stack traces: a tenth of a small model, and local paths
        del node.metadata_props[:]
    large = sum(t.ByteSize() for t in proto.graph.initializer) > LARGE_ONNX_BYTES
    path = folder / "model.onnx"
    if quantize == "int8":
        on_event(Stage("quantize to int8", "weights of MatMul and embedding Gather"))
        proto = quantize_int8(proto, folder, large)
        notes.append(INT8_NOTE)
    else:
        shared = share_tied_weights(proto)
        if shared:
            notes.append(f"{shared} tied weight matrix stored once (a Transpose in the graph).")
    if quantize == "fp16":
        notes.append(FP16_NOTE)
    onnx.save_model(proto, str(path), save_as_external_data=large,
                    location="model.onnx.data" if large else None)
    return OrtModel(path)


def share_tied_weights(proto: Any) -> int:
    """An initializer that is another's transpose (a tied LM head) becomes a Transpose of it."""
    import numpy as np
    from onnx import helper, numpy_helper

    mats = [t for t in proto.graph.initializer
            if len(t.dims) == 2 and t.dims[0] * t.dims[1] >= 4096]
    by_shape: dict[tuple, list[Any]] = {}
    for t in mats:
        by_shape.setdefault(tuple(t.dims), []).append(t)
    drop, nodes = set(), []
    for t in mats:
        if t.name in drop:
            continue
        for other in by_shape.get(tuple(reversed(t.dims)), []):
            if other.name in drop or other.name == t.name:
                continue
            if np.array_equal(numpy_helper.to_array(t).T, numpy_helper.to_array(other)):
                nodes.append(helper.make_node("Transpose", [t.name], [other.name],
                                              name=f"tied_{other.name}", perm=[1, 0]))
                drop.add(other.name)
    if drop:
        kept = [t for t in proto.graph.initializer if t.name not in drop]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        replace_nodes(proto, nodes + list(proto.graph.node))
    return len(drop)


class OrtModel:
    """An onnxruntime CPU session called like Graph: a batch in, a float32 tensor out."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()  # the same threads as PyTorch
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load the exported graph '{path.name}': "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {k: batch[k].to(torch.int64).numpy() for k in ONNX_INPUTS}
        return torch.from_numpy(self.session.run(None, feed)[0]).float()
