"""The front-end of a speech-dino model in PyTorch: Kaldi filterbanks of a waveform with
torchaudio's ``compliance.kaldi.fbank`` and the model's mean normalisation, as
``crates/dino-core/src/features.rs`` computes them.

Input: a mono waveform at the model's sample rate (16 kHz by default) **in the int16 range**
(samples as integers -32768..32767, as float; multiply a [-1, 1) waveform by 32768), already
VAD-trimmed as the model's ``audio`` options say (``speech_dino.model.Model.audio``).
Output: features ``[frames, bins]`` for the encoder.

Normalisation: ``cmn`` subtracts the per-utterance mean; ``stmn`` (hyperion's short-time mean
normalisation) first subtracts the utterance mean, then the mean of a sliding window of
``left_context + right_context + 1`` frames over the reflection-padded centred features,
computed from float64 cumulative sums as the Rust code does; utterances no longer than the
window get the plain CMN.
"""

import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi


def fbank(waveform, options):
    """Kaldi fbank ``[frames, bins]`` of a 1-D int16-range waveform with the Rust
    ``FbankOptions`` dict ``options`` (dither is always 0)."""
    return kaldi.fbank(
        waveform.reshape(1, -1).to(torch.float32),
        sample_frequency=float(options["sample_rate"]),
        num_mel_bins=options["num_mel_bins"],
        frame_length=options["frame_length_ms"],
        frame_shift=options["frame_shift_ms"],
        window_type=options["window_type"],
        preemphasis_coefficient=options["preemphasis"],
        remove_dc_offset=options["remove_dc_offset"],
        low_freq=options["low_freq"],
        high_freq=options["high_freq"],
        snip_edges=options["snip_edges"],
        use_energy=options["use_energy"],
        raw_energy=options["raw_energy"],
        energy_floor=options["energy_floor"],
        dither=0.0,
        round_to_power_of_two=options["round_to_power_of_two"],
        use_power=options["use_power"],
        use_log_fbank=options["use_log_fbank"],
    )


def cmn(feats):
    """Per-utterance mean normalisation of ``[..., frames, bins]``."""
    return feats - feats.mean(-2, keepdim=True)


def stmn(feats, left_context=150, right_context=150):
    """hyperion's sliding-window STMN of ``[batch, frames, bins]`` (normalize.rs ``stmn_tch``)."""
    frames = feats.shape[1]
    window = left_context + right_context + 1
    centred = cmn(feats)
    if frames <= window or (left_context == 0 and right_context == 0):
        return centred
    padded = F.pad(centred.transpose(1, 2), (left_context, right_context), mode="reflect").transpose(1, 2)
    cumsum = padded.double().cumsum(1)
    total = padded.shape[1]
    n = total - window + 1
    sums = cumsum[:, window - 1:window - 1 + n] - cumsum[:, :n]
    return (centred.double() - sums / window).to(feats.dtype)


def normalize(feats, normalization):
    """The Rust ``Normalization`` dict (``{"type": "none"|"cmn"|"stmn", ...}``) applied to
    ``[batch, frames, bins]``."""
    kind = normalization["type"]
    if kind == "none":
        return feats
    if kind == "cmn":
        return cmn(feats)
    if kind == "stmn":
        return stmn(feats, normalization["left_context"], normalization["right_context"])
    raise ValueError("unknown normalisation %r" % kind)


def features(waveform, config):
    """Normalised features ``[frames, bins]`` of one waveform with the Rust ``FeatureConfig``
    dict ``config`` (``{"fbank": ..., "normalization": ...}``)."""
    return normalize(fbank(waveform, config["fbank"]).unsqueeze(0), config["normalization"])[0]
