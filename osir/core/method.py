"""The interface between the engine and a method.

A method owns its networks (``self.networks``: name -> module), its losses and its optimisation
step, and restores images with ``restore(batch)``.  What it may declare, and the engine honours:

* ``parameter_groups()``: named groups of parameters that ``train.optimizers.<opt>.params`` can
  name (one per network by default; add e.g. ``lora`` or ``conv_in``); ``no_weight_decay()``:
  which parameters ``exclude_from_weight_decay`` spares (gains, biases, ``logit_scale``);
* ``setup(device, mixed_precision)``: called before EMA copies and ``accelerator.prepare``; cast
  frozen parts to ``self.weight_dtype``, enable gradient checkpointing, ...;
* ``checkpoint_state()`` / ``load_checkpoint_state()``: what is saved and resumed per network
  (by default the trained tensors of a partly frozen network, the whole state otherwise);
* ``scale``, ``size_multiple``, ``min_size``, ``pad_mode``, ``tiles_internally``: the size
  contract the inference layer pads and tiles for; ``whole_image_inputs(batch)``: what must be
  computed once from the whole image before the inference layer pads and tiles it (a global
  embedding), handed to ``restore`` with every tile;
* ``evaluate(dataset, batch_size)``: its own validation (e.g. retrieval accuracy) instead of
  restoring and scoring with the metric suite; ``save_evaluation(folder)``: test.py's hook to write
  what it found beyond numbers (a confusion matrix);
* ``self.pretrained``: components the method loaded itself from local paths (for provenance), and
  ``self.pretrained_networks``: for a record that is not named after one network (a Stable Diffusion
  folder, a release file holding several), the networks it gave weights to;
* ``prepare_training()``: called by the trainer after ``setup``, before the experiment folder is
  touched: load training-only parts (loss networks) and check their files;
* ``prepare_inference()``: called by test.py (never during training) once the weights are loaded,
  e.g. to merge LoRA into the base weights;
* ``self.output_notes``: per-image text a ``restore`` call wants kept with its outputs (e.g. the
  ``prompt``: a list with one entry per image of the batch); test.py writes it into metrics.json.

Networks with trainable parameters must be stepped by some optimiser (else an options error);
frozen parts are networks whose parameters have ``requires_grad=False``.  The engine runs
validation and tests in ``eval()`` under ``torch.no_grad()`` and restores the modes afterwards.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
import torch
from torch import nn

from osir.core.checkpoint import CheckpointError, describe_mismatch, load_network, read_state_dict

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Method:
    """Base class. Subclasses fill ``self.networks`` in ``__init__`` and implement
    ``training_step`` and ``restore``; they call ``self.optimize(name, loss)`` for each
    optimiser they step (several networks and optimisers are fine)."""

    #: output size / input size
    scale: int = 1
    #: the LQ's height and width must be multiples of this (the inference layer pads, then crops back)
    size_multiple: int = 1
    #: smallest LQ side ``restore`` accepts (padded up to it)
    min_size: int = 1
    #: how the inference layer pads: 'reflect' (replicate where the image is too small) or 'replicate'
    pad_mode: str = "reflect"
    #: the method tiles large inputs itself (latent / VAE tiles): the inference layer does not tile
    tiles_internally: bool = False
    #: how the inference layer may tile this instance (an ``osir.core.card.Tiling``) where it differs per
    #: instance (a network a generic loader built: spandrel's descriptor); None: the method's card says
    tiling_advice = None
    #: a method that samples in steps: the most steps a call may ask for (its T), and the configured count
    #: (None: the sampler's own default); both None for a feed-forward method
    max_steps: int | None = None
    sample_steps: int | None = None

    def __init__(self):
        self.networks: dict[str, nn.Module] = {}
        self.pretrained: dict[str, str] = {}          # network -> local file or folder the method loaded
        self.pretrained_networks: dict[str, tuple[str, ...]] = {}   # record of self.pretrained -> networks it fed
        self.accelerator = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.grad_clip: float | None = None
        self.scalers: dict = {}                                # optimiser -> its own GradScaler (fp16)
        self.trained_parameters: dict[str, list[str]] = {}   # network -> names its optimisers step
        self._device = None
        self.mixed_precision = "no"
        self.output_notes: dict[str, list[str]] = {}          # set by restore, read after each batch
        self.inference_notes: list[str] = []                  # set by setup: shown once by osir restore / web

    @property
    def size_requirements(self):
        """The size contract as a value (``osir.core.card.SizeRequirements``): what the inference layer pads to."""
        from osir.core.card import SizeRequirements
        return SizeRequirements(minimum=int(self.min_size), multiple_of=int(self.size_multiple))

    def networks_without_weights(self, files: dict[str, str]) -> list[str]:
        """Networks that got weights neither from ``files`` (path.pretrained: network -> file) nor from
        what the method loaded itself (``self.pretrained`` named after the network, or a record whose
        ``self.pretrained_networks`` entry lists it)."""
        fed = set(files) | set(self.pretrained)
        fed |= {n for key in self.pretrained for n in self.pretrained_networks.get(key, ())}
        return [name for name in self.networks if name not in fed]

    # -- declarations (override as needed) ---------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Groups that ``train.optimizers.<name>.params`` may name: by default each network's
        trainable parameters under the network's name."""
        return {name: [p for p in net.parameters() if p.requires_grad] for name, net in self.networks.items()}

    def no_weight_decay(self, network: str, name: str, param: nn.Parameter) -> bool:
        """Parameters left out of weight decay when an optimiser sets ``exclude_from_weight_decay``:
        open_clip's convention (1-D gains and biases, norms, ``logit_scale``)."""
        return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    def setup(self, device: torch.device, mixed_precision: str = "no") -> None:
        """Called once before EMA copies and ``accelerator.prepare`` (and in test.py): the device
        and precision are known here.  Override (calling super) to cast frozen parts to
        ``self.weight_dtype``, enable gradient checkpointing, etc."""
        self._device, self.mixed_precision = torch.device(device), mixed_precision

    def checkpoint_state(self, name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What is saved (and resumed) of network ``name``, given its full state dict: the trained
        tensors and the buffers when the network also has frozen parameters, else everything."""
        trained = self.trained_parameters.get(name)
        net = self.unwrap(self.networks[name])
        params = {n for n, _ in net.named_parameters(remove_duplicate=False)}
        if trained is None or len(trained) == sum(1 for _ in net.parameters()):
            return state
        keep = set(trained) | {k for k in state if k not in params}   # trained tensors + buffers (norm statistics)
        return {k: v for k, v in state.items() if k in keep}

    def load_checkpoint_state(self, name: str, state: dict[str, torch.Tensor], source: str) -> None:
        """Load what ``checkpoint_state`` saved; any other keys or shapes are refused naming ``source``."""
        net = self.unwrap(self.networks[name])
        expected = self.checkpoint_state(name, net.state_dict())
        diff = describe_mismatch(expected, state)
        if diff:
            raise CheckpointError(f"'{source}' does not fit network '{name}': {diff}")
        net.load_state_dict(state, strict=len(expected) == len(net.state_dict()))

    def load_pretrained(self, name: str, path: str, strict: bool = True) -> None:
        """Load weights for network ``name`` from ``path.pretrained``: a whole state dict (osir's
        safetensors or a release file), the trained parts a checkpoint of a partly frozen network
        holds, or a diffusers / transformers folder for a network of that library (read with its
        ``from_pretrained``, offline).  Methods override this to convert official layouts."""
        net = self.networks[name]
        if Path(path).is_dir():
            loader = getattr(type(net), "from_pretrained", None)
            if loader is None:
                raise CheckpointError(f"path.pretrained.{name}: '{path}' is a folder, but network '{name}' "
                                      f"({type(net).__name__}) loads from a weights file")
            load_network(net, path, strict=strict, state=loader(path, local_files_only=True).state_dict())
            return
        state = read_state_dict(path)
        full = net.state_dict()
        params = {n for n, _ in net.named_parameters(remove_duplicate=False)}
        trainable = {n for n, p in net.named_parameters() if p.requires_grad}
        parts = trainable | {k for k in full if k not in params}          # what a trained-parts file holds
        if trainable and set(state) == parts != set(full):
            diff = describe_mismatch({k: v for k, v in full.items() if k in parts}, state)
            if diff:
                raise CheckpointError(f"'{path}' does not fit network '{name}': {diff}")
            net.load_state_dict(state, strict=False)
            return
        load_network(net, path, strict=strict, state=state)

    def prepare_training(self) -> None:
        """Called once by the trainer after ``setup`` (before any folder is written): load what only
        training needs, e.g. a loss network from local files; nothing by default."""

    def prepare_inference(self) -> None:
        """Called once by test.py after the weights are loaded, when no training follows (merge
        LoRA, drop training-only parts); nothing by default."""

    def evaluate(self, dataset, batch_size: int = 1) -> dict[str, float] | None:
        """A method-specific validation (e.g. retrieval accuracy); ``None``: the engine restores the
        dataset and scores it with the metric suite.  Runs in eval mode under ``no_grad``."""
        return None

    def whole_image_inputs(self, batch: dict) -> dict:
        """Entries computed once from the whole, unpadded LQ before ``restore_image`` pads and tiles it
        (e.g. DA-CLIP's embeddings); merged into the batch that every tile's ``restore`` gets.  They
        must not be LQ-sized tensors (those are cut into tiles).  None by default."""
        return {}

    # -- to implement -----------------------------------------------------------------------
    def save_evaluation(self, folder: Path) -> None:
        """After ``evaluate`` in test.py: write what it found beyond numbers (e.g. a confusion matrix)
        into ``folder``; nothing by default."""

    def training_step(self, batch: dict) -> dict[str, float]:
        """One micro-batch: compute losses, call ``optimize``; return scalars to log."""
        raise NotImplementedError

    def restore(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Restore ``batch['lq']`` (B x 3 x H x W in [0, 1]); the batch also holds whatever the
        dataset gives (captions, masks, degradation labels).  Returns B x 3 x sH x sW."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self.accelerator is not None:
            return self.accelerator.device
        if self._device is not None:
            return self._device
        return next((p.device for net in self.networks.values() for p in net.parameters()), torch.device("cpu"))

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype for frozen parts under the current mixed precision (float32 without it, and for
        fp16 on a CPU, where autocast does not run in fp16)."""
        dtype = _DTYPES.get(self.mixed_precision, torch.float32)
        return torch.float32 if dtype is torch.float16 and self.device.type == "cpu" else dtype

    def autocast(self):
        """Autocast to the mixed precision (a no-op without one, and for fp16 on a CPU)."""
        dtype = _DTYPES.get(self.mixed_precision)
        if dtype is None or (dtype is torch.float16 and self.device.type == "cpu"):
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def unwrap(self, net: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(net) if self.accelerator is not None else net

    def net(self, name: str) -> nn.Module:
        """Network ``name`` without its DDP wrapper (during validation it holds the EMA weights)."""
        return self.unwrap(self.networks[name])

    def attach(self, accelerator, optimizers: dict, grad_clip: float | None = None) -> None:
        """Called by the engine after ``accelerator.prepare``.  With fp16 and several optimisers each
        optimiser gets a GradScaler of its own (accelerate shares one and updates it after every
        optimiser step, so a scale change made by one optimiser's step would unscale another's
        still-accumulating gradients by a scale they were not multiplied with)."""
        self.accelerator, self.optimizers, self.grad_clip = accelerator, optimizers, grad_clip
        self.scalers = {}
        shared = getattr(accelerator, "scaler", None)
        if shared is not None and len(optimizers) > 1:
            for name, opt in optimizers.items():
                scaler = type(shared)(accelerator.device.type)
                scaler.load_state_dict(shared.state_dict())
                opt.scaler = self.scalers[name] = scaler

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` and, on the last micro-batch of an accumulation, clip and step
        optimiser ``name`` (``backward`` then ``step``)."""
        self.backward(name, loss)
        self.step(name)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` for optimiser ``name``, scaled for fp16 and gradient accumulation (a
        method that backwards a batch in pieces, e.g. gradient caching, calls this, then ``step``)."""
        acc, scaler = self.accelerator, self.scalers.get(name)
        if scaler is not None:      # what accelerator.backward does, with this optimiser's scaler
            scaler.scale(loss / acc.gradient_accumulation_steps).backward()
        else:
            acc.backward(loss)

    def step(self, name: str) -> None:
        """Clip and step optimiser ``name`` (accelerate skips the step while accumulating).  With fp16
        only this optimiser's gradients are unscaled: accelerate's ``clip_grad_norm_`` unscales every
        prepared optimiser, which corrupts another optimiser's gradients that are still accumulating
        (see tests/test_engine_precision.py)."""
        acc = self.accelerator
        opt, scaler = self.optimizers[name], self.scalers.get(name)
        if acc.sync_gradients and self.grad_clip:
            params = [p for group in opt.param_groups for p in group["params"]]
            if acc.distributed_type.value == "FSDP":   # sharded parameters: FSDP's own clipping (one optimiser)
                acc.clip_grad_norm_(params, self.grad_clip)
            else:
                if scaler is not None:
                    scaler.unscale_(opt.optimizer)
                else:
                    acc.unscale_gradients(optimizer=opt)
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
