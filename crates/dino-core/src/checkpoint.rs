//! Checkpoints: every tensor of a training state (student, teacher, optimiser, loss centre,
//! scaler) in one safetensors file, with the run's configuration and position as JSON in the
//! file's metadata. Files are written atomically; the folder keeps the newest few.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::encoder::EncoderConfig;
use crate::error::{Error, Result};
use crate::features::FeatureConfig;

/// Format tag in the metadata.
pub const FORMAT: &str = "speech-dino/checkpoint/1";
/// Metadata key holding [`CheckpointMeta`] as JSON.
const META_KEY: &str = "speech_dino";

/// What a checkpoint is and where in its run it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// `dino` (self-supervised pretraining) or `finetune` (pseudo-label classification).
    pub kind: String,
    /// Epochs completed and optimiser steps taken so far.
    pub epoch: usize,
    pub step: usize,
    /// Prefix of the encoder whose output is the embedding (`teacher.encoder.` for DINO).
    pub embedding_prefix: String,
    /// How to compute the embedding: the encoder and its input features.
    pub embedding: EmbeddingSpec,
    /// The run's full configuration.
    pub config: serde_json::Value,
}

/// The encoder architecture and the features it was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub encoder: EncoderConfig,
    pub features: FeatureConfig,
}

struct TensorBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn to_bytes(name: &str, tensor: &Tensor, path: &Path) -> Result<TensorBytes> {
    let t = tensor.detach().to_device(Device::Cpu).contiguous();
    let dtype = dtype_of(t.kind()).ok_or_else(|| {
        Error::checkpoint(path, format!("{name}: unsupported kind {:?}", t.kind()))
    })?;
    let mut data = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, t.numel())
        .map_err(Error::torch(format!("copying {name}")))?;
    Ok(TensorBytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes `tensors` and `meta` to `path` atomically.
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<()> {
    save_with(path, meta, &[], tensors)
}

/// [`save`] with more metadata entries (`key`, JSON text) beside the checkpoint's own.
pub fn save_with(
    path: &Path,
    meta: &CheckpointMeta,
    extra: &[(&str, String)],
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let bytes: Vec<(String, TensorBytes)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), to_bytes(name, t, path)?)))
        .collect::<Result<_>>()?;
    let json = serde_json::to_string(meta).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let mut entries = HashMap::from([(META_KEY.to_owned(), json)]);
    entries.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let info = Some(entries);
    stage_kit::write_atomically(path, |partial| {
        safetensors::tensor::serialize_to_file(
            bytes.iter().map(|(n, b)| (n.as_str(), b)),
            &info,
            partial,
        )
        .map_err(|e| Error::checkpoint(path, format!("writing: {e:?}")))
    })
}

/// A checkpoint read back, tensors on the CPU.
pub struct Loaded {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
    /// The other metadata entries (see [`save_with`]), by key.
    pub entries: HashMap<String, String>,
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Loaded> {
    let file = std::fs::read(path).map_err(|e| stage_kit::FileError::new(path, e))?;
    let meta = parse_meta(path, &file)?;
    let st = SafeTensors::deserialize(&file)
        .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e:?}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype())
            .ok_or_else(|| Error::checkpoint(path, format!("{name}: unsupported dtype")))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(Error::torch(format!("reading {name}")))?;
        tensors.insert(name, tensor);
    }
    let (_, header) = SafeTensors::read_metadata(&file)
        .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e:?}")))?;
    let entries = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != META_KEY)
        .collect();
    Ok(Loaded {
        meta,
        tensors,
        entries,
    })
}

/// Reads only the metadata of a checkpoint.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let file = std::fs::read(path).map_err(|e| stage_kit::FileError::new(path, e))?;
    parse_meta(path, &file)
}

fn parse_meta(path: &Path, file: &[u8]) -> Result<CheckpointMeta> {
    let (_, header) = SafeTensors::read_metadata(file)
        .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e:?}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| Error::checkpoint(path, "not a speech-dino checkpoint (no metadata)"))?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .map_err(|e| Error::checkpoint(path, format!("bad metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::checkpoint(
            path,
            format!("format {:?}, expected {FORMAT:?}", meta.format),
        ));
    }
    Ok(meta)
}

/// Named variables to save or restore: a var store, or a part of one.
pub trait VarSource {
    fn variables(&self) -> HashMap<String, Tensor>;
}

impl VarSource for VarStore {
    fn variables(&self) -> HashMap<String, Tensor> {
        VarStore::variables(self)
    }
}

/// All variables of `vars` (parameters and buffers) named with `prefix`.
pub fn var_tensors(vars: &impl VarSource, prefix: &str) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = vars
        .variables()
        .into_iter()
        .map(|(name, t)| (format!("{prefix}{name}"), t))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Copies the tensors named `prefix + <variable>` into the variables of `vars`; every
/// variable must be present with its shape and hold finite values (a checkpoint of a run
/// that diverged is refused here, naming the tensor, rather than training or embedding NaN).
pub fn restore_vars(
    vars: &impl VarSource,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    for (name, mut var) in vars.variables() {
        let key = format!("{prefix}{name}");
        let source = tensors
            .get(&key)
            .ok_or_else(|| Error::checkpoint(path, format!("tensor {key} is missing")))?;
        if source.size() != var.size() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor {key} has shape {:?}, expected {:?}",
                    source.size(),
                    var.size()
                ),
            ));
        }
        let finite = source.isfinite().all();
        if !bool::try_from(&finite).map_err(Error::torch("checking a checkpoint tensor"))? {
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor {key} holds NaN or infinite values (written by a run that diverged?)"
                ),
            ));
        }
        tch::no_grad(|| var.copy_(source));
    }
    Ok(())
}

/// A folder of step checkpoints `step-NNNNNNNN.safetensors`, keeping the newest `keep`.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    pub dir: PathBuf,
    pub keep: usize,
}

impl CheckpointDir {
    pub fn path_for(&self, step: usize) -> PathBuf {
        self.dir.join(format!("step-{step:08}.safetensors"))
    }

    /// Existing checkpoints, oldest first.
    pub fn list(&self) -> Vec<(usize, PathBuf)> {
        numbered_files(&self.dir, "step-")
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.list().pop().map(|(_, p)| p)
    }

    /// Saves the checkpoint of `meta.step` and removes the oldest beyond `keep`.
    pub fn save(&self, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<PathBuf> {
        let path = self.path_for(meta.step);
        save(&path, meta, tensors)?;
        let all = self.list();
        for (_, old) in all.iter().take(all.len().saturating_sub(self.keep.max(1))) {
            std::fs::remove_file(old).map_err(|e| stage_kit::FileError::new(old, e))?;
        }
        Ok(path)
    }
}

/// `<dir>/<prefix>NNNN.safetensors` files by their number, lowest first.
fn numbered_files(dir: &Path, prefix: &str) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let number = p
                .file_name()?
                .to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((number, p))
        })
        .collect();
    found.sort();
    found
}

/// The embedding network at the end of every epoch, `epochs/epoch-NNNN.safetensors`: only
/// the tensors under the embedding prefix (DINO's teacher encoder, the fine-tuned encoder),
/// which is what validation embeds with and what `select-model` picks or averages.
#[derive(Debug, Clone)]
pub struct EpochModels {
    pub dir: PathBuf,
}

/// Folder of a training run's epoch models.
pub const EPOCH_MODELS: &str = "epochs";

impl EpochModels {
    /// The epoch models of the run writing into `out_dir`.
    pub fn of_run(out_dir: &Path) -> Self {
        EpochModels {
            dir: out_dir.join(EPOCH_MODELS),
        }
    }

    pub fn path_for(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:04}.safetensors"))
    }

    /// Existing epoch models, oldest first.
    pub fn list(&self) -> Vec<(usize, PathBuf)> {
        numbered_files(&self.dir, "epoch-")
    }

    /// Saves the embedding network of a training state checkpointed as `meta`, `tensors`
    /// (after `meta.epoch` epochs).
    pub fn save(&self, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| stage_kit::FileError::new(&self.dir, e))?;
        let path = self.path_for(meta.epoch);
        let encoder: Vec<(String, Tensor)> = tensors
            .iter()
            .filter(|(name, _)| name.starts_with(&meta.embedding_prefix))
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect();
        save(&path, meta, &encoder)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: usize) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT.into(),
            kind: "dino".into(),
            epoch: 0,
            step,
            embedding_prefix: "teacher.encoder.".into(),
            embedding: EmbeddingSpec {
                encoder: EncoderConfig::preset("tiny-ecapa").unwrap(),
                features: FeatureConfig::default(),
            },
            config: serde_json::json!({"seed": 3}),
        }
    }

    #[test]
    fn round_trip_keeps_kinds_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let tensors = vec![
            (
                "a".to_owned(),
                Tensor::randn([3, 4], (Kind::Float, Device::Cpu)),
            ),
            ("b".to_owned(), Tensor::from(7i64)),
        ];
        save(&path, &meta(5), &tensors).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.meta, meta(5));
        assert!(loaded.tensors["a"].equal(&tensors[0].1));
        assert_eq!(loaded.tensors["b"].int64_value(&[]), 7);
        assert_eq!(read_meta(&path).unwrap().step, 5);
    }

    #[test]
    fn folder_keeps_the_newest_and_restore_checks_names() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = CheckpointDir {
            dir: dir.path().to_path_buf(),
            keep: 2,
        };
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().zeros("w", &[2]);
        for step in [10, 20, 30] {
            ckpts
                .save(&meta(step), &var_tensors(&vs, "student."))
                .unwrap();
        }
        let steps: Vec<usize> = ckpts.list().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        let loaded = load(&ckpts.latest().unwrap()).unwrap();
        restore_vars(&vs, &loaded.tensors, "student.", Path::new("x")).unwrap();
        let err = restore_vars(&vs, &loaded.tensors, "teacher.", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tensor teacher.w is missing"), "{err}");
    }

    #[test]
    fn restoring_nan_weights_names_the_checkpoint_and_tensor() {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().zeros("w", &[3]);
        let bad = Tensor::from_slice(&[0.0f32, f32::NAN, 1.0]);
        let tensors = HashMap::from([("student.w".to_owned(), bad)]);
        let err = restore_vars(
            &vs,
            &tensors,
            "student.",
            Path::new("ckpt/step-7.safetensors"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ckpt/step-7.safetensors: tensor student.w holds NaN"),
            "{err}"
        );
    }
}
