"""speech-dino models in PyTorch: the encoders (ECAPA-TDNN, ResNets), the front-end
(torchaudio Kaldi fbank + mean normalisation) and a loader for ``model.safetensors``.

    from speech_dino import load_model
    model = load_model("runs/fixture/embed/model.safetensors")
    embedding = model.embed(waveform_int16_range)   # 1-D torch tensor at 16 kHz
"""

from .encoders import Ecapa, ResNet, build_encoder
from .frontend import features, fbank, normalize
from .model import Model, load_model, read_safetensors

__all__ = ["Ecapa", "ResNet", "build_encoder", "features", "fbank", "normalize", "Model", "load_model",
           "read_safetensors"]
