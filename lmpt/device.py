"""The device and precision every script runs with: ``--device``, bf16 autocast where the GPU has it
natively, and CUDA kernels loaded ahead of their first use."""
import torch


def select_device(name=None, make_current=False):
    """``--device`` -> a torch device: cuda when available for none (or ``auto``), else the one named, which must
    exist here (ValueError naming the devices there are otherwise).

    ``make_current`` (the scripts'): a GPU named by index other than the first becomes the process's current GPU
    (``torch.cuda.set_device``), so that what PyTorch does on the current GPU is on it too: the DataLoader's
    pinned-memory thread works on the GPU that is current when the loader starts, which would otherwise be
    cuda:0. CUDA then starts before the decoding workers do; ``cuda`` and ``cuda:0`` (current already) change
    nothing. The Python API leaves its caller's current GPU alone."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: not a device this code runs on; expected cpu, cuda or cuda:<index>")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if make_current and device.type == "cuda" and device.index:
        torch.cuda.set_device(device.index)
    return device


def use_autocast(device):
    """bf16 autocast on a CUDA device with native bf16 (Ampere and newer); fp32 elsewhere: on older
    GPUs bf16 would only be emulated (slower than fp32), and on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if torch.version.hip:  # ROCm: bf16 on every AMD GPU it runs (as torch.cuda.is_bf16_supported says)
        return True
    # the named GPU's own (torch.cuda.is_bf16_supported asks the current one: cuda:0 for a --device cuda:1)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).major >= 8  # compute capability 8.0 (Ampere) and newer


def precision_name(device, autocast=None):
    """How the encoders compute on ``device``: ``cuda-bf16`` (bf16 autocast, ``use_autocast``), ``cuda-fp32`` or
    ``cpu-fp32``. The feature cache's key holds it, and a training run's configuration records it (a resume on
    another precision computes its later epochs otherwise, and says so)."""
    device = torch.device(device)
    autocast = use_autocast(device) if autocast is None else autocast
    return f"{device.type}-{'bf16' if autocast else 'fp32'}"


def autocast_on(device, enabled=None):
    """The encoders' precision context on ``device``: bf16 autocast where ``use_autocast`` says
    (``enabled`` overrides it, for callers that decided once), else a no-op."""
    device = torch.device(device)
    enabled = use_autocast(device) if enabled is None else enabled
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def load_kernels(fn, rows, dim, device):
    """On CUDA, run ``fn(zeros [rows, dim])`` once and discard it; elsewhere nothing.

    CUDA loads a kernel on its first use (lazy module loading): in a cProfile of ``lmpt/test.py`` on an
    H200, the first fp32 logits GEMM after the image encoding was one of the larger costs left after it
    (docs/SPEED.md). The evaluation scripts call this with their logits function, at the evaluation's
    shape, in the thread beside the image encoding, so that the loading overlaps with the decoding
    instead of following it.
    """
    if torch.device(device).type == "cuda":
        fn(torch.zeros(rows, dim, device=device))  # loaded when launched: no need to wait for the result
