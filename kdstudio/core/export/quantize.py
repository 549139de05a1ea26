"""int8 for ONNX: onnxruntime's dynamic quantization, after two graph passes that let it see
every weight (a Gemm's, and a tied head's behind a Transpose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdstudio.core.export.graph import quiet

NOTE = ("int8: dynamic quantization (onnxruntime quantize_dynamic), int8 weights per channel "
        "for MatMul, 8-bit per tensor for embedding tables (Gather); activations are quantized "
        "at run time.")


def initializers(proto: Any) -> dict[str, Any]:
    return {t.name: t for t in proto.graph.initializer}


def replace_nodes(proto: Any, nodes: list[Any]) -> None:
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def gemm_to_matmul(proto: Any) -> int:
    """Gemm(A, W, C) with a constant W -> MatMul + Add, which dynamic quantization handles.

    GPT-2's Conv1D layers (and some heads) export as Gemm, and onnxruntime's dynamic
    quantizer has no integer Gemm: left alone they would stay fp32.
    """
    from onnx import helper, numpy_helper

    inits = initializers(proto)
    new_nodes, changed = [], 0
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        w = inits[node.input[1]]
        if attrs.get("transB", 0):
            arr = numpy_helper.to_array(w).T.copy()
            w.CopyFrom(numpy_helper.from_array(arr, w.name + "_t"))
        mm_out = node.output[0] + "_mm" if len(node.input) > 2 and node.input[2] else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], w.name], [mm_out],
                                          name=(node.name or "gemm") + "_matmul"))
        if mm_out != node.output[0]:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                              name=(node.name or "gemm") + "_bias"))
        changed += 1
    if changed:
        replace_nodes(proto, new_nodes)
    return changed


def fold_transposed_weights(proto: Any) -> int:
    """Transpose(W) of a constant W becomes a constant again, so the quantizer sees a weight.

    The exporter keeps a tied LM head as Transpose(embedding table); left so, the head's
    MatMul would stay fp32 and the fp32 table would be stored beside its int8 copy.
    """
    from onnx import helper, numpy_helper

    inits = initializers(proto)
    kept, added = [], []
    for node in proto.graph.node:
        if node.op_type == "Transpose" and node.input[0] in inits:
            perm = [helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"]
            arr = numpy_helper.to_array(inits[node.input[0]])
            arr = arr.transpose(perm[0]) if perm else arr.T
            added.append(numpy_helper.from_array(arr.copy(), node.output[0]))
        else:
            kept.append(node)
    if added:
        replace_nodes(proto, kept)
        proto.graph.initializer.extend(added)
        used = {x for n in proto.graph.node for x in n.input} | {o.name for o in proto.graph.output}
        unused = [t for t in proto.graph.initializer if t.name not in used]
        for t in unused:
            proto.graph.initializer.remove(t)
    return len(added)


def quantize_int8(proto: Any, folder: Path, large: bool) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fold_transposed_weights(proto)
    gemm_to_matmul(proto)
    src, dst = folder / "fp32.onnx", folder / "int8.onnx"
    onnx.save_model(proto, str(src), save_as_external_data=large,
                    location="fp32.onnx.data" if large else None)
    # per_channel: one scale per output column of each MatMul weight (a per-tensor scale loses
    # the small columns); reduce_range: 7-bit weights, so the u8 x s8 products cannot
    # saturate on CPUs without VNNI. Gather: the vocabulary tables (most of a small encoder).
    with quiet():
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         reduce_range=True, weight_type=QuantType.QInt8,
                         use_external_data_format=large)
    out = onnx.load_model(str(dst))
    for p in folder.iterdir():
        if p.name.startswith(("fp32.onnx", "int8.onnx")):
            p.unlink()
    return out
