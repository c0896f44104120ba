"""One-off offline conversion of Moonshine's shipped ONNX Runtime (``.ort``) files into fast ONNX models.

The ``moonshine-cpp`` wheel ships Moonshine base English as ORT-format flatbuffers. Those were saved
after optimisation, so onnxruntime does not optimise them again at load, and they keep their weights as
int8 that every run dequantises afresh (Cast -> Mul -> Add, and a transpose of the 32768 x 416
embedding): about 200 ms per decoder step. This module owns turning them into models that run 20x
faster, in three steps (``../MODELS.md`` of the project notes has the measurements):

1. ``ort_to_onnx``: read the flatbuffer with the schema bindings that ship inside onnxruntime and write
   the same graph as an ONNX ``ModelProto`` (nodes, attributes including sub-graphs, initializers,
   typed inputs and outputs, opsets). Nothing is computed; the graph is the same graph.
2. ``fold_constants``: load it once with onnxruntime at ``ORT_ENABLE_BASIC`` and keep the optimised
   graph, which folds the per-run dequantisation into float32 constants.
3. ``quantize_dynamic`` (onnxruntime's own) of MatMul/Gemm to int8 with per-batch activation scales,
   sub-graphs included (the merged decoder keeps its two branches in an ``If``).

Needs the ``onnx`` package beside onnxruntime. It never touches a model hub.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

# ORT attribute kinds (onnxruntime's fbs AttributeType), named as in the flatbuffer schema
_FLOAT, _INT, _STRING, _TENSOR, _GRAPH, _FLOATS, _INTS, _STRINGS = 1, 2, 3, 4, 5, 6, 7, 8


class ConversionError(RuntimeError):
    """A shipped ``.ort`` file holds something this converter does not know how to write as ONNX."""


def _fbs(name: str) -> Any:
    """One module of the ORT flatbuffer schema bindings bundled with onnxruntime."""
    importlib.import_module("onnxruntime.tools.ort_format_model")  # puts the bindings on sys.path
    return importlib.import_module(f"ort_flatbuffers_py.fbs.{name}")


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


def _tensor(tensor: Any) -> Any:
    from onnx import TensorProto

    proto = TensorProto()
    proto.name = _text(tensor.Name())
    proto.data_type = tensor.DataType()
    proto.dims.extend(int(tensor.Dims(i)) for i in range(tensor.DimsLength()))
    if tensor.ExternalDataOffset() >= 0:
        raise ConversionError(f"tensor {proto.name!r} keeps its data outside the file")
    if tensor.StringDataLength():
        proto.string_data.extend(tensor.StringData(i) for i in range(tensor.StringDataLength()))
    elif not tensor.RawDataIsNone():
        proto.raw_data = tensor.RawDataAsNumpy().tobytes()
    return proto


def _value_info(node_arg: Any) -> Any:
    from onnx import helper

    name = _text(node_arg.Name())
    type_info = node_arg.Type()
    if type_info is None or type_info.ValueType() != 1:  # 1: tensor_type
        return helper.make_empty_tensor_value_info(name)
    tensor_type = _fbs("TensorTypeAndShape").TensorTypeAndShape()
    value = type_info.Value()
    tensor_type.Init(value.Bytes, value.Pos)
    shape = tensor_type.Shape()
    dims: list[int | str | None] | None = None
    if shape is not None:
        dims = []
        for i in range(shape.DimLength()):
            dim = shape.Dim(i).Value()
            if dim is None or dim.DimType() == 0:
                dims.append(None)
            elif dim.DimType() == 1:
                dims.append(int(dim.DimValue()))
            else:
                dims.append(_text(dim.DimParam()))
    return helper.make_tensor_value_info(name, tensor_type.ElemType(), dims)


def _attribute(attribute: Any) -> Any:
    from onnx import helper

    name, kind = _text(attribute.Name()), attribute.Type()
    value: Any
    if kind == _FLOAT:
        value = attribute.F()
    elif kind == _INT:
        value = attribute.I()
    elif kind == _STRING:
        value = attribute.S()
    elif kind == _TENSOR:
        value = _tensor(attribute.T())
    elif kind == _GRAPH:
        value = _graph(attribute.G(), f"{name}_graph")
    elif kind == _FLOATS:
        value = [attribute.Floats(i) for i in range(attribute.FloatsLength())]
    elif kind == _INTS:
        value = [attribute.Ints(i) for i in range(attribute.IntsLength())]
    elif kind == _STRINGS:
        value = [attribute.Strings(i) for i in range(attribute.StringsLength())]
    else:
        raise ConversionError(f"attribute {name!r} has a kind ({kind}) this converter does not write")
    return helper.make_attribute(name, value)


def _graph(graph: Any, name: str) -> Any:
    """One ORT graph (or sub-graph) as an ONNX ``GraphProto``, nodes in topological order."""
    from onnx import helper

    node_args = {_text(graph.NodeArgs(i).Name()): graph.NodeArgs(i) for i in range(graph.NodeArgsLength())}
    nodes = []
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        if node.Type() != 0:  # 1: a fused node, which only ORT itself can run
            raise ConversionError(f"node {_text(node.Name())!r} is fused by ORT")
        made = helper.make_node(
            _text(node.OpType()),
            [_text(node.Inputs(j)) for j in range(node.InputsLength())],
            [_text(node.Outputs(j)) for j in range(node.OutputsLength())],
            name=_text(node.Name()),
            domain=_text(node.Domain()),
        )
        made.attribute.extend(_attribute(node.Attributes(j)) for j in range(node.AttributesLength()))
        nodes.append(made)
    initializers = [_tensor(graph.Initializers(i)) for i in range(graph.InitializersLength())]
    inputs = [_text(graph.Inputs(i)) for i in range(graph.InputsLength())]
    outputs = [_text(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    known = {t.name for t in initializers}
    return helper.make_graph(
        _topological(nodes, {*inputs, *known}),
        name,
        [_value_info(node_args[n]) for n in inputs if n not in known],
        [_value_info(node_args[n]) for n in outputs],
        initializer=initializers,
    )


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` ordered so that each comes after the producers of its inputs (ONNX's rule). Names not
    produced here (graph inputs, initializers, a sub-graph's outer scope) count as available."""
    produced = {output for node in nodes for output in node.output}
    ready = set(available) | {""}
    ordered: list[Any] = []
    pending = list(nodes)
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready or name not in produced for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ConversionError("the graph has a cycle")
        pending = waiting
    return ordered


def ort_to_onnx(ort_file: Path) -> Any:
    """The ONNX ``ModelProto`` of an ORT-format model file."""
    from onnx import helper

    buffer = ort_file.read_bytes()
    session = _fbs("InferenceSession").InferenceSession.GetRootAsInferenceSession(buffer, 0)
    model = session.Model()
    if model is None:
        raise ConversionError(f"{ort_file} holds no model")
    opsets = [
        helper.make_opsetid(_text(model.OpsetImport(i).Domain()), model.OpsetImport(i).Version())
        for i in range(model.OpsetImportLength())
    ]
    converted = helper.make_model(_graph(model.Graph(), ort_file.stem), opset_imports=opsets)
    converted.ir_version = model.IrVersion()
    return converted


def fold_constants(model: Any, destination: Path) -> None:
    """``model`` optimised once by onnxruntime at the basic level (constant folding), saved as ONNX."""
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        raw = Path(scratch) / "raw.onnx"
        onnx.save(model, str(raw))
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(destination)
        onnxruntime.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def quantize(source: Path, destination: Path) -> None:
    """Dynamic int8 quantisation of ``source``'s MatMul and Gemm weights (sub-graphs included)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(destination),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"EnableSubgraph": True},
    )


def convert(ort_file: Path, destination: Path) -> None:
    """``ort_file`` converted, constant-folded and quantised into ``destination`` (an ``.onnx`` file)."""
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        folded = Path(scratch) / "folded.onnx"
        fold_constants(ort_to_onnx(ort_file), folded)
        quantize(folded, destination)
