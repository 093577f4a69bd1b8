"""Coral Edge TPU: what of a .tflite model can run on it, read from the flatbuffer itself.

The Edge TPU runs only fully 8-bit quantised models with static shapes and a fixed set of
operators. The compiler maps operators in graph order until the first one it cannot map; that
operator and everything after it run on the CPU. `compatibility_report` predicts this without
the compiler; `compile_for_edgetpu` runs the compiler when it is installed.
"""
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from edge_verify.edge.errors import ModelError

# TFLite builtin operators the Edge TPU supports (compiler 16, runtime 14+).
# Source: Coral, "TensorFlow models on the Edge TPU", table "Supported operations",
# https://coral.ai/docs/edgetpu/models-intro/#supported-operations
# The table's per-operator limits are not checked here, e.g. Mean/Pad/Sum along x, y, z only,
# no fused activation on pooling and Concatenation, Softmax on 1-D input of at most 16,000
# elements, FullyConnected with a one-dimensional output. The table's "LSTM" (unidirectional
# only) is the UNIDIRECTIONAL_SEQUENCE_LSTM operator of a converted Keras LSTM.
EDGETPU_OPERATORS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

# Same page, "Model requirements": tensor parameters are 8-bit fixed-point (int8 or uint8; biases
# int32); tensor sizes are constant at compile time; tensors have at most 3 dimensions, or only
# the 3 innermost dimensions of a larger tensor may be bigger than 1.
QUANTISED_TYPES = ("INT8", "UINT8")
MAX_RANK = 4

COMPILER = "edgetpu_compiler"
INSTALL_COMMANDS = """\
# on an x86-64 Debian or Ubuntu host (the compiler is not built for ARM):
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \\
  | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg
echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \\
  | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
sudo apt-get update
sudo apt-get install edgetpu-compiler
edgetpu_compiler --version"""


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    return schema


def _enum_names(enum_class) -> dict:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def read_model(tflite_path):
    """The flatbuffer Model of a .tflite file; ModelError when it is not one."""
    schema = _schema()
    path = Path(tflite_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read the TFLite model {path}: {error.strerror}") from None
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    return schema.Model.GetRootAsModel(data, 0)


def _operator_name(model, operator, names) -> str:
    code = model.OperatorCodes(operator.OpcodeIndex())
    # builtin_code replaced deprecated_builtin_code (an int8) at 127; the larger one is right.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if names.get(builtin) == "CUSTOM":
        return (code.CustomCode() or b"CUSTOM").decode()
    return names.get(builtin, f"BUILTIN_{builtin}")


def _is_constant(model, tensor) -> bool:
    buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() else None
    return buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)


def _tensor_problems(model, graph, index, type_names) -> list[str]:
    """Why tensor `index` of `graph` keeps its operator off the Edge TPU ([] when it does not)."""
    tensor = graph.Tensors(index)
    type_name = type_names.get(tensor.Type(), str(tensor.Type()))
    constant = _is_constant(model, tensor)
    problems = []
    if type_name not in QUANTISED_TYPES and not (type_name == "INT32" and constant):
        problems.append(f"{type_name} tensor")
    shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
    signature = tensor.ShapeSignatureAsNumpy().tolist() if tensor.ShapeSignatureLength() else shape
    if -1 in signature:
        problems.append("dynamic shape")
    if not constant:  # weights are laid out by the compiler; the limits are about activations
        if len(shape) > MAX_RANK:
            problems.append(f"rank {len(shape)} > {MAX_RANK}")
        elif any(size > 1 for size in shape[:-3]):
            problems.append(f"shape {shape}: a dimension outside the 3 innermost is > 1")
    return problems


def compatibility_report(tflite_path) -> dict:
    """What of the model the Edge TPU compiler can map, predicted from the .tflite file.

    Keys: compatible, operators ([{name, count, versions, supported}] in graph order),
    unsupported, first_cpu_fallback ({index, name, reason} or None), edgetpu_operators,
    total_operators, float_tensors, dynamic_shapes, rank_problems ([{index, name, ...}]),
    compiler (whether edgetpu_compiler is on PATH). Only the main subgraph is read.
    A QUANTIZE of a graph input or a DEQUANTIZE of a graph output runs on the CPU without ending
    the Edge TPU segment, as the compiler does with float-interface models.
    """
    schema = _schema()
    model = read_model(tflite_path)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    graph = model.Subgraphs(0)
    graph_inputs = set(graph.InputsAsNumpy().tolist())
    graph_outputs = set(graph.OutputsAsNumpy().tolist())

    tensor_problems = {}
    ops = []
    for op_index in range(graph.OperatorsLength()):
        operator = graph.Operators(op_index)
        name = _operator_name(model, operator, op_names)
        version = model.OperatorCodes(operator.OpcodeIndex()).Version()
        inputs = [i for i in operator.InputsAsNumpy().tolist() if i >= 0]
        outputs = [i for i in operator.OutputsAsNumpy().tolist() if i >= 0]
        reasons = {} if name in EDGETPU_OPERATORS else {"not supported by the Edge TPU": ""}
        for index in inputs + outputs:
            if index not in tensor_problems:
                tensor_problems[index] = _tensor_problems(model, graph, index, type_names)
            for problem in tensor_problems[index]:  # each kind once, with its first tensor
                reasons.setdefault(problem, f" {graph.Tensors(index).Name().decode()!r}")
        reasons = [problem + example for problem, example in reasons.items()]
        boundary = ((name == "QUANTIZE" and set(inputs) <= graph_inputs) or
                    (name == "DEQUANTIZE" and set(outputs) <= graph_outputs))
        ops.append({"index": op_index, "name": name, "version": version, "reasons": reasons,
                    "boundary": boundary})

    fallback = next((op for op in ops if op["reasons"] and not op["boundary"]), None)
    end = fallback["index"] if fallback else len(ops)
    counts = Counter(op["name"] for op in ops)
    operators = []
    for name in dict.fromkeys(op["name"] for op in ops):
        versions = sorted({op["version"] for op in ops if op["name"] == name})
        operators.append({"name": name, "count": counts[name], "versions": versions,
                          "supported": name in EDGETPU_OPERATORS})

    def tensors_with(word):
        return [{"index": i, "name": graph.Tensors(i).Name().decode(),
                 "problem": "; ".join(p for p in problems if word(p))}
                for i, problems in sorted(tensor_problems.items()) if any(word(p) for p in problems)]

    report = {
        "compatible": not any(op["reasons"] for op in ops),
        "operators": operators,
        "unsupported": [o["name"] for o in operators if not o["supported"]],
        "first_cpu_fallback": None if fallback is None else {
            "index": fallback["index"], "name": fallback["name"],
            "reason": "; ".join(fallback["reasons"])},
        "edgetpu_operators": sum(1 for op in ops[:end] if not op["reasons"]),
        "total_operators": len(ops),
        "float_tensors": tensors_with(lambda p: p.endswith(" tensor")),
        "dynamic_shapes": tensors_with(lambda p: p == "dynamic shape"),
        "rank_problems": tensors_with(lambda p: p.startswith(("rank", "shape"))),
        "compiler": shutil.which(COMPILER) is not None,
    }
    return report


def format_report(report) -> str:
    """A few lines for people: verdict, where the CPU takes over, the operators."""
    verdict = "compatible: every operator maps to the Edge TPU" if report["compatible"] else \
        "NOT fully compatible"
    lines = [f"Edge TPU: {verdict} ({report['edgetpu_operators']} of {report['total_operators']} "
             "operators on the Edge TPU, predicted from the .tflite file)"]
    fallback = report["first_cpu_fallback"]
    if fallback:
        lines.append(f"first CPU fallback: {fallback['name']} (operator {fallback['index']}): "
                     f"{fallback['reason']}; it and every later operator run on the CPU")
    if report["unsupported"]:
        lines.append("unsupported operators: " + ", ".join(report["unsupported"]))
    for key, label in (("float_tensors", "not int8/uint8 tensors"), ("dynamic_shapes", "dynamic shapes"),
                       ("rank_problems", "shape limits")):
        if report[key]:
            names = ", ".join(t["name"] for t in report[key][:5])
            more = f" and {len(report[key]) - 5} more" if len(report[key]) > 5 else ""
            lines.append(f"{label}: {names}{more}")
    lines.append("operators: " + ", ".join(
        f"{o['name']} x{o['count']}" + ("" if o["supported"] else " (unsupported)")
        for o in report["operators"]))
    lines.append(f"{COMPILER}: " + ("installed" if report["compiler"] else "not installed"))
    return "\n".join(lines)


def compile_for_edgetpu(tflite_path, out_dir) -> dict:
    """Run edgetpu_compiler when it is on PATH; otherwise say how to install and run it.

    Writes out_dir/<name>_edgetpu.tflite and out_dir/edgetpu_compiler.log (the compiler's summary
    and its per-operator log). Returns {compiled, model, log, note, commands}; `note` is
    Markdown for the bundle README.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    run = f"cd BUNDLE_DIR && edgetpu_compiler -s -o . {tflite_path.name}"
    compiler = shutil.which(COMPILER)
    if compiler is None:
        commands = f"{INSTALL_COMMANDS}\n{run}"
        note = (f"`{COMPILER}` was not installed where this bundle was built, so there is no "
                f"Edge TPU model in it. To make one:\n\n```\n{commands}\n```\n")
        return {"compiled": False, "model": None, "log": None, "note": note, "commands": commands}

    out_dir.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-s", "-o", str(out_dir), str(tflite_path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        output, returncode = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired:
        output, returncode = "edgetpu_compiler did not finish in 600 s\n", None
    model = out_dir / f"{tflite_path.stem}_edgetpu.tflite"
    own_log = out_dir / f"{tflite_path.stem}_edgetpu.log"
    log = out_dir / "edgetpu_compiler.log"
    text = f"$ {' '.join(command)}\n{output}"
    if own_log.is_file():
        text += f"\n--- {own_log.name}\n{own_log.read_text(errors='replace')}"
        own_log.unlink()
    log.write_text(text)
    compiled = returncode == 0 and model.is_file()
    if compiled:
        note = f"`{model.name}` was compiled by `{COMPILER}`; its operator log is `{log.name}`.\n"
    else:
        hint = (" The model uses operator versions newer than this compiler knows: convert with an "
                "older TensorFlow." if "Didn't find op for builtin opcode" in output else "")
        note = f"`{COMPILER}` failed (exit code {returncode}); see `{log.name}`.{hint}\n"
    return {"compiled": compiled, "model": str(model) if compiled else None, "log": str(log),
            "note": note, "commands": run}
