"""Models as users export them: ``load_model(FILE)`` reads a TorchScript file, a ``torch.export`` archive or
an ONNX file as a module the converter traces (``convert(load_model(FILE), images)``).

- a ``torch.export`` archive (``torch.export.save``, ``.pt2``) is loaded with ``torch.export.load``; its
  program is a graph of ATen operators, which ``trace.functional`` files under the rules of their torch
  functions;
- a TorchScript file (``torch.jit.save``) is converted to such a program by torch's own converter
  (``torch._export.converter.TS2EPConverter``) on a sample of the input's shape, with a dynamic batch;
- an ONNX file is converted to a torch.fx module by ``onnx2torch`` (the ``onnx`` extra), after the ONNX
  version converter has brought it to an opset ``onnx2torch`` reads.

A pickled module (``torch.save(model)``) is refused: unpickling runs code from the file.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import fx, nn

FORMATS = (
    "TorchScript (torch.jit.save), a torch.export archive (torch.export.save, .pt2) or ONNX (.onnx, "
    "with the onnx extra: pip install 'tsc-snn[onnx]')"
)
ONNX2TORCH_OPSET = 17  # the newest default-domain opset whose operators onnx2torch converts


class ModelFileError(ValueError):
    """The file is not a model this converter reads; the message names the file and what is accepted."""


def model_format(path: Path) -> str:
    """``"torch.export"``, ``"torchscript"`` or ``"onnx"``: what the file holds, read from its contents."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("archive_format") for n in names):
            return "torch.export"
        if any("/code/" in n for n in names) and any(n.endswith("data.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            raise ModelFileError(
                f"{path} is a pickled model (torch.save), which is not loaded: unpickling runs code from the "
                f"file. Save the model as {FORMATS}"
            )
    elif path.suffix.lower() == ".onnx":
        return "onnx"
    raise ModelFileError(f"{path} is not a model file this converter reads; give {FORMATS}")


def load_model(path: str | Path, input_shape: Sequence[int] | None = None) -> nn.Module:
    """The model in ``path`` (TorchScript, torch.export archive or ONNX) as a module in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    kind = model_format(path)
    shape = tuple(input_shape) if input_shape is not None else None
    try:
        if kind == "onnx":
            model, declared = _from_onnx(path)
        else:
            if kind == "torch.export":
                program = torch.export.load(path)
            elif shape is None:
                raise ModelFileError(f"{path}: a TorchScript model needs the input's shape (C, H, W)")
            else:
                program = _from_torchscript(path, shape)
            model, declared = _unguarded(program)
    except ModelFileError:
        raise
    except Exception as e:  # the readers raise many types for a damaged or unsupported file
        raise ModelFileError(f"{path}: cannot read it as {kind}: {str(e).splitlines()[0]}") from None
    _check_batch(path, model.eval(), shape or declared)
    return model


def _unguarded(program: torch.export.ExportedProgram) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """The program as a module that takes any batch size (its graph, without the input-shape checks that
    ``module()`` adds), and the per-image input shape it was exported for, when static."""
    module = program.module(check_guards=False)
    graph_module = fx.GraphModule(module, module.graph, type(module).__name__)  # the shape hook stays behind
    inputs = [n for n in module.graph.nodes if n.op == "placeholder"]
    value = inputs[0].meta.get("val") if len(inputs) == 1 else None
    shape = tuple(value.shape[1:]) if value is not None else ()
    return graph_module, tuple(shape) if all(isinstance(s, int) for s in shape) and shape else None


def _from_torchscript(path: Path, shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """The TorchScript model as a ``torch.export`` program, traced on a batch of two zero images."""
    from torch._export.converter import TS2EPConverter

    with warnings.catch_warnings():  # torch calls its own format deprecated, and notes unused buffers
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
        warnings.filterwarnings("ignore", message="Manually populate")
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
        return TS2EPConverter(scripted, (torch.zeros(2, *shape),)).convert()


def _from_onnx(path: Path) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """The ONNX model as onnx2torch's torch.fx module, and its declared per-image input shape if static."""
    try:
        import onnx
        from onnx import numpy_helper, version_converter
    except ImportError:
        raise ModelFileError(
            f"{path}: reading ONNX needs the onnx extra: pip install 'tsc-snn[onnx]'"
        ) from None
    proto = onnx.load(str(path))
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > ONNX2TORCH_OPSET:
        proto = version_converter.convert_version(proto, ONNX2TORCH_OPSET)
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:  # allowzero changes nothing when the shape holds no zero
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is not None and shape.all():
            for attribute in node.attribute:
                if attribute.name == "allowzero":
                    attribute.i = 0
    dims = proto.graph.input[0].type.tensor_type.shape.dim[1:] if len(proto.graph.input) == 1 else []
    declared = tuple(d.dim_value for d in dims) if dims and all(d.dim_value for d in dims) else None
    return _onnx2torch().convert(proto), declared


def _onnx2torch() -> types.ModuleType:
    """``onnx2torch``, imported where torchvision is missing too: it imports torchvision only for its
    detection operators (NMS, RoIAlign), which no TSC network has; those two get a stand-in that refuses."""
    try:
        return importlib.import_module("onnx2torch")
    except ModuleNotFoundError as e:
        if e.name == "onnx2torch":
            raise ModelFileError("reading ONNX needs the onnx extra: pip install 'tsc-snn[onnx]'") from None
        if e.name != "torchvision":
            raise
    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def refuse(*args: object, **kwargs: object) -> None:
        raise ModelFileError("this ONNX operator needs torchvision, and has no TSC equivalent either")

    ops.nms = ops.roi_align = ops.box_convert = refuse
    vision.ops = ops
    sys.modules.update({"torchvision": vision, "torchvision.ops": ops})
    try:
        return importlib.import_module("onnx2torch")
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]


def _check_batch(path: Path, model: nn.Module, shape: tuple[int, ...] | None) -> None:
    """Refuse a model that cannot run on a batch of two images (one exported for a fixed batch size)."""
    if shape is None:
        return
    try:
        with torch.no_grad():
            model(torch.zeros(2, *shape))
    except Exception as e:  # whatever the graph raises on the wrong batch size
        raise ModelFileError(
            f"{path} does not run on a batch of two {shape} images ({str(e).splitlines()[0]}); export it "
            "with a dynamic batch dimension (torch.export: dynamic_shapes={'x': {0: Dim.DYNAMIC}}; ONNX: "
            "dynamic_shapes or dynamic_axes for the batch)"
        ) from None
