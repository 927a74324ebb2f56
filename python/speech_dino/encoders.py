"""The speaker encoders of speech-dino in plain PyTorch, one definition for every Python user
(the golden tests, the training benchmark, PyTorch users of a trained model).

Each module mirrors its Rust counterpart in ``crates/dino-core/src/encoder`` exactly, down to
the parameter names: the state-dict keys are the Rust variable names, so a ``model.safetensors``
loads without renaming (see :mod:`speech_dino.model`). Input: normalised features
``[batch, frames, bins]``; output: embeddings ``[batch, dim]``. Configurations are the Rust
``EcapaConfig`` / ``ResNetConfig`` as dicts (the ``model.encoder`` section of a checkpoint).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Floor of the pooled variances (pooling.rs).
VARIANCE_FLOOR = 1e-5


def mean_std(x):
    """Mean and standard deviation over the last axis, concatenated (pooling.rs ``mean_std``)."""
    mean = x.mean(-1)
    var = (x * x).mean(-1) - mean * mean
    return torch.cat([mean, var.clamp_min(VARIANCE_FLOOR).sqrt()], 1)


class Conv1dBlock(nn.Module):
    """Conv1d, ReLU, batch norm (layers.rs ``Conv1dBlock``)."""

    def __init__(self, i, o, kernel, dilation):
        super().__init__()
        self.conv = nn.Conv1d(i, o, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.bn = nn.BatchNorm1d(o)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, bottleneck):
        super().__init__()
        self.squeeze = nn.Conv1d(channels, bottleneck, 1)
        self.excite = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(2, keepdim=True)))))


class Res2Conv(nn.ModuleList):
    """Res2Net's hierarchical group convolutions; children ``0 .. scale-2`` as in Rust."""

    def __init__(self, channels, scale, dilation):
        super().__init__(Conv1dBlock(channels // scale, channels // scale, 3, dilation) for _ in range(scale - 1))
        self.scale = scale

    def forward(self, x):
        groups = x.chunk(self.scale, 1)
        out, previous = [groups[0]], None
        for conv, g in zip(self, groups[1:]):
            previous = conv(g if previous is None else g + previous)
            out.append(previous)
        return torch.cat(out, 1)


class SeRes2Block(nn.Module):
    def __init__(self, config, dilation):
        super().__init__()
        c = config["channels"]
        self.pre = Conv1dBlock(c, c, 1, 1)
        self.res2 = Res2Conv(c, config["scale"], dilation)
        self.post = Conv1dBlock(c, c, 1, 1)
        self.se = SqueezeExcitation(c, config["se_bottleneck"])

    def forward(self, x):
        return self.se(self.post(self.res2(self.pre(x)))) + x


class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling with global context (pooling.rs)."""

    def __init__(self, channels, bottleneck):
        super().__init__()
        self.tdnn = Conv1dBlock(3 * channels, bottleneck, 1, 1)
        self.attention = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x):
        frames = x.shape[2]
        mean, std = mean_std(x).chunk(2, 1)
        context = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, frames), std.unsqueeze(2).expand(-1, -1, frames)], 1)
        w = torch.softmax(self.attention(torch.tanh(self.tdnn(context))), 2)
        mean = (x * w).sum(2)
        var = (x * x * w).sum(2) - mean * mean
        return torch.cat([mean, var.clamp_min(VARIANCE_FLOOR).sqrt()], 1)


class Ecapa(nn.Module):
    """ECAPA-TDNN (ecapa.rs); blocks are ``block1``, ``block2``, ... as in Rust."""

    def __init__(self, config):
        super().__init__()
        c, m = config["channels"], config["mfa_channels"]
        self.stem = Conv1dBlock(config["feat_dim"], c, 5, 1)
        self.block_names = []
        for i, d in enumerate(config["dilations"]):
            name = "block%d" % (i + 1)
            setattr(self, name, SeRes2Block(config, d))
            self.block_names.append(name)
        self.aggregation = Conv1dBlock(c * len(config["dilations"]), m, 1, 1)
        self.pooling = AttentiveStatsPooling(m, config["attention_bottleneck"])
        self.pooling_bn = nn.BatchNorm1d(2 * m)
        self.embedding = nn.Linear(2 * m, config["embedding_dim"])
        self.embedding_bn = nn.BatchNorm1d(config["embedding_dim"])

    def forward(self, feats):
        x, outputs = self.stem(feats.transpose(1, 2)), []
        for name in self.block_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        x = self.aggregation(torch.cat(outputs, 1))
        return self.embedding_bn(self.embedding(self.pooling_bn(self.pooling(x))))


class BasicBlock(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = nn.Conv2d(o, o, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)
        self.has_shortcut = stride != 1 or i != o
        if self.has_shortcut:
            self.shortcut_conv = nn.Conv2d(i, o, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(o)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        identity = self.shortcut_bn(self.shortcut_conv(x)) if self.has_shortcut else x
        return F.relu(y + identity)


class ResNet(nn.Module):
    """ResNet on the time-frequency plane (resnet.rs): stages ``stage1`` .. ``stage4``."""

    def __init__(self, config):
        super().__init__()
        c = config["base_channels"]
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c)
        channels, self.stage_names = c, []
        for stage, count in enumerate(config["blocks"]):
            out = c << stage
            blocks = []
            for i in range(count):
                blocks.append(BasicBlock(channels, out, 2 if stage > 0 and i == 0 else 1))
                channels = out
            name = "stage%d" % (stage + 1)
            setattr(self, name, nn.ModuleList(blocks))
            self.stage_names.append(name)
        freq = config["feat_dim"]
        for _ in range(3):
            freq = (freq + 1) // 2
        self.embedding = nn.Linear(2 * channels * freq, config["embedding_dim"])
        self.embedding_bn = nn.BatchNorm1d(config["embedding_dim"]) if config.get("embedding_bn", True) else None

    def forward(self, feats):
        x = F.relu(self.stem_bn(self.stem(feats.transpose(1, 2).unsqueeze(1))))
        for name in self.stage_names:
            for block in getattr(self, name):
                x = block(x)
        b, c, f, t = x.shape
        x = self.embedding(mean_std(x.reshape(b, c * f, t)))
        return x if self.embedding_bn is None else self.embedding_bn(x)


def build_encoder(config):
    """The encoder of a Rust ``EncoderConfig`` dict (``{"type": "ecapa"|"resnet", ...}``)."""
    config = dict(config)
    kind = config.pop("type")
    if kind == "ecapa":
        return Ecapa(config)
    if kind == "resnet":
        return ResNet(config)
    raise ValueError("unknown encoder type %r" % kind)
