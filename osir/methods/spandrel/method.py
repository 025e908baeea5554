"""``SpandrelModel``: a network that spandrel (github.com/chaiNNer-org/spandrel) loads from a weights file,
run as a feed-forward osir method (inference only).

Loading, architecture detection and the call itself are spandrel's (``ModelLoader.load_from_state_dict``,
``canonicalize_state_dict``, ``ImageModelDescriptor.__call__``, which also pads to a square size where an
architecture needs one and applies an architecture's own pre- and post-processing).  Hand-written here is
only the mapping of spandrel's descriptor onto osir's ``Method`` contract: ``scale``; ``size_requirements``
(``minimum`` and ``multiple_of``, which osir's inference layer pads to); ``tiling`` (``ModelTiling`` ->
``osir.core.card.Tiling``, ``INTERNAL``: ``tiles_internally``); the precisions the architecture supports
(``supports_half`` / ``supports_bfloat16``: an autocast the network does not support runs it in fp32
instead, and says so); grey networks (one input channel: the RGB image's BT.601 luma, as OpenCV's
``COLOR_RGB2GRAY``; one output channel: repeated to RGB).  The file is read by osir
(``osir.core.checkpoint.read_weights_file``: safetensors, or torch's weights-only unpickler), never by
spandrel's own ``.pth`` reader.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from osir.core.card import SizeRequirements, Tiling
from osir.core.checkpoint import CheckpointError, read_weights_file
from osir.core.method import Method
from osir.core.recognition import NoMatch
from osir.core.registry import METHODS, OptionsError
import osir.methods.spandrel.files  # noqa: F401  (its file declarations, also where the entry points are stale)

#: ITU-R BT.601 luma weights (OpenCV's ``COLOR_RGB2GRAY``, what ``osir restore`` writes grey outputs with)
LUMA = (0.299, 0.587, 0.114)
#: image channels osir can feed a network (RGB, or its luma) and take back from it (RGB, or grey repeated)
CHANNELS = (1, 3)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= 200 else line[:200] + "..."


def image_model(payload):
    """spandrel's ``ImageModelDescriptor`` of a weights file's contents (``payload``: the file as read, before
    unwrapping), on the CPU in eval mode; ``NoMatch`` saying why not (not a state dict, no architecture
    spandrel knows, its loading failed, a model that does not map an RGB image to an image)."""
    import spandrel
    if not isinstance(payload, dict):
        raise NoMatch(f"not a state dict ({type(payload).__name__})")
    state = spandrel.canonicalize_state_dict(payload)
    if not state or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise NoMatch("not a state dict of tensors (after spandrel's unwrapping)")
    try:
        with warnings.catch_warnings():      # torch's meshgrid indexing notice, raised inside some architectures
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise NoMatch("spandrel recognises no architecture in these keys") from None
    except Exception as err:   # an architecture's keys matched but building or loading it failed
        raise NoMatch(f"spandrel failed to load it: {type(err).__name__}: {_first_line(err)}") from None
    name = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise NoMatch(f"spandrel loads a {name} {descriptor.purpose} model, which takes more than an image "
                      "(an inpainting mask): not a restoration osir runs")
    if descriptor.input_channels not in CHANNELS or descriptor.output_channels not in CHANNELS:
        raise NoMatch(f"spandrel loads a {name} of {descriptor.input_channels} input and "
                      f"{descriptor.output_channels} output channels; osir runs 1 (grey) or 3 (RGB) channels")
    return descriptor.eval()


def hyper_parameters(descriptor) -> dict:
    """What ``osir recognize`` shows of a descriptor (spandrel's names)."""
    req = descriptor.size_requirements
    return {"architecture": descriptor.architecture.name, "purpose": descriptor.purpose, "scale": descriptor.scale,
            "input_channels": descriptor.input_channels, "output_channels": descriptor.output_channels,
            "tags": list(descriptor.tags),
            "size_requirements": f"minimum {req.minimum}, multiple of {req.multiple_of}" + (", square" * req.square),
            "tiling": descriptor.tiling.name.lower(),
            "supports_fp16": descriptor.supports_half, "supports_bf16": descriptor.supports_bfloat16}


def size_requirements(descriptor) -> SizeRequirements:
    """spandrel's ``SizeRequirements`` as osir's (``minimum`` 0 is osir's 1; ``square`` is left to spandrel's
    call, which pads to a square and crops back)."""
    req = descriptor.size_requirements
    return SizeRequirements(minimum=max(1, int(req.minimum)), multiple_of=int(req.multiple_of))


def tiling(descriptor) -> Tiling:
    """spandrel's ``ModelTiling`` as osir's ``Tiling`` (the same three cases)."""
    return Tiling[descriptor.tiling.name]


def read_model(path: str | Path):
    """The descriptor of the weights file ``path``; ``CheckpointError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"method.weights: weights file not found: '{path}'")
    try:
        return image_model(read_weights_file(path))
    except NoMatch as why:
        raise CheckpointError(f"'{path}': not a model spandrel runs: {why}") from None


@METHODS.register()
class SpandrelModel(Method):
    """A network spandrel loads from ``weights``, restoring ``batch['lq']`` through spandrel's call.

    Args:
        weights: the weights file (any architecture of spandrel's main registry; .pth read with torch's
            weights-only unpickler, or .safetensors).

    ``scale``, ``min_size`` / ``size_multiple`` (``size_requirements``), ``tiles_internally`` and ``tiling_advice``
    (an ``osir.core.card.Tiling``) are the descriptor's.  ``inference_notes`` says where the requested
    precision is not run (after ``setup``).  Inference only: ``prepare_training`` refuses.
    """

    def __init__(self, weights: str):
        super().__init__()
        self.descriptor = read_model(weights)
        self.networks["g"] = self.descriptor.model
        self.pretrained["g"] = str(weights)
        self.scale = int(self.descriptor.scale)
        size = size_requirements(self.descriptor)
        self.min_size, self.size_multiple = size.minimum, size.multiple_of
        self.tiling_advice = tiling(self.descriptor)
        self.tiles_internally = self.tiling_advice is Tiling.INTERNAL
        self.inference_notes: list[str] = []

    @property
    def architecture(self) -> str:
        return self.descriptor.architecture.name

    def supports(self, mixed_precision: str) -> bool:
        """Whether the architecture runs under ``mixed_precision`` ('no', 'fp16', 'bf16'), as spandrel says."""
        return {"fp16": self.descriptor.supports_half, "bf16": self.descriptor.supports_bfloat16}.get(
            mixed_precision, True)

    def setup(self, device, mixed_precision: str = "no") -> None:
        super().setup(device, mixed_precision)
        self.inference_notes = []
        if not self.supports(mixed_precision):
            self.inference_notes.append(
                f"note: {self.architecture} does not support {mixed_precision} (spandrel's descriptor): it runs in fp32")

    def autocast(self):
        """The base class's autocast, or none (fp32) where the architecture does not support the precision."""
        return super().autocast() if self.supports(self.mixed_precision) else nullcontext()

    def prepare_training(self) -> None:
        raise OptionsError(f"method.type: SpandrelModel runs spandrel's {self.architecture} for inference only "
                           "(osir restore, osir web, osir test); it cannot be trained")

    def training_step(self, batch: dict) -> dict[str, float]:
        raise OptionsError("method.type: SpandrelModel is inference only")

    def restore(self, batch: dict, generator=None) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> B x 3 x sH x sW (spandrel's call clamps to [0, 1])."""
        lq = batch["lq"]
        if self.descriptor.input_channels == 1:
            weights = torch.tensor(LUMA, dtype=lq.dtype, device=lq.device).view(1, 3, 1, 1)
            lq = (lq * weights).sum(dim=1, keepdim=True)
        with self.autocast():
            out = self.descriptor(lq).float()
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out
