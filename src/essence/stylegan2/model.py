"""StyleGAN2 networks (Karras et al. 2019, config E/F): mapping f, synthesis g (skip), residual discriminator.

Read top-down: equalized-lr layers, the modulated convolution (section 2.2: modulate -> convolve -> demodulate),
the synthesis layer / block / network, the mapping network, the generator (``G.mapping`` / ``G.synthesis`` as in
stylegan2-ada-pytorch), then the discriminator (residual blocks, minibatch std, epilogue).

Ablation switches (the paper's Table 1 rows): ``style_block="adain"`` (StyleGAN1's AdaIN layer, config A;
for the droplet comparison), ``demodulate=False``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from essence.stylegan2.config import ModelConfig
from essence.stylegan2.ops import conv_down2, conv_up2, downsample2d, setup_filter, upsample2d

__all__ = ["FullyConnected", "Conv2dLayer", "modulated_conv2d", "SynthesisLayer", "ToRGB", "SynthesisBlock",
           "SynthesisNetwork", "MappingNetwork", "Generator", "minibatch_std", "DiscriminatorBlock",
           "DiscriminatorEpilogue", "Discriminator", "channels_at", "num_ws"]

SQRT2 = math.sqrt(2.0)


def channels_at(res: int, cfg: ModelConfig) -> int:
    """Feature maps at resolution ``res``: min(channel_base / res, channel_max) (the ADA code's rule)."""
    return max(1, min(cfg.channel_base // res, cfg.channel_max))


def num_ws(resolution: int) -> int:
    """Style inputs of the synthesis network: 2 log2(res) - 2 (one per conv + the last ToRGB)."""
    return 2 * int(math.log2(resolution)) - 2


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) times sqrt(2) (keeps the signal's magnitude, section 2.7)."""
    return F.leaky_relu(x, 0.2) * SQRT2


# ------------------------------------------------------------------------------------------- equalized lr
class FullyConnected(nn.Module):
    """y = x (w * lr_mul / sqrt(in))^T + b * lr_mul, with w ~ N(0, 1 / lr_mul^2) (equalized learning rate)."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.activation else x


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution of the discriminator; ``down=2`` blurs then strides (section 2.3)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, bias: bool = True, activation: bool = True,
                 down: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activation, self.down, self.kernel = activation, down, kernel
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down == 2:
            x = conv_down2(x, w.to(x.dtype), self.resample_filter)
        else:
            x = F.conv2d(x, w.to(x.dtype), padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        if self.activation:
            x = lrelu(x)
        return x * gain if gain != 1.0 else x


# ----------------------------------------------------------------------------------- modulated convolution
def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, f: torch.Tensor | None = None, fused: bool = True,
                     noise: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Modulated convolution with optional weight demodulation (section 2.2, eq. 1-3).

        w'_ijk = s_i w_ijk;   w''_ijk = w'_ijk / sqrt(sum_{i,k} w'_ijk^2 + eps)

    Args:
        x: (N, I, H, W) input activations.
        weight: (O, I, k, k) base weights (already scaled by the equalized-lr gain).
        styles: (N, I) per-sample styles s.
        demodulate: divide output map j by its expected std sigma_j.
        up: 1 or 2 (transposed conv + FIR filter ``f``).
        fused: one grouped convolution with per-sample weights (groups = N); else the unfused form that scales
            the activations by s before a shared convolution and by the demodulation coefficients after it
            (equal up to float rounding; the unfused form is faster for training batches on CPUs).
        noise: (N, 1, H', W') added after demodulation (before bias), or None.

    Shape: (N, I, H, W) -> (N, O, H * up, W * up).
    """
    N, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    if styles.shape != (N, I):
        raise ValueError(f"styles must have shape ({N}, {I}), got {tuple(styles.shape)}")
    dtype = x.dtype
    dcoefs = None
    if demodulate:
        # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2: one (N, I) x (I, O) product instead of building
        # the (N, O, I, k, k) per-sample weights (equal up to float rounding; tested against eq. 3 as written)
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps).rsqrt()   # (N, O)
    if not fused:
        x = x * styles.to(dtype)[:, :, None, None]
        w = weight.to(dtype)
        x = conv_up2(x, w, f) if up == 2 else F.conv2d(x, w, padding=kh // 2)
        if dcoefs is not None:
            x = x * dcoefs.to(dtype)[:, :, None, None]
        return x + noise.to(dtype) if noise is not None else x
    w = weight[None] * styles[:, None, :, None, None]                          # (N, O, I, k, k)
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    w = w.reshape(N * O, I, kh, kw).to(dtype)
    x = x.reshape(1, N * I, H, W)
    x = conv_up2(x, w, f, groups=N) if up == 2 else F.conv2d(x, w, padding=kh // 2, groups=N)
    x = x.reshape(N, O, *x.shape[2:])
    return x + noise.to(dtype) if noise is not None else x


class SynthesisLayer(nn.Module):
    """One style block (Fig. 2c): affine A(w) -> modulated 3x3 conv (up-sampling optional) -> noise B -> bias
    -> lrelu. ``style_block='adain'`` is StyleGAN1's layer instead: conv -> noise -> bias -> lrelu -> instance
    norm -> AdaIN(y_s, y_b) (config A, kept for the droplet comparison)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: int = 1,
                 demodulate: bool = True, style_block: str = "modulated", kernel: int = 3):
        super().__init__()
        self.up, self.demodulate, self.style_block, self.resolution = up, demodulate, style_block, resolution
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        if style_block == "adain":       # styles (y_s, y_b) per output map; y_s starts at 1
            self.affine = FullyConnected(w_dim, 2 * out_ch, bias_init=0.0)
            with torch.no_grad():
                self.affine.bias[:out_ch].fill_(1.0)
        else:
            self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)    # s = A(w), bias 1 (styles ~ 1 at init)
        self.noise_strength = nn.Parameter(torch.zeros(()))              # learned scalar, starts at 0
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def _noise(self, x_shape, device, dtype, noise_mode: str) -> torch.Tensor | None:
        N = x_shape[0]
        if noise_mode == "random":
            return torch.randn(N, 1, self.resolution, self.resolution, device=device, dtype=dtype) * \
                self.noise_strength.to(dtype)
        if noise_mode == "const":   # (R, R) shared by the batch, or (N, R, R) per sample (the projector's maps)
            noise = (self.noise_const * self.noise_strength).to(dtype)
            return noise[:, None] if noise.ndim == 3 else noise[None, None]
        return None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)                                                 # (N, I) or (N, 2 O)
        noise = self._noise(x.shape, x.device, x.dtype, noise_mode)
        weight = self.weight * self.weight_gain
        if self.style_block == "adain":
            x = conv_up2(x, weight.to(x.dtype), self.resample_filter) if self.up == 2 else \
                F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
            if noise is not None:
                x = x + noise
            x = lrelu(x + self.bias.to(x.dtype)[None, :, None, None])
            x = F.instance_norm(x.float(), eps=1e-8).to(x.dtype)
            y_s, y_b = styles.to(x.dtype).chunk(2, dim=1)
            return x * y_s[:, :, None, None] + y_b[:, :, None, None]
        x = modulated_conv2d(x, weight, styles, demodulate=self.demodulate, up=self.up, f=self.resample_filter,
                             fused=fused, noise=noise)
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGB(nn.Module):
    """1x1 modulated convolution **without** demodulation, plus bias, no activation (pitfall 1 of the card)."""

    def __init__(self, in_ch: int, img_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=False, fused=fused)
        return x + self.bias.to(x.dtype)[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator (Fig. 7b): [const or conv0 (up x2)] -> conv1 -> ToRGB; the RGB so far
    is FIR-upsampled and added to this resolution's ToRGB."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_channels: int, *,
                 demodulate: bool = True, style_block: str = "modulated"):
        super().__init__()
        self.resolution = resolution
        kw = dict(demodulate=demodulate, style_block=style_block)
        if in_ch == 0:   # 4x4: a learned constant and a single convolution
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=2, **kw)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, **kw)
        self.torgb = ToRGB(out_ch, img_channels, w_dim)
        self.num_conv = 1 if in_ch == 0 else 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: str = "random", fused: bool = True,
                features: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: (N, num_conv + 1, w_dim): this block's convs, then its ToRGB (shared with the next block's conv0)
        i = 0
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        else:
            x = self.conv0(x, ws[:, i], noise_mode, fused)
            i += 1
            if features is not None:
                features.append(x)
        x = self.conv1(x, ws[:, i], noise_mode, fused)
        i += 1
        if features is not None:
            features.append(x)
        y = self.torgb(x, ws[:, i], fused)
        img = y if img is None else upsample2d(img, self.resample_filter).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """g: ws (N, num_ws, w_dim) -> images (N, C, res, res) in about [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.resolution, self.img_channels, self.w_dim = cfg.resolution, cfg.img_channels, cfg.w_dim
        self.num_ws = num_ws(cfg.resolution)
        resolutions = [2 ** i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        blocks = []
        for res in resolutions:
            in_ch = channels_at(res // 2, cfg) if res > 4 else 0
            blocks.append(SynthesisBlock(in_ch, channels_at(res, cfg), cfg.w_dim, res, cfg.img_channels,
                                         demodulate=cfg.demodulate, style_block=cfg.style_block))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused: bool | None = None,
                return_features: bool = False):
        """``fused=None``: on an accelerator, grouped convolution when not training (the stylegan2-ada rule),
        else the unfused form; on the CPU always the unfused form, which is faster there in both modes (generator
        forward in eval mode, one thread, batch 32 at 32 px, channels 64: 1.6 vs 2.3 ms per image; 1.7 vs 5.7 at
        batch 64 vs 256). ``return_features``: also return every layer's activations (for the droplet analysis)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none, got {noise_mode!r}")
        if fused is None:
            fused = not self.training and ws.device.type != "cpu"
        x = img = None
        feats: list | None = [] if return_features else None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx: w_idx + block.num_conv + 1], noise_mode=noise_mode, fused=fused,
                           features=feats)
            w_idx += block.num_conv
        return (img, feats) if return_features else img


# --------------------------------------------------------------------------------------------- mapping f
class MappingNetwork(nn.Module):
    """f: z -> w. 2nd-moment normalisation of z, ``depth`` FC layers with lr multiplier 0.01 (section 2.1);
    tracks w_avg (EMA, beta 0.995) for truncation and projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.w_dim, num_ws(cfg.resolution)
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.mapping_width] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        self.layers = nn.ModuleList(FullyConnected(a, b, lr_mul=cfg.mapping_lr_mul, activation=True)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        """(N, z_dim) -> ws (N, num_ws, w_dim); truncation w' = w_avg + psi (w - w_avg) on the first ``cutoff``
        style inputs (all when None)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (N, {self.z_dim}), got {tuple(z.shape)}")
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if psi != 1.0:
            ws = truncate(ws, self.w_avg, psi, cutoff)
        return ws


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick: ws[:, :cutoff] <- w_avg + psi (ws - w_avg) (section 2.7)."""
    ws = ws.clone()
    c = ws.shape[1] if cutoff is None else cutoff
    ws[:, :c] = w_avg.to(ws.dtype).lerp(ws[:, :c], psi)
    return ws


# -------------------------------------------------------------------------------------------- generator
class Generator(nn.Module):
    """G = g o f. ``G(z, psi=0.7)`` or ``G.synthesis(G.mapping(z))``, as in stylegan2-ada-pytorch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.w_dim, self.resolution, self.img_channels = (cfg.z_dim, cfg.w_dim, cfg.resolution,
                                                                       cfg.img_channels)
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg)

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, cutoff: int | None = None,
                noise_mode: str = "random", update_w_avg: bool = False, fused: bool | None = None) -> torch.Tensor:
        ws = self.mapping(z, psi=psi, cutoff=cutoff, update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, fused=fused)


# ---------------------------------------------------------------------------------------- discriminator
def minibatch_std(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the std over groups of ``min(group_size, N)`` samples (averaged over features and pixels) as
    ``num_channels`` extra maps. The group is the largest size <= group_size that divides N (pitfall 8).
    Shape: (N, C, H, W) -> (N, C + num_channels, H, W)."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    while N % G:
        G -= 1
    F_, c = num_channels, C // num_channels
    y = x.float().reshape(G, -1, F_, c, H, W)          # (G, n, F, c, H, W): sample g*n + i is in group i
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()        # (n, F, c, H, W)
    y = y.mean(dim=(2, 3, 4))                          # (n, F)
    y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual D block (Fig. 7c): conv3x3 -> conv3x3 (down x2), plus a 1x1 down-sampling skip, times 1/sqrt(2).
    The first block also holds FromRGB (1x1)."""

    def __init__(self, in_ch: int, tmp_ch: int, out_ch: int, img_channels: int, *, from_rgb: bool,
                 architecture: str = "resnet"):
        super().__init__()
        self.fromrgb = Conv2dLayer(img_channels, tmp_ch, 1) if from_rgb else None
        self.conv0 = Conv2dLayer(tmp_ch if from_rgb else in_ch, tmp_ch, 3)
        self.conv1 = Conv2dLayer(tmp_ch, out_ch, 3, down=2)
        self.architecture = architecture
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_ch if from_rgb else in_ch, out_ch, 1, bias=False, activation=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            return y + x
        return self.conv1(self.conv0(x))


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch std -> conv3x3 -> FC(C*16 -> C) -> FC(C -> 1)."""

    def __init__(self, in_ch: int, *, mbstd_group: int = 4, mbstd_channels: int = 1):
        super().__init__()
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = Conv2dLayer(in_ch + (mbstd_channels if mbstd_group > 0 else 0), in_ch, 3)
        self.fc = FullyConnected(in_ch * 16, in_ch, activation=True)
        self.out = FullyConnected(in_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_group > 0:
            x = minibatch_std(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    """D: images (N, C, res, res) -> logits (N, 1). Residual architecture (config E/F)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.resolution, self.img_channels = cfg.resolution, cfg.img_channels
        blocks = []
        res = cfg.resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(channels_at(res, cfg), channels_at(res, cfg), channels_at(res // 2, cfg),
                                             cfg.img_channels, from_rgb=(res == cfg.resolution),
                                             architecture=cfg.d_architecture))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        self.epilogue = DiscriminatorEpilogue(channels_at(4, cfg), mbstd_group=cfg.mbstd_group)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.resolution, self.resolution):
            raise ValueError(f"expected images (N, {self.img_channels}, {self.resolution}, {self.resolution}), "
                             f"got {tuple(img.shape)}")
        x = None
        for block in self.blocks:
            x = block(x, img)
        return self.epilogue(x)


def downsample_images(img: torch.Tensor, times: int = 1) -> torch.Tensor:
    """FIR /2 downsampling applied ``times`` times (for the projector's pyramid)."""
    f = setup_filter(device=img.device)
    for _ in range(times):
        img = downsample2d(img, f)
    return img
