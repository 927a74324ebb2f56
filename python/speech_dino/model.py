"""Loading a speech-dino ``model.safetensors`` (from ``dino-core bundle``, or any checkpoint)
into the PyTorch encoders of :mod:`speech_dino.encoders`, without the ``safetensors`` package.

The file's metadata entry ``speech_dino`` holds the checkpoint description (encoder and
feature configuration, the prefix of the embedding encoder's tensors); the entry
``speech_dino_application`` (model files only) holds the decoding/VAD options the training
audio was prepared with, the training-set embedding mean, and the provenance.
"""

import json
import struct

import numpy as np
import torch

from .encoders import build_encoder
from .frontend import features

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """The tensors (as torch tensors) and the metadata dict of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, metadata


class Model:
    """A trained speech-dino encoder in PyTorch, in evaluation mode."""

    def __init__(self, path):
        tensors, metadata = read_safetensors(path)
        self.meta = json.loads(metadata["speech_dino"])
        application = metadata.get("speech_dino_application")
        self.application = json.loads(application) if application else None
        spec = self.meta["embedding"]
        self.feature_config = spec["features"]
        self.encoder = build_encoder(spec["encoder"])
        prefix = self.meta["embedding_prefix"]
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError("%s: missing %s, unexpected %s" % (path, missing, unexpected))
        self.encoder.eval()

    @property
    def audio(self):
        """The ``prepare`` options of the training audio (sample rate, VAD), if recorded."""
        return self.application["audio"] if self.application else None

    def features(self, waveform):
        """Normalised features ``[frames, bins]`` of a 1-D int16-range waveform."""
        return features(waveform, self.feature_config)

    @torch.no_grad()
    def embed(self, waveform):
        """The embedding ``[dim]`` of a 1-D int16-range waveform (VAD-trimmed as ``audio``)."""
        return self.encoder(self.features(waveform).unsqueeze(0))[0]

    def score(self, a, b, length_norm=False):
        """Cosine score of two embeddings as ``eval-sv`` scores them: the training-set mean
        subtracted (model files only), optionally after length normalisation."""
        def prepare(x):
            x = x.double()
            if length_norm:
                x = x / x.norm()
            if self.application:
                mean = self.application["mean"]["length_normed" if length_norm else "raw"]
                x = x - torch.tensor(mean, dtype=torch.float64)
            return x / x.norm()
        return float(prepare(a) @ prepare(b))


def load_model(path):
    """Loads ``path`` (a model file or a checkpoint) as a :class:`Model`."""
    return Model(path)
