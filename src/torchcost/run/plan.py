"""How a run is done, decided before it starts: on the model itself, or on a twin.

When does ``analyze`` run on a copy? Exactly here:

* **eval** runs the model itself ("real") when the memory target is the model's own device type, or the model is on
  meta (no autocast). Otherwise it runs on a twin: "meta" tensors, or "fake" tensors where ``amp=`` needs
  ``torch.autocast``, which meta tensors cannot do. A model with weights analysed with ``device="meta"`` runs on a
  twin too: its weights are never moved.
* **train** never touches the user's weights: a CPU or CUDA model whose target is its own device type runs on
  "fake" tensors on that device (so device-specific kernels are chosen as there); anything else on "meta" (or "fake"
  for autocast).
* An eval run on the model itself on the CPU (the allocator not measured) skips the kernels of direct leaves whose
  output is known (:func:`skips_kernels`, collect/unwritten.py); a run that reaches a read of the values it did not
  compute is made again with every kernel, and that model then always runs them in this process.
* A twin of fake tensors that fails because its tensors hold no data (a forward with data-dependent Python control
  flow, :func:`is_fake_trouble`) is retried once on a real "copy" on the real device, when the copy fits in half the
  memory available (:func:`check_room_for_copy`); a model that simply fails is not retried.

Twins are made in :mod:`torchcost.run.step`.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import nn

from torchcost.collect import leaves, unwritten
from torchcost.errors import ModelError
from torchcost.inputs import available_memory
from torchcost.run.step import Method, StepOptions, TwinMethod

__all__ = ["READ_VALUES", "check_room_for_copy", "choose_method", "default_target", "is_fake_trouble",
           "retry_on_copy", "skips_kernels", "twin_device"]

_FAKE_WORDS = ("fake", "meta", "data-dependent", "data dependent", "datadependent", "dynamicoutputshape")


def default_target(device: torch.device) -> str:
    """The device type whose allocation behaviour memory follows when none is given: "cuda" for a meta model."""
    return "cuda" if device.type in ("cuda", "meta") else "cpu"


def choose_method(device: torch.device, options: StepOptions, model: nn.Module) -> Method:
    """"real" (the model itself), or on a twin: "fake" (fake tensors on the model's device, or on the CPU where
    autocast is needed and meta cannot autocast) or "meta"."""
    same = device.type == options.target
    if options.mode == "eval":
        if same or (device.type == "meta" and not options.amp and not _holds_data(model)):
            return "real"
        return "fake" if options.amp else "meta"
    if same and device.type in ("cpu", "cuda"):
        return "fake"
    return "fake" if options.amp else "meta"


def skips_kernels(device: torch.device, options: StepOptions, measure_cpu: bool, model: nn.Module) -> bool:
    """Whether a run on the model itself (:func:`choose_method`'s "real") may skip the kernels of its direct leaves:
    an eval run on the CPU whose allocator is not measured (a measurement needs every kernel's own allocations), of
    a model that has not read values a run did not compute (:data:`READ_VALUES`) and whose direct leaves are on
    (collect/leaves.py)."""
    return (options.mode == "eval" and device.type == "cpu" and not measure_cpu
            and unwritten.enabled() and leaves.enabled() and model not in READ_VALUES)


# models whose run read values it had not computed (made again with every kernel): never skipped again
READ_VALUES: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _holds_data(model: nn.Module) -> bool:
    """Whether some parameter or buffer of ``model`` is off the meta device (stops at the first one)."""
    return any(t.device.type != "meta" for t in itertools.chain(model.parameters(), model.buffers()))


def twin_device(method: TwinMethod, run_device: torch.device) -> torch.device:
    """The device a twin's tensors claim: the run's own for fake tensors on cpu/cuda, else the CPU."""
    return run_device if method == "fake" and run_device.type in ("cpu", "cuda") else torch.device("cpu")


def is_fake_trouble(exc: BaseException) -> bool:
    """Whether a twin run failed because its tensors hold no data (not because the model is wrong). Also a warning
    turned into an error (``-W error``, ``warnings.simplefilter("error")``) that a fake or meta kernel raised: the
    kernels a real copy runs do not raise it (torchvision's nms on fake tensors warns of a deprecated call)."""
    cause: BaseException | None = exc
    while cause is not None:
        module = type(cause).__module__
        if module.startswith(("torch._subclasses", "torch.fx.experimental")):
            return True
        if any(w in f"{type(cause).__name__}: {cause}".lower() for w in _FAKE_WORDS):
            return True
        if isinstance(cause, Warning) and _raised_in_fake_kernel(cause):
            return True
        cause = cause.__cause__
    return False


def _raised_in_fake_kernel(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside torch's fake tensor machinery or a library's meta kernels."""
    tb = exc.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/torch/_subclasses/" in path or path.endswith("_meta_registrations.py"):
            return True
        tb = tb.tb_next
    return False


def retry_on_copy(method: Method, run_device: torch.device, exc: ModelError) -> bool:
    """Whether a failed twin run is retried on a real copy of the model."""
    return method == "fake" and run_device.type != "meta" and is_fake_trouble(exc)


def check_room_for_copy(model: nn.Module, options: StepOptions, exc: ModelError) -> None:
    """A real copy needs the weights again, plus gradients and optimizer state in a training step: refuse it when
    that would not fit in half the memory available (CPU models; /proc/meminfo), rather than exhaust the machine."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    need = weights * (4 if options.mode == "train" else 1)
    available = available_memory(torch.device("cpu"))
    if available is not None and need > available // 2:
        raise ModelError(
            f"the model cannot run on fake tensors ({exc.reason}) and a real copy for the measurement would need "
            f"about {need / 2**30:.1f} GiB, more than half the {available / 2**30:.1f} GiB available; make its "
            f"forward independent of tensor values, or analyse it with mode='eval'", reason=exc.reason) from exc
