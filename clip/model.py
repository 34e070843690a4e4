"""CLIP's model, with OpenAI's class and parameter names, rebuilt from a state dict's shapes.

Same modules and state-dict keys as OpenAI's ``clip/model.py``, so a released
state dict loads with ``strict=True``. Additions: ``infer_config`` (the pure
shape reading that ``build_model`` uses), ``CLIP.encode_image_dense`` (per-location
image embeddings) and text inputs shorter than the context length.
Attention runs through PyTorch's scaled-dot-product attention.
"""
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CheckpointFormatError(ValueError):
    """A state dict that is not a CLIP state dict."""


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        # all convs stride 1; an avgpool follows the second conv when stride > 1
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * Bottleneck.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu3(out)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean feature (plus position) attends over all locations."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def _pool(self, x):
        """x [B, C, H, W] -> (pooled [B, E], values [B, 1 + HW, C])."""
        x = x.flatten(start_dim=2).permute(0, 2, 1)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [B, 1 + HW, C]
        x = x + self.positional_embedding[None].to(x.dtype)
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        q = self.q_proj(x[:, :1])  # [B, 1, C]
        k = self.k_proj(x)  # [B, 1 + HW, C]
        v = self.v_proj(x)  # [B, 1 + HW, C]

        def heads(t):
            return t.reshape(batch, t.shape[1], self.num_heads, head_dim).transpose(1, 2)  # [B, h, L, d]

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # [B, h, 1, d]
        out = out.transpose(1, 2).reshape(batch, width)  # [B, C]
        return self.c_proj(out), v  # [B, E], [B, 1 + HW, C]

    def forward(self, x):
        return self._pool(x)[0]

    def forward_dense(self, x):
        """x [B, C, H, W] -> (pooled [B, E], dense [B, HW, E] = c_proj(v_proj(x + pos)) per location)."""
        pooled, v = self._pool(x)
        return pooled, self.c_proj(v[:, 1:])


class ModifiedResNet(nn.Module):
    """ResNet with a 3-conv stem, anti-aliased (avgpool) strides and attention pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution

        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width  # mutable, used by _make_layer
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        for _ in range(1, blocks):
            layers.append(Bottleneck(self._inplanes, planes))
        return nn.Sequential(*layers)

    def stem(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def features(self, x):
        """Image [B, 3, R, R] -> feature map [B, 32 * width, R / 32, R / 32]."""
        x = x.type(self.conv1.weight.dtype)
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x):
        return self.attnpool(self.features(x))  # [B, E]

    def forward_dense(self, x):
        return self.attnpool.forward_dense(self.features(x))  # [B, E], [B, HW, E]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (handles fp16 inputs), returned in the input's dtype."""

    def forward(self, x):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask  # [n_ctx, n_ctx] additive mask or None; not a parameter

    def attention(self, x):
        """x [L, N, D] (sequence first, as OpenAI's); need_weights=False routes to SDPA."""
        mask = self.attn_mask
        if mask is not None:
            length = x.shape[0]
            mask = mask[:length, :length].to(dtype=x.dtype, device=x.device)  # causal, cut to the input
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """Stack of residual attention blocks on [L, N, D] inputs."""

    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)

        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x):
        """Image [B, 3, R, R] -> transformer output [B, 1 + HW, width] (class token first)."""
        x = self.conv1(x)  # [B, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, HW, width]
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)  # [B, 1 + HW, width]
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2))  # NLD -> LND
        return x.permute(1, 0, 2)  # [B, 1 + HW, width]

    def _head(self, x):
        x = self.ln_post(x)
        return x @ self.proj if self.proj is not None else x

    def forward(self, x):
        return self._head(self.tokens(x)[:, 0, :])  # [B, E]

    def forward_dense(self, x):
        x = self.tokens(x)
        return self._head(x[:, 0, :]), self._head(x[:, 1:, :])  # [B, E], [B, HW, E]


class CLIP(nn.Module):
    def __init__(self,
                 embed_dim: int,
                 # vision
                 image_resolution: int,
                 vision_layers,  # tuple of 4 ints (ResNet) or int (ViT)
                 vision_width: int,
                 vision_patch_size,  # int (ViT) or None (ResNet)
                 # text
                 context_length: int,
                 vocab_size: int,
                 transformer_width: int,
                 transformer_heads: int,
                 transformer_layers: int):
        super().__init__()
        self.context_length = context_length

        if isinstance(vision_layers, (tuple, list)):
            vision_heads = vision_width * 32 // 64
            self.visual = ModifiedResNet(layers=vision_layers, output_dim=embed_dim, heads=vision_heads,
                                         input_resolution=image_resolution, width=vision_width)
        else:
            vision_heads = vision_width // 64
            self.visual = VisionTransformer(input_resolution=image_resolution, patch_size=vision_patch_size,
                                            width=vision_width, layers=vision_layers, heads=vision_heads,
                                            output_dim=embed_dim)

        self.transformer = Transformer(width=transformer_width, layers=transformer_layers, heads=transformer_heads,
                                       attn_mask=self.build_attention_mask())
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

        if isinstance(self.visual, ModifiedResNet):
            if self.visual.attnpool is not None:
                std = self.visual.attnpool.c_proj.in_features ** -0.5
                for proj in (self.visual.attnpool.q_proj, self.visual.attnpool.k_proj,
                             self.visual.attnpool.v_proj, self.visual.attnpool.c_proj):
                    nn.init.normal_(proj.weight, std=std)
            for resnet_block in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in resnet_block.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)

        proj_std = (self.transformer.width ** -0.5) * ((2 * self.transformer.layers) ** -0.5)
        attn_std = self.transformer.width ** -0.5
        fc_std = (2 * self.transformer.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

        if self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def build_attention_mask(self):
        # additive causal mask: -inf above the diagonal
        mask = torch.empty(self.context_length, self.context_length)  # [n_ctx, n_ctx]
        mask.fill_(float("-inf"))
        mask.triu_(1)
        return mask

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        """Image [B, 3, R, R] -> embedding [B, E] (not normalised)."""
        return self.visual(image.type(self.dtype))

    def encode_image_dense(self, image):
        """Image [B, 3, R, R] -> (pooled [B, E], dense [B, HW, E]), neither normalised.

        ``pooled`` equals ``encode_image(image)``. ``dense`` holds one embedding per
        location of the final feature grid (row-major, HW = (R / patch)^2 for ViT,
        (R / 32)^2 for ResNets) in the same joint space:
        ViT: the patch tokens through ``ln_post`` and ``proj``;
        ResNet: ``c_proj(v_proj(x + pos))`` per location, i.e. the attention pool's
        value and output projections without the attention (as MaskCLIP).
        """
        return self.visual.forward_dense(image.type(self.dtype))

    def encode_text(self, text):
        """Token ids [N, L] (L <= context_length, end-of-text = largest id) -> embedding [N, E].

        The sequence is cut after the longest end-of-text position of the batch. That is exact:
        attention is causal and the output is read at the end-of-text token, so later positions
        cannot change it. Finding the cut costs one device-to-host sync per call, and a traced
        ``encode_text`` would keep the length of its example input.
        """
        if text.shape[0]:  # an empty batch keeps its columns: [0, E] out, as OpenAI's
            text = text[:, :int(text.argmax(dim=-1).max()) + 1]
        length = text.shape[-1]
        x = self.token_embedding(text).type(self.dtype)  # [N, L, D]
        x = x + self.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        # features at the end-of-text token (the highest id in each sequence)
        return x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)] @ self.text_projection  # [N, E]

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logit_scale = self.logit_scale.exp()
        logits_per_image = logit_scale * image_features @ text_features.t()  # [B, N]
        logits_per_text = logits_per_image.t()  # [N, B]
        return logits_per_image, logits_per_text


def convert_weights(model: nn.Module):
    """Convert applicable parameters to fp16 (convolutions, linears, attention, projections), as OpenAI's."""

    def _convert_weights_to_fp16(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for attr in [*[f"{s}_proj_weight" for s in ["in", "q", "k", "v"]], "in_proj_bias", "bias_k", "bias_v"]:
                tensor = getattr(module, attr)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in ["text_projection", "proj"]:
            attr = getattr(module, name, None)
            if isinstance(attr, torch.Tensor):
                attr.data = attr.data.half()

    model.apply(_convert_weights_to_fp16)


# Keys every CLIP state dict has, and those of each image tower.
TEXT_KEYS = ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")
VIT_KEYS = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding")
RESNET_KEYS = ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding")
EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # in released archives, not parameters


def _grid_size(rows, what):
    """k of a positional embedding of ``rows`` = k * k + 1 rows (a k × k grid and the class token)."""
    root = round(max(rows - 1, 0) ** 0.5)
    if root * root + 1 != rows:
        raise CheckpointFormatError(f"{what} has {rows} rows: expected a square grid plus one (k * k + 1)")
    return root


def infer_config(state_dict):
    """CLIP constructor kwargs read from a state dict's key names and shapes alone (as OpenAI's build_model)."""
    vit = "visual.proj" in state_dict
    required = TEXT_KEYS + (VIT_KEYS if vit else RESNET_KEYS)
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointFormatError(
            f"not a CLIP state dict: missing {', '.join(missing)} (expected OpenAI's CLIP key names, "
            f"e.g. {', '.join(TEXT_KEYS + VIT_KEYS)} for a ViT or {', '.join(RESNET_KEYS)} for a ResNet)")

    if vit:
        vision_width = state_dict["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        vision_patch_size = state_dict["visual.conv1.weight"].shape[-1]
        grid_size = _grid_size(state_dict["visual.positional_embedding"].shape[0], "visual.positional_embedding")
        image_resolution = vision_patch_size * grid_size
        if vision_width < 64:
            raise CheckpointFormatError(
                f"visual width {vision_width}: a CLIP ViT has width // 64 attention heads, so at least 64 is expected")
    else:
        vision_layers = tuple(len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")})
                              for b in (1, 2, 3, 4))
        vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        output_width = _grid_size(state_dict["visual.attnpool.positional_embedding"].shape[0],
                                  "visual.attnpool.positional_embedding")
        vision_patch_size = None
        image_resolution = output_width * 32
        if 0 in vision_layers:
            raise CheckpointFormatError(f"ResNet blocks per stage {vision_layers}: expected at least one in each")

    transformer_width = state_dict["ln_final.weight"].shape[0]
    transformer_heads = transformer_width // 64
    if transformer_heads == 0:
        raise CheckpointFormatError(
            f"text width {transformer_width}: CLIP's text transformer has width // 64 heads, "
            f"so at least 64 is expected")
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_heads,
        transformer_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
    )


def build_model(state_dict: dict, fp16: bool = True, device="cpu"):
    """CLIP in eval mode on ``device`` with the architecture read from ``state_dict`` and its weights
    loaded (strict).

    ``fp16=True`` (OpenAI's behaviour) converts the weights with ``convert_weights``;
    ``fp16=False`` keeps everything fp32. The given dict is not modified. On a GPU the tensors
    cross the bus as they are stored (fp16 in OpenAI's checkpoints) and are converted there.
    """
    config = infer_config(state_dict)
    device = torch.device(device)

    def own_copy(tensor):  # fp32 copies on the device that become the model's tensors: never the caller's
        if device.type == "cpu":
            return tensor.to(torch.float32, copy=True) if tensor.is_floating_point() else tensor.clone()
        tensor = tensor.to(device, copy=True)
        return tensor.float() if tensor.is_floating_point() else tensor
    state_dict = {k: own_copy(v) for k, v in state_dict.items() if k not in EXTRA_KEYS}
    with torch.device("meta"):  # no memory and no random initialisation: every tensor comes from the state dict
        model = CLIP(**config)
    mask = model.build_attention_mask().to(device)  # the text causal mask: an attribute, not in the dict
    for block in model.transformer.resblocks:
        block.attn_mask = mask
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointFormatError(f"state dict does not fit the CLIP architecture read from it: {error}") from None
    if fp16:
        convert_weights(model)
    return model.eval()
