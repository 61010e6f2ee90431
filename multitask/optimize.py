"""Faster CPU inference for a loaded model: ``optimize_for_cpu(model, method)``.

wav2vec2 spends about a third of its arithmetic in the convolutional front end
(seven strided 1-D convolutions over the raw waveform), and PyTorch's CPU
convolutions reach a fraction of the machine's matrix-multiply rate on these
shapes; the rest is linear layers, which already run as matrix multiplies.

``method="fp32"`` (no accuracy cost: the same arithmetic, reordered)
    * every strided convolution of the front end becomes one or two matrix
      multiplies on time-major views of its input, with no ``im2col`` copy:
      a kernel ``k`` with stride ``s`` (``s < k <= 2s``) reads frame blocks of
      ``s`` frames, so output ``t`` is ``block[t] @ W[:s] + block[t+1][:k-s] @ W[s:]``;
    * the first layer's group norm (one group per channel, statistics over time)
      is folded into the first convolution: a linear map's mean and variance follow
      from the mean and covariance of its ``k``-sample input patches, so the
      normalisation costs a ``k x k`` product instead of two passes over the
      largest tensor in the network;
    * activations are applied in place; the positional convolution's weight norm
      is computed once instead of on every call.
``method="int8"``
    the ``fp32`` rewrite, then dynamic int8 quantisation (weights per output
    channel, activations per call) of every linear layer of the transformer and
    the heads. The front end stays fp32: its activations are heavy-tailed in time
    (a few loud frames set the per-tensor int8 scale, and the bulk of the frames
    falls within one or two quantisation steps); quantising its convolutions
    (they are linear layers after the rewrite) changed 50-70% of the demo model's
    predictions, against about 1% for the transformer's linear layers.

Both are inference-only transforms of a model whose weights are already loaded:
the rewritten modules hold their own copies of the weights, so do not train or
save the result (reload the model instead).

Example
-------
>>> import tempfile
>>> from multitask.model import Wav2Vec2Encoder, tiny_config
>>> folder = tempfile.mkdtemp(); tiny_config().save_pretrained(folder)
>>> encoder = Wav2Vec2Encoder(folder, save_path=folder).eval()
>>> wav = torch.randn(2, 16000)
>>> with torch.inference_mode():
...     before = encoder(wav)
...     _ = optimize_for_cpu(encoder, "fp32")
...     after = encoder(wav)
>>> bool(torch.allclose(before, after, atol=1e-4))
True
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

METHODS = ("none", "fp32", "int8")

__all__ = ["METHODS", "optimize_for_cpu", "FastFeatureEncoder", "FastPositionalConv"]


def optimize_for_cpu(target, method: str = "fp32"):
    """Rewrite ``target`` in place for fast CPU inference and return it.

    Parameters
    ----------
    target : MultitaskClassifier, MultitaskModel, Wav2Vec2Encoder or nn.Module
        Anything holding a Transformers ``Wav2Vec2Model`` (found by attribute
        ``feature_extractor``); a classifier's ``mods`` are rewritten.
    method : str
        ``"none"``, ``"fp32"`` (exact up to rounding) or ``"int8"`` (see module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "none":
        return target
    root = getattr(target, "mods", target)  # a SpeechBrain Pretrained keeps modules in .mods
    for module in list(root.modules()):
        if hasattr(module, "feature_extractor") and hasattr(module, "encoder") and hasattr(
            module.encoder, "pos_conv_embed"
        ):
            _rewrite_wav2vec2(module)
    root.eval()
    if method == "int8":
        _quantize_linear_layers(root)
    return target


def _rewrite_wav2vec2(model) -> None:
    if not isinstance(model.feature_extractor, FastFeatureEncoder):
        model.feature_extractor = FastFeatureEncoder(model.feature_extractor)
    pos = model.encoder.pos_conv_embed
    if not isinstance(pos, FastPositionalConv):
        model.encoder.pos_conv_embed = FastPositionalConv(pos)


def _quantize_linear_layers(root: nn.Module) -> None:
    """Dynamic int8 for every ``nn.Linear`` outside the conv front end."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    front_ends = [name for name, m in root.named_modules() if isinstance(m, FastFeatureEncoder)]
    names = {
        name: per_channel_dynamic_qconfig
        for name, m in root.named_modules()
        if type(m) is nn.Linear and not any(name.startswith(f + ".") for f in front_ends)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        quantize_dynamic(root, names, inplace=True)


def _gelu_inplace(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_(x)


def _activation(module: nn.Module):
    """The in-place version of Transformers' exact GELU, else the module itself."""
    if type(module).__name__ == "GELUActivation" and not getattr(module, "use_gelu_python", False):
        return _gelu_inplace
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return _gelu_inplace
    return module


class StridedConvAsLinear(nn.Module):
    """A 1-D convolution over time-major input ``[batch, time, channels]`` as linear layers.

    With kernel ``k`` and stride ``s``, output frame ``t`` reads input frames
    ``s*t ... s*t+k-1``. Split the kernel into pieces of at most ``s`` frames: piece
    ``j`` reads a ``[frames, width_j * channels]`` view of the input whose rows are
    ``s * channels`` apart, a valid matrix operand without any copy. Each piece is an
    ``nn.Linear`` (so dynamic quantisation applies to it); the first carries the bias.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or conv.padding[0] != 0:
            raise ValueError("only ungrouped, undilated, unpadded convolutions")
        out_ch, in_ch, kernel = conv.weight.shape
        self.kernel, self.stride, self.in_channels = kernel, conv.stride[0], in_ch
        self.pieces = nn.ModuleList()
        weight = conv.weight.detach()
        for start in range(0, kernel, self.stride):
            width = min(self.stride, kernel - start)
            piece = nn.Linear(width * in_ch, out_ch, bias=start == 0 and conv.bias is not None)
            # [out, in, k] -> [out, k, in]: time-major rows hold frame after frame.
            piece.weight.data.copy_(weight[:, :, start:start + width].permute(0, 2, 1).reshape(out_ch, -1))
            if piece.bias is not None:
                piece.bias.data.copy_(conv.bias.detach())
            self.pieces.append(piece)

    def output_frames(self, frames: int) -> int:
        return (frames - self.kernel) // self.stride + 1

    def _views(self, x: torch.Tensor, frames_out: int):
        channels = self.in_channels
        for index, piece in enumerate(self.pieces):
            width = piece.in_features
            yield piece, x.as_strided(
                (frames_out, width), (self.stride * channels, 1),
                x.storage_offset() + index * self.stride * channels,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        x = x.contiguous()
        frames_out = self.output_frames(frames)
        plain = all(type(p) is nn.Linear for p in self.pieces)
        if plain and not torch.is_grad_enabled():
            out = x.new_empty(batch, frames_out, self.pieces[0].out_features)
            for b in range(batch):
                for index, (piece, view) in enumerate(self._views(x[b], frames_out)):
                    if index == 0:
                        if piece.bias is None:
                            torch.mm(view, piece.weight.t(), out=out[b])
                        else:
                            torch.addmm(piece.bias, view, piece.weight.t(), out=out[b])
                    else:
                        out[b].addmm_(view, piece.weight.t())
            return out
        rows = []
        for b in range(batch):
            total = None
            for piece, view in self._views(x[b], frames_out):
                y = piece(view.contiguous())
                total = y if total is None else total.add_(y)
            rows.append(total)
        return torch.stack(rows)


class GroupNormConv0(nn.Module):
    """wav2vec2's first layer (conv over samples, one-group-per-channel norm, GELU), fused.

    For ``y_c = w_c . p_t + b_c`` over patches ``p_t``, the per-utterance mean and
    variance over time are ``w_c . mean(p) + b_c`` and ``w_c^T Cov(p) w_c``; the
    normalised output is then one linear map with per-utterance weights and bias.
    Statistics are taken in float64 (the patch covariance is only ``k x k``).
    """

    def __init__(self, layer):
        super().__init__()
        conv, norm = layer.conv, layer.layer_norm
        if conv.in_channels != 1 or norm.num_groups != norm.num_channels:
            raise ValueError("expected wav2vec2's group-norm first layer")
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.register_buffer("weight", conv.weight.detach()[:, 0, :].clone())  # [out, k]
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias)
        self.register_buffer("gamma", norm.weight.detach().clone())
        self.register_buffer("beta", norm.bias.detach().clone())
        self.eps = norm.eps
        self.activation = _activation(layer.activation)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` → ``[batch, frames, channels]``."""
        wav = wav.contiguous()
        batch, samples = wav.shape
        frames = (samples - self.kernel) // self.stride + 1
        out = wav.new_empty(batch, frames, self.weight.shape[0])
        w64 = self.weight.double()
        for b in range(batch):
            patches = wav[b].as_strided((frames, self.kernel), (self.stride, 1), wav[b].storage_offset())
            p64 = patches.double()
            mean_p = p64.mean(0)
            centred = p64 - mean_p
            cov = centred.t() @ centred / frames
            mean = w64 @ mean_p + self.bias.double()
            var = ((w64 @ cov) * w64).sum(1)
            scale = self.gamma.double() / torch.sqrt(var + self.eps)
            weight = (w64 * scale[:, None]).to(wav.dtype)
            bias = (self.beta.double() + (self.bias.double() - mean) * scale).to(wav.dtype)
            torch.addmm(bias, patches, weight.t(), out=out[b])
        return self.activation(out)


class FastFeatureEncoder(nn.Module):
    """Drop-in for Transformers' ``Wav2Vec2FeatureEncoder``, computed time-major.

    Returns ``[batch, channels, frames]`` as the original does, as a transposed view
    of a contiguous ``[batch, frames, channels]`` tensor, so ``Wav2Vec2Model``'s own
    transpose gives back the contiguous layout its projection reads.
    """

    def __init__(self, encoder):
        super().__init__()
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.activations = []
        self.first = None
        for index, layer in enumerate(encoder.conv_layers):
            kind = type(layer).__name__
            if index == 0 and kind.endswith("GroupNormConvLayer"):
                self.first = GroupNormConv0(layer)
                continue
            self.layers.append(StridedConvAsLinear(layer.conv))
            self.norms.append(layer.layer_norm if kind.endswith("LayerNormConvLayer") and
                              not kind.endswith("NoLayerNormConvLayer") else nn.Identity())
            self.activations.append(_activation(layer.activation))
        self._requires_grad = False

    def _freeze_parameters(self):
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if self.first is not None:
            hidden = self.first(input_values)
        else:
            hidden = input_values[:, :, None]
        for layer, norm, activation in zip(self.layers, self.norms, self.activations, strict=True):
            hidden = activation(norm(layer(hidden)))
        return hidden.transpose(1, 2)


class FastPositionalConv(nn.Module):
    """Transformers' positional convolution with its weight norm computed once."""

    def __init__(self, pos):
        super().__init__()
        conv = pos.conv
        with torch.no_grad():
            weight = conv.weight.detach().clone()  # the weight-normed weight, evaluated
        self.conv = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size[0],
                              padding=conv.padding[0], groups=conv.groups)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(conv.bias.detach())
        self.remove = pos.padding.num_pad_remove
        self.activation = _activation(pos.activation)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.conv(hidden.transpose(1, 2))
        if self.remove:
            out = out[:, :, : -self.remove]
        out = out.transpose(1, 2).contiguous()
        return self.activation(out)
