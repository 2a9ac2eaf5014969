"""Seeded random mutations of model and data files, for the fuzz test.

Every mutator takes a numpy Generator and returns a short description of what it did, so a
failing case can be named and replayed from its seed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

INTS = [-(2 ** 40), -7, -1, 0, 1, 2, 3, 5, 64, 1000, 2 ** 31, 10 ** 9]
FLOATS = [0.0, -1.0, 1e-30, 1e30, float("inf"), float("-inf"), float("nan")]
OPS = ["Relu", "Sigmoid", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm",
       "MatMul", "Identity", "Softmax", "Flatten", "Reshape", "Conv", "Transpose", "Concat",
       "BatchNormalization", "ReduceMean", "Loop", "NoSuchOp"]
TYPES = [0, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT8,
         TensorProto.BOOL, TensorProto.STRING, TensorProto.UINT8, 999]


def pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


# ---- bytes ---------------------------------------------------------------------------------

def mutate_bytes(raw: bytes, rng) -> tuple[bytes, str]:
    """Flip, truncate, delete, duplicate or overwrite a stretch of the file."""
    b = bytearray(raw)
    kind = pick(rng, ["flip", "truncate", "delete", "duplicate", "zero", "random_tail"])
    n = len(b)
    i = int(rng.integers(max(n, 1)))
    if kind == "flip":
        for j in rng.integers(0, max(n, 1), size=int(rng.integers(1, 16))):
            b[j] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        del b[i:]
    elif kind == "delete":
        del b[i:i + int(rng.integers(1, 256))]
    elif kind == "duplicate":
        b[i:i] = b[i:i + int(rng.integers(1, 256))]
    elif kind == "zero":
        k = int(rng.integers(1, 64))
        b[i:i + k] = bytes(len(b[i:i + k]))
    else:
        b[i:] = rng.bytes(int(rng.integers(1, 512)))
    return bytes(b), f"bytes:{kind}@{i}"


# ---- ONNX structure ----------------------------------------------------------------------

def _tensor_types(m):
    return [vi.type.tensor_type for vi in list(m.graph.input) + list(m.graph.output)
            if vi.type.HasField("tensor_type")]


def _dims(m, rng):
    types = [t for t in _tensor_types(m) if t.HasField("shape") and t.shape.dim]
    if not types:
        return "dims:none"
    d = pick(rng, list(pick(rng, types).shape.dim))
    if rng.random() < 0.25:
        d.dim_param = "free"
        return "dims:free"
    d.dim_value = pick(rng, INTS[2:])
    return f"dims:{d.dim_value}"


def _attribute(m, rng):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return "attr:none"
    a = pick(rng, list(pick(rng, nodes).attribute))
    if a.type == AttributeProto.INT:
        a.i = pick(rng, INTS)
    elif a.type == AttributeProto.INTS:
        vals = list(a.ints)
        op = pick(rng, ["set", "drop", "add"])
        if op == "set" and vals:
            vals[int(rng.integers(len(vals)))] = pick(rng, INTS)
        elif op == "drop" and vals:
            vals.pop()
        else:
            vals.append(pick(rng, INTS))
        del a.ints[:]
        a.ints.extend(int(np.clip(v, -(2 ** 62), 2 ** 62)) for v in vals)
    elif a.type == AttributeProto.FLOAT:
        a.f = pick(rng, FLOATS)
    elif a.type == AttributeProto.STRING:
        a.s = pick(rng, [b"", b"SAME_UPPER", b"VALID", b"NOTSET", b"\xff\xfe"])
    else:
        a.name = "renamed"
    return f"attr:{a.name}"


def _init_dims(m, rng):
    t = pick(rng, list(m.graph.initializer))
    if t.dims:
        t.dims[int(rng.integers(len(t.dims)))] = pick(rng, INTS[2:])
    else:
        t.dims.append(2)
    return f"init_dims:{t.name}"


def _init_values(m, rng):
    t = pick(rng, list(m.graph.initializer))
    a = numpy_helper.to_array(t).copy()
    if a.dtype.kind != "f" or a.size == 0:
        return "init_values:skip"
    v = np.float32(pick(rng, FLOATS + [1e38, -1e38]))
    with np.errstate(all="ignore"):
        if rng.random() < 0.5:
            a.reshape(-1)[int(rng.integers(a.size))] = v
        else:
            a = (a * v).astype(a.dtype)
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    return f"init_values:{t.name}*{v}"


def _init_type(m, rng):
    t = pick(rng, list(m.graph.initializer))
    t.data_type = pick(rng, TYPES)
    return f"init_type:{t.data_type}"


def _elem_type(m, rng):
    t = pick(rng, _tensor_types(m))
    t.elem_type = pick(rng, TYPES)
    return f"elem_type:{t.elem_type}"


def _op_type(m, rng):
    n = pick(rng, list(m.graph.node))
    n.op_type = pick(rng, OPS)
    return f"op:{n.op_type}"


def _rewire(m, rng):
    names = [o for n in m.graph.node for o in n.output] + [i.name for i in m.graph.input]
    n = pick(rng, list(m.graph.node))
    if not n.input:
        return "rewire:none"
    j = int(rng.integers(len(n.input)))
    n.input[j] = pick(rng, names + ["", "nowhere"])
    return f"rewire:{n.input[j]}"


def _delete_node(m, rng):
    del m.graph.node[int(rng.integers(len(m.graph.node)))]
    return "delete_node"


def _delete_initializer(m, rng):
    del m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
    return "delete_initializer"


def _duplicate_node(m, rng):
    n = onnx.NodeProto()
    n.CopyFrom(pick(rng, list(m.graph.node)))
    m.graph.node.insert(int(rng.integers(len(m.graph.node) + 1)), n)
    return "duplicate_node"


def _swap_nodes(m, rng):
    i, j = (int(v) for v in rng.integers(len(m.graph.node), size=2))
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(m.graph.node[i])
    b.CopyFrom(m.graph.node[j])
    m.graph.node[i].CopyFrom(b)
    m.graph.node[j].CopyFrom(a)
    return "swap_nodes"


def _opset(m, rng):
    m.opset_import[0].version = int(rng.integers(0, 30))
    return f"opset:{m.opset_import[0].version}"


def _domain(m, rng):
    n = pick(rng, list(m.graph.node))
    n.domain = pick(rng, ["com.microsoft", "ai.onnx.ml", "foo"])
    return f"domain:{n.domain}"


def _outputs(m, rng):
    if rng.random() < 0.5 and m.graph.output:
        del m.graph.output[int(rng.integers(len(m.graph.output)))]
        return "drop_output"
    m.graph.output.append(onnx.ValueInfoProto(name=pick(rng, list(m.graph.node)).output[0]))
    return "add_output"


def _external(m, rng):
    t = pick(rng, list(m.graph.initializer))
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", pick(rng, ["w.bin", "../w.bin", "/etc/hostname", "sub/../w.bin",
                                            "missing.bin", ""])
    if rng.random() < 0.5:
        o = t.external_data.add()
        o.key, o.value = pick(rng, ["offset", "length"]), str(pick(rng, INTS[2:]))
    return f"external:{e.value}"


STRUCTURAL = [_dims, _attribute, _init_dims, _init_values, _init_type, _elem_type, _op_type,
              _rewire, _delete_node, _delete_initializer, _duplicate_node, _swap_nodes, _opset,
              _domain, _outputs, _external]


def _apply(mutator, d, rng) -> str:
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return mutator(d, rng)
    except Exception:  # noqa: BLE001 - a mutation that does not apply (str -> int, 0-d y, bad type)
        return f"{mutator.__name__}:skip"


def mutate_model(raw: bytes, rng) -> tuple[bytes, str]:
    """A mutated model file: one to three structural edits, and/or a byte-level edit."""
    if rng.random() < 0.3:
        return mutate_bytes(raw, rng)
    m = onnx.load_from_string(raw)
    what = [_apply(pick(rng, STRUCTURAL), m, rng) for _ in range(int(rng.integers(1, 4)))]
    out = m.SerializeToString()
    if rng.random() < 0.1:
        out, b = mutate_bytes(out, rng)
        what.append(b)
    return out, "+".join(what)


# ---- data --------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
          np.bool_, np.complex64, "U2", object]


def _x_dtype(d, rng):
    dt = pick(rng, DTYPES)
    with np.errstate(all="ignore"):
        d["x"] = d["x"].astype(dt)
    return f"x_dtype:{np.dtype(dt)}"


def _y_dtype(d, rng):
    dt = pick(rng, DTYPES)
    d["y"] = d["y"].astype(dt)
    return f"y_dtype:{np.dtype(dt)}"


def _x_shape(d, rng):
    x = d["x"]
    op = pick(rng, ["transpose", "slice", "expand", "flatten", "first", "empty", "crop"])
    if op == "transpose" and x.ndim > 1:
        d["x"] = x.transpose(0, *rng.permutation(range(1, x.ndim)))
    elif op == "slice":
        d["x"] = x[:int(rng.integers(len(x) + 1))]
    elif op == "expand":
        d["x"] = x[..., None]
    elif op == "flatten":
        d["x"] = x.reshape(len(x), -1)
    elif op == "first":
        d["x"] = x[0]
    elif op == "empty":
        d["x"], d["y"] = x[:0], d["y"][:0]
    elif x.ndim > 2:
        d["x"] = x[..., :max(1, x.shape[-1] - 1)]
    return f"x_shape:{op}"


def _y_shape(d, rng):
    y = d["y"]
    op = pick(rng, ["onehot", "column", "scalar", "slice", "matrix"])
    if op == "onehot" and y.dtype.kind in "iu" and y.size and 0 <= y.min() and y.max() < 64:
        d["y"] = np.eye(int(pick(rng, [10, 10, 11, 2])), dtype=np.float32)[np.minimum(y, 1)]
    elif op == "column":
        d["y"] = y[:, None]
    elif op == "scalar":
        d["y"] = np.asarray(y.reshape(-1)[:1].sum())
    elif op == "slice":
        d["y"] = y[:int(rng.integers(len(y) + 1))]
    else:
        d["y"] = np.stack([y, y], axis=1)
    return f"y_shape:{op}"


def _poison(d, rng):
    key = pick(rng, ["x", "y"])
    a = d[key].copy()
    if a.size == 0:
        return "poison:empty"
    vals = FLOATS + [1e38] if a.dtype.kind in "fc" else [-1, 10, 2 ** 40 if a.itemsize == 8
                                                        else 127]
    v = pick(rng, vals)
    with np.errstate(all="ignore"):
        try:
            a.reshape(-1)[int(rng.integers(a.size))] = v
        except (ValueError, OverflowError, TypeError):
            return "poison:skip"
    d[key] = a
    return f"poison:{key}={v}"


def _keys(d, rng):
    op = pick(rng, ["rename", "extra", "drop"])
    k = pick(rng, ["x", "y"])
    if op == "rename":
        d[k + "_renamed"] = d.pop(k)
    elif op == "extra":
        d["extra"] = np.arange(3)
    else:
        d.pop(k)
    return f"keys:{op}:{k}"


DATA_MUTATORS = [_x_dtype, _y_dtype, _x_shape, _y_shape, _poison, _poison]


def mutate_data(x: np.ndarray, y: np.ndarray, folder: Path, rng) -> tuple[list[str], str]:
    """Write a mutated data set into ``folder``; return the CLI data arguments and a label.

    Writes a .npz (plain or compressed) or an .npy pair; may then corrupt a file's bytes.
    """
    d = {"x": x, "y": y}
    what = [_apply(pick(rng, DATA_MUTATORS), d, rng) for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.15:
        what.append(_keys(d, rng))
    form = pick(rng, ["npz", "npz", "npz_compressed", "npy"])
    if form == "npy":
        xp, yp = folder / "x.npy", folder / "y.npy"
        np.save(xp, d.get("x", np.zeros(0)), allow_pickle=True)
        np.save(yp, d.get("y", np.zeros(0)), allow_pickle=True)
        files, args = [xp, yp], ["--data", str(xp), "--labels", str(yp)]
    else:
        p = folder / "d.npz"
        (np.savez_compressed if form == "npz_compressed" else np.savez)(p, **d)
        files, args = [p], ["--data", str(p)]
    if rng.random() < 0.3:
        f = pick(rng, files)
        raw, b = mutate_bytes(f.read_bytes(), rng)
        f.write_bytes(raw)
        what.append(b)
    return args, f"{form}:" + "+".join(what)


# ---- partial result files -----------------------------------------------------------------

def _mutate_json(d, rng) -> str:
    """Delete or retype one field somewhere in a JSON object."""
    if isinstance(d, dict) and d:
        k = pick(rng, sorted(d))
        if rng.random() < 0.3:
            del d[k]
            return f"del {k}"
        if isinstance(d[k], (dict, list)) and rng.random() < 0.6:
            return f"{k}.{_mutate_json(d[k], rng)}"
        d[k] = pick(rng, [None, "x", -1, 0, 10 ** 12, 1.5, [], {}, True])
        return f"set {k}={d[k]!r}"
    if isinstance(d, list) and d:
        j = int(rng.integers(len(d)))
        if isinstance(d[j], (dict, list)):
            return f"[{j}].{_mutate_json(d[j], rng)}"
        d[j] = pick(rng, [None, "x", -1, 0, 1.5])
        return f"[{j}]={d[j]!r}"
    return "noop"


def _mutate_stat(arrays, rng) -> str:
    name = pick(rng, sorted(k for k in arrays if k != "meta"))
    a = arrays[name]
    op = pick(rng, ["dtype", "shape", "nan", "drop", "scalar"])
    if op == "dtype" and a.dtype.kind != "U":
        arrays[name] = a.astype(pick(rng, [np.int8, np.float32, "U3", np.bool_]))
    elif op == "shape":
        arrays[name] = np.resize(a, (int(rng.integers(0, 5)),))
    elif op == "nan" and a.dtype.kind == "f" and a.size:
        arrays[name] = a.copy()
        arrays[name].reshape(-1)[0] = np.nan
    elif op == "drop":
        del arrays[name]
    else:
        arrays[name] = np.asarray(7)
    return f"{op} {name}"


def mutate_partial(src: Path, dst: Path, rng) -> str:
    """Write a mutated copy of the partial result file ``src`` to ``dst``."""
    if rng.random() < 0.4:
        raw, what = mutate_bytes(src.read_bytes(), rng)
        dst.write_bytes(raw)
        return what
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.keys()}
    if rng.random() < 0.6:
        meta = json.loads(str(arrays["meta"]))
        what = _mutate_json(meta, rng)
        arrays["meta"] = np.asarray(json.dumps(meta))
    else:
        what = _mutate_stat(arrays, rng)
    np.savez(dst, **arrays)
    return what
