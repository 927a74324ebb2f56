//! `cargo xtask bench train`: the DINO pretraining step and embedding extraction against a
//! PyTorch reference run in the same process run, with the same number of threads on both
//! sides (libtorch's intra-op threads, `OMP_NUM_THREADS` or the number of cores; the reference
//! gets it through `torch.set_num_threads`).
//!
//! The step is the real one: [`pretrain::run`] on the prepared fixture corpus, with the
//! loader cutting and augmenting (noise + reverberation) crops in background threads, fbank
//! features computed in the step, ECAPA-TDNN (C = 512) student and teacher, the DINO head
//! (K = 65536), the DINO loss with centring, Adam (AMSGrad) on every parameter and the EMA
//! teacher update; batch 8 with 2 global crops of 3 s and 4 local crops of 2 s. Step times and
//! the share of each step spent waiting for the loader come from the run's step log, after a
//! few warm-up steps. The reference script builds the same architecture layer for layer (the
//! parameter counts must agree, which is checked) and runs the same step on random waveforms
//! of the same shapes, without any data loading, which favours it.
//!
//! Embedding extraction is [`embed::run`] (default settings) of the trained teacher's encoder
//! over the fixture's held-out utterances, against the same features and encoder in PyTorch
//! (eval mode, no gradient) on batches of the same shapes (utterances of similar length
//! batched together, trimmed to the shortest). The reference times only its forward passes;
//! our end-to-end time also loads the checkpoint, reads the audio cache and writes
//! `embeddings.h5`, so the encoding time alone (`EmbedReport::encode_seconds`) is printed too.
//!
//! Besides wall time, each side reports its process CPU time (all threads): on a machine
//! shared with other work, wall time mostly measures who got the cores, CPU time rather the
//! work done (OpenMP threads spinning while a sibling waits for a core inflate it too). The
//! Rust CPU time includes the loader threads' cropping and augmentation, which the reference
//! does not do. Our embedding passes run on either side of the reference run, and the
//! fastest of each side counts, against load that drifts during the benchmark; the load
//! average is printed.
//!
//! Goal: the Rust step at least as fast as PyTorch's, and the loader wait under 5 % of it.

#[allow(dead_code)] // the fixture of the tests; the benchmark reads only some of its paths
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dino_core::checkpoint;
use dino_core::embed::{self, EmbedConfig};
use dino_core::encoder::{EncoderConfig, parameter_count};
use dino_core::model::{Network, encoder_only};
use dino_core::monitor::StepRecord;
use dino_core::pretrain::{self, PretrainConfig, PretrainPaths, StopAt};
use dino_core::training;
use feature_extract::cache::AudioCache;
use serde::Deserialize;
use stage_kit::timings::{fastest, median};
use tch::Device;

/// Steps run before the timed ones (allocator, kernel selection, loader start-up).
const WARMUP_STEPS: usize = 2;
/// Steps timed on each side.
const TIMED_STEPS: usize = 4;
/// Utterances per step.
const BATCH: usize = 8;
/// The encoder: ECAPA-TDNN with C = 512.
const ENCODER: &str = "ecapa-512";
/// Embedding passes per side; the fastest counts.
const EMBED_PASSES: usize = 2;

/// The reference: ECAPA-TDNN (from the repository's `python/speech_dino` package, argv[2]),
/// the DINO head and loss, Adam and the EMA update in PyTorch, mirroring `head.rs`,
/// `loss.rs`, `optim.rs`, `model.rs` and `features.rs`. Reads the settings as JSON from
/// argv[1]; prints as JSON the
/// parameter counts, the wall seconds of every timed step, the CPU seconds of all of them, and
/// the wall and CPU seconds of every embedding pass.
const REFERENCE: &str = r#"
import copy, json, math, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
from torchaudio.compliance.kaldi import get_mel_banks

# The encoder and STMN: the package's one PyTorch definition (python/speech_dino), the same
# the model loader and the golden tests use.
sys.path.insert(0, sys.argv[2])
from speech_dino.encoders import Ecapa
from speech_dino.frontend import stmn

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(1)
RATE = 16000

# features.rs: Kaldi fbank as batched tensor operations (25/10 ms, povey, pre-emphasis 0.97,
# 512-point power spectrum, 80 mel bins from 20 Hz, log), batched, then hyperion's STMN
# (301 frames, plain mean normalisation for shorter inputs).
WINDOW = torch.hann_window(400, periodic=False).pow(0.85)
MEL_T = F.pad(get_mel_banks(80, 512, float(RATE), 20.0, 0.0, 100.0, -500.0, 1.0)[0], (0, 1)).t().contiguous()
EPS = torch.finfo(torch.float32).eps

def fbank(x):
    f = x.unfold(1, 400, 160)
    f = f - f.mean(-1, keepdim=True)
    f = f - 0.97 * torch.cat([f[..., :1], f[..., :-1]], -1)
    spectrum = torch.fft.rfft(f * WINDOW, n=512).abs().square()
    return (spectrum @ MEL_T).clamp_min(EPS).log()

def features(x):
    return stmn(fbank(x))


# head.rs: MLP (GELU, no batch norm), L2 normalisation, weight-normalised last layer (gain 1).
class DinoHead(nn.Module):
    def __init__(s, i, h):
        super().__init__()
        dims = [i] + [h["hidden_dim"]] * (h["layers"] - 1) + [h["bottleneck_dim"]]
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        s.mlp = nn.Sequential(*layers[:-1])
        bound = h["bottleneck_dim"] ** -0.5
        s.last_v = nn.Parameter(torch.empty(h["out_dim"], h["bottleneck_dim"]).uniform_(-bound, bound))
    def forward(s, x):
        return F.normalize(s.mlp(x), dim=1) @ F.normalize(s.last_v, dim=1).t()

class Network(nn.Module):
    def __init__(s, model):
        super().__init__()
        s.encoder = Ecapa(model["encoder"])
        s.head = DinoHead(model["encoder"]["embedding_dim"], model["head"])
    def forward(s, x):
        return s.head(s.encoder(x))

def count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

# loss.rs: cross-entropy of each teacher view's centred, sharpened targets with every other
# student view; teacher statistics for the collapse monitor; EMA of the centre.
class DinoLoss:
    def __init__(s, l, k):
        s.l, s.center = l, torch.zeros(1, k)
    def __call__(s, student, teacher, student_views, teacher_views, temp):
        log_p = F.log_softmax(student / s.l["student_temp"], -1).chunk(student_views)
        teacher = teacher.detach()
        targets = F.softmax((teacher - s.center) / temp, -1)
        total, pairs = 0.0, 0
        for iq, q in enumerate(targets.chunk(teacher_views)):
            for v, p in enumerate(log_p):
                if v != iq:
                    total = total + (-q * p).sum(-1).mean()
                    pairs += 1
        with torch.no_grad():
            entropy = lambda q: (-(q * q.clamp_min(1e-12).log())).sum(-1).mean().item()
            stats = (entropy(targets), entropy(targets.mean(0, keepdim=True)), s.center.norm().item())
            m = s.l["center_momentum"]
            s.center = s.center * m + teacher.mean(0, keepdim=True) * (1 - m)
        return total / pairs, stats

def train_steps():
    c, model = cfg["config"], cfg["config"]["model"]
    student = Network(model)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = list(student.parameters())
    o = c["optim"]
    # optim.rs: Adam with coupled L2 decay on parameters of two or more dimensions only.
    opt = torch.optim.Adam(
        [{"params": [p for p in params if p.dim() > 1], "weight_decay": o["weight_decay"]},
         {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
        lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], amsgrad=o["amsgrad"])
    crops, loss = c["crops"], c["loss"]
    dino_loss = DinoLoss(loss, model["head"]["out_dim"])
    views = crops["global_crops"] + crops["local_crops"]
    b = cfg["batch"]
    globals_ = torch.randn(crops["global_crops"] * b, cfg["global_samples"]) * 1000
    locals_ = torch.randn(crops["local_crops"] * b, cfg["local_samples"]) * 1000
    momentum = c["teacher_momentum"][0]
    wall = []
    for step in range(cfg["warmup"] + cfg["steps"]):
        if step == cfg["warmup"]:
            cpu = time.process_time()
        started = time.perf_counter()
        g, l = features(globals_), features(locals_)
        with torch.no_grad():
            teacher_out = teacher(g)  # training mode: batch statistics, as model.rs
        student_out = torch.cat([student(g), student(l)])
        value, _ = dino_loss(student_out, teacher_out, views, crops["global_crops"], loss["teacher_temp"])
        assert math.isfinite(value.item()), "the loss is not finite"
        opt.zero_grad()
        value.backward()
        torch.stack([p.grad.norm() for p in params if p.grad is not None]).norm().item()  # logged
        opt.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.mul_(momentum).add_((1 - momentum) * s.detach())
        if step >= cfg["warmup"]:
            wall.append(time.perf_counter() - started)
    return student, wall, time.process_time() - cpu

def embed_pass(encoder):
    encoder.eval()
    # embed.rs: utterances sorted by length; a batch holds those within length_tolerance of
    # its shortest, trimmed to it, up to max_batch_seconds of audio.
    batches, most = [], int(cfg["max_batch_seconds"] * RATE)
    for n in sorted(cfg["embed_lengths"]):
        if batches and n <= batches[-1][1] * (1 + cfg["length_tolerance"]) \
                and (batches[-1][0] + 1) * batches[-1][1] <= max(most, batches[-1][1]):
            batches[-1][0] += 1
        else:
            batches.append([1, n])
    audio = [torch.randn(k, n) * 1000 for k, n in batches]
    started, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for x in audio:
            encoder(features(x))
    return time.perf_counter() - started, time.process_time() - cpu

student, step_wall, step_cpu = train_steps()
embed_wall, embed_cpu = zip(*[embed_pass(student.encoder) for _ in range(cfg["embed_passes"])])
print(json.dumps({
    "encoder_parameters": count(student.encoder),
    "parameters": count(student),
    "step_wall": step_wall,
    "step_cpu": step_cpu,
    "embed_wall": embed_wall,
    "embed_cpu": embed_cpu,
    "torch": torch.__version__,
}))
"#;

/// What the reference printed.
#[derive(Deserialize)]
struct Reference {
    encoder_parameters: i64,
    parameters: i64,
    step_wall: Vec<f64>,
    step_cpu: f64,
    embed_wall: Vec<f64>,
    embed_cpu: Vec<f64>,
    torch: String,
}

/// The timed steps of the Rust run.
struct Steps {
    wall: Vec<f64>,
    /// Process CPU seconds of all the timed steps.
    cpu: f64,
    wait_shares: Vec<f64>,
}

/// The benchmark's training run: ECAPA C = 512, the default head (K = 65536), batch 8,
/// 2 x 3 s + 4 x 2 s crops, augmentation on, on the CPU; one epoch of all the steps. Every
/// parameter is trained from the first step (as after the first epoch of a real run), and
/// checkpoints are only written after the last step, outside the timed steps.
fn bench_config() -> PretrainConfig {
    let mut c = PretrainConfig {
        device: stage_kit::DeviceSpec::Cpu,
        epochs: 1,
        batch_size: BATCH,
        max_steps_per_epoch: Some(WARMUP_STEPS + TIMED_STEPS),
        freeze_last_layer_epochs: 0,
        checkpoint_every: usize::MAX,
        keep_checkpoints: 1,
        ..Default::default()
    };
    c.model.encoder = EncoderConfig::preset(ENCODER).expect("encoder preset");
    (c.crops.global_seconds, c.crops.local_seconds) = (3.0, 2.0);
    (c.workers, c.prefetch) = (2, 2);
    c
}

/// Runs the training on the fixture; reads the timed steps from its step log, and the CPU
/// time they took from a thread that watches the log grow.
fn rust_steps(config: &PretrainConfig, out_dir: &Path) -> Steps {
    let fixture = common::prepared();
    let paths = PretrainPaths {
        manifest: fixture.train.clone(),
        audio_cache: fixture.train_cache.clone(),
        noise_cache: Some(fixture.noise_cache.clone()),
        rir_cache: Some(fixture.rir_cache.clone()),
        out_dir: out_dir.to_path_buf(),
        validation: None,
    };
    let log = out_dir.join(training::STEP_LOG);
    let marks = [WARMUP_STEPS, WARMUP_STEPS + TIMED_STEPS];
    let cpu = cpu_at_log_lines(&log, marks, || {
        pretrain::run(config, &paths, false, StopAt::default()).expect("pretraining");
    });
    let records: Vec<StepRecord> = std::fs::read_to_string(&log)
        .expect("step log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("step record"))
        .skip(WARMUP_STEPS)
        .collect();
    assert_eq!(records.len(), TIMED_STEPS, "steps in the log");
    let crops = (BATCH * (config.crops.global_crops + config.crops.local_crops)) as f64;
    Steps {
        wall: records.iter().map(|r| crops / r.crops_per_second).collect(),
        cpu: cpu[1] - cpu[0],
        wait_shares: records.iter().map(|r| r.data_wait_share).collect(),
    }
}

/// Runs `train` while a thread polls the step log `log`; returns the process CPU seconds
/// at the moments the log first held `marks` lines (a step's line is written as it ends).
fn cpu_at_log_lines(log: &Path, marks: [usize; 2], train: impl FnOnce()) -> [f64; 2] {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = [f64::NAN; 2];
            let mut next = 0;
            while next < marks.len() && !done.load(Ordering::Relaxed) {
                let lines = std::fs::read_to_string(log).map_or(0, |text| text.lines().count());
                while next < marks.len() && lines >= marks[next] {
                    seen[next] = stage_kit::cpu_time::process_seconds();
                    next += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        train();
        done.store(true, Ordering::Relaxed);
        watcher.join().expect("log watcher")
    })
}

/// The trained model reduced to what extraction reads (the teacher's encoder), so that
/// extraction is not timed loading the optimiser state and the heads.
fn embedding_checkpoint(model: &Path, out: &Path) {
    let loaded = checkpoint::load(model).expect("trained model");
    let prefix = &loaded.meta.embedding_prefix;
    let tensors: Vec<(String, tch::Tensor)> = loaded
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with(prefix.as_str()))
        .map(|(name, t)| (name.clone(), t.shallow_clone()))
        .collect();
    checkpoint::save(out, &loaded.meta, &tensors).expect("writing the encoder checkpoint");
}

/// Wall and process CPU seconds of a pass of embedding extraction.
#[derive(Debug, Clone, Copy)]
struct EmbedPass {
    wall: f64,
    cpu: f64,
    /// Wall seconds of the features and encoder alone (what the reference times).
    encode: f64,
}

/// One pass of [`embed::run`] over the held-out utterances, which must embed `expected`.
fn rust_embedding(
    checkpoint: &Path,
    config: &EmbedConfig,
    out: &Path,
    expected: usize,
) -> EmbedPass {
    let fixture = common::prepared();
    let cpu = stage_kit::cpu_time::process_seconds();
    let report = embed::run(checkpoint, &fixture.test, &fixture.test_cache, out, config)
        .expect("embedding extraction");
    assert_eq!(report.utterances, expected, "held-out utterances embedded");
    EmbedPass {
        wall: report.wall_seconds,
        encode: report.encode_seconds,
        cpu: stage_kit::cpu_time::process_seconds() - cpu,
    }
}

/// The fastest pass by wall time.
fn fastest_pass(passes: impl IntoIterator<Item = EmbedPass>) -> EmbedPass {
    passes
        .into_iter()
        .min_by(|a, b| a.wall.total_cmp(&b.wall))
        .expect("at least one pass")
}

/// Sample counts of the non-empty utterances of an audio cache.
fn utterance_lengths(cache: &Path) -> Vec<u64> {
    let cache = AudioCache::open(cache).expect("held-out audio cache");
    cache
        .entries()
        .iter()
        .map(|e| e.length)
        .filter(|&n| n > 0)
        .collect()
}

/// Runs the PyTorch reference with the benchmark's settings.
fn run_reference(
    config: &PretrainConfig,
    threads: i32,
    embed: &EmbedConfig,
    lengths: &[u64],
) -> Reference {
    let rate = f64::from(config.features.fbank.sample_rate);
    let settings = serde_json::json!({
        "config": config,
        "threads": threads,
        "batch": BATCH,
        "warmup": WARMUP_STEPS,
        "steps": TIMED_STEPS,
        "global_samples": (config.crops.global_seconds * rate) as usize,
        "local_samples": (config.crops.local_seconds * rate) as usize,
        "embed_lengths": lengths,
        "length_tolerance": embed.length_tolerance,
        "max_batch_seconds": embed.max_batch_seconds,
        "embed_passes": EMBED_PASSES,
    });
    let out = stage_kit::reference::run_python(
        REFERENCE,
        &[
            settings.to_string(),
            stage_kit::reference::workspace_root()
                .join("python")
                .display()
                .to_string(),
        ],
    )
    .expect("PyTorch reference");
    serde_json::from_str(&out).expect("reference output")
}

/// Trainable parameters of our encoder and of encoder + head.
fn rust_parameters(config: &PretrainConfig) -> (i64, i64) {
    let (encoder_vs, _encoder) = encoder_only(&config.model.encoder, Device::Cpu);
    let network = Network::new(&config.model, Device::Cpu);
    (parameter_count(&encoder_vs), parameter_count(&network.vs))
}

/// The machine's load average over the last minute, which tells how much other work
/// shared the cores.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// One line of the table: a measure for both sides and the speed-up of Rust (`ratio`).
fn row(name: &str, rust: f64, pytorch: f64, ratio: f64) {
    println!("{name:<36} {rust:>10.3} {pytorch:>10.3} {ratio:>14.3}");
}

fn main() {
    let threads = tch::get_num_threads();
    let config = bench_config();
    let embed_config = EmbedConfig {
        device: stage_kit::DeviceSpec::Cpu,
        ..Default::default()
    };
    println!(
        "DINO step: {ENCODER}, K={}, batch {BATCH}, {} x {} s + {} x {} s crops; \
         {WARMUP_STEPS} warm-up + {TIMED_STEPS} timed steps; {threads} thread(s) on both sides",
        config.model.head.out_dim,
        config.crops.global_crops,
        config.crops.global_seconds,
        config.crops.local_crops,
        config.crops.local_seconds,
    );
    let load_before = load_average();

    let (encoder_parameters, parameters) = rust_parameters(&config);
    let dir = tempfile::tempdir().expect("temporary folder");
    let train_dir = dir.path().join("train");
    let steps = rust_steps(&config, &train_dir);
    let checkpoint = dir.path().join("encoder.safetensors");
    embedding_checkpoint(&train_dir.join(training::FINAL_MODEL), &checkpoint);
    let embed_out = dir.path().join("embeddings.h5");
    let lengths = utterance_lengths(&common::prepared().test_cache);
    let embed = || rust_embedding(&checkpoint, &embed_config, &embed_out, lengths.len());
    // Our passes on either side of the reference run, against drifting load on the machine.
    let mut passes = vec![embed()];
    let reference = run_reference(&config, threads, &embed_config, &lengths);
    passes.extend((1..EMBED_PASSES).map(|_| embed()));
    let embedding = fastest_pass(passes);
    let reference_embedding = fastest_pass(
        (reference.embed_wall.iter().zip(&reference.embed_cpu)).map(|(&wall, &cpu)| EmbedPass {
            wall,
            cpu,
            encode: wall,
        }),
    );

    println!(
        "parameters: encoder {encoder_parameters} (PyTorch {}), encoder + head {parameters} \
         (PyTorch {}); torch {}",
        reference.encoder_parameters, reference.parameters, reference.torch
    );
    assert_eq!(
        (encoder_parameters, parameters),
        (reference.encoder_parameters, reference.parameters),
        "the reference must have our architecture"
    );
    let rate = f64::from(config.features.fbank.sample_rate);
    println!(
        "embedding: {} held-out utterances, {:.0} s of audio; fastest of {EMBED_PASSES} passes",
        lengths.len(),
        lengths.iter().sum::<u64>() as f64 / rate
    );
    println!(
        "load average (1 min, this benchmark included) at the start {load_before}, at the end \
         {} on {} core(s)\n",
        load_average(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<36} {:>10} {:>10} {:>14}",
        "", "Rust", "PyTorch", "Rust speed-up"
    );
    let (ours, theirs) = (&steps.wall, &reference.step_wall);
    row(
        "step, wall s (fastest)",
        fastest(ours),
        fastest(theirs),
        fastest(theirs) / fastest(ours),
    );
    row(
        "step, wall s (median)",
        median(ours),
        median(theirs),
        median(theirs) / median(ours),
    );
    let timed = TIMED_STEPS as f64;
    let (ours, theirs) = (steps.cpu / timed, reference.step_cpu / timed);
    row("step, CPU s (all threads)", ours, theirs, theirs / ours);
    println!(
        "{:<36} {:>9.1}% {:>10}",
        "data wait, share of step (mean)",
        100.0 * mean(&steps.wait_shares),
        "-"
    );
    let (ours, theirs) = (embedding, reference_embedding);
    let n = lengths.len() as f64;
    row(
        "embedding, utterances/s (wall)",
        n / ours.wall,
        n / theirs.wall,
        theirs.wall / ours.wall,
    );
    row(
        "embedding, utt./s (encoding only)",
        n / ours.encode,
        n / theirs.wall,
        theirs.wall / ours.encode,
    );
    row(
        "embedding, utterances/CPU s",
        n / ours.cpu,
        n / theirs.cpu,
        theirs.cpu / ours.cpu,
    );
    println!(
        "\n(Rust speed-up = PyTorch time / Rust time, > 1: Rust faster; goals: step >= 1, data \
         wait < 5 %; the reference loads no data)"
    );
}
