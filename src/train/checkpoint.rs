//! Checkpoints: one safetensors file per saved step holding every tensor a resume needs (weights,
//! optimizer moments, EMA) and, in its metadata, the step, the resumable state as JSON (RNG
//! streams, data position, ...) and a SHA-256 of all of it. Written to a temporary file, fsynced
//! and renamed, so a crash or a full disk never leaves a half-written file under a real name.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safetensors::SafeTensors;
use safetensors::tensor::View;
use sha2::{Digest, Sha256};

/// Format tag written into every checkpoint.
pub const FORMAT: &str = "ldm-run-checkpoint-1";

/// The safetensors metadata key of ldm-run's header.
const META_KEY: &str = "ldm-run";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("checkpoint tensors: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Everything saved at one step.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub step: u64,
    /// Named tensors, e.g. `model/...`, `opt/m/...`, `ema/...`.
    pub tensors: BTreeMap<String, Tensor>,
    /// The stage's resumable state (RNG streams, data order, counters), as JSON.
    pub state: serde_json::Value,
}

impl Checkpoint {
    /// A checkpoint at `step` holding the stage's own resumable state under `stage`, and no
    /// tensors yet.
    pub fn new(step: u64, stage: impl serde::Serialize) -> Self {
        Self {
            step,
            tensors: BTreeMap::new(),
            state: serde_json::json!({ "stage": stage }),
        }
    }

    /// The stage's own state that [`Checkpoint::new`] stored.
    pub fn stage_state<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.state["stage"].clone())
            .map_err(|e| anyhow::anyhow!("the checkpoint's stage state: {e}"))
    }

    /// The tensors under `prefix/`, with the prefix removed.
    pub fn group(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let p = format!("{prefix}/");
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&p).map(|rest| (rest.to_string(), t.clone())))
            .collect()
    }
}

/// Adds `tensors` to `into` under `prefix/`.
pub fn with_prefix(
    into: &mut BTreeMap<String, Tensor>,
    prefix: &str,
    tensors: BTreeMap<String, Tensor>,
) {
    into.extend(
        tensors
            .into_iter()
            .map(|(k, t)| (format!("{prefix}/{k}"), t)),
    );
}

/// Where a stage with `keep_best` keeps its best checkpoint, out of the rotation of `dir`.
pub fn best_dir(dir: &Path) -> PathBuf {
    dir.join("best")
}

/// File name of the checkpoint of `step`.
pub fn file_name(step: u64) -> String {
    format!("step-{step:08}.safetensors")
}

fn step_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// Checkpoints in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| step_of(&e.path()).map(|s| (s, e.path())))
        .collect();
    found.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    found
}

fn digest(step: u64, state: &str, tensors: &[(String, String, Vec<usize>, &[u8])]) -> String {
    let mut h = Sha256::new();
    h.update(step.to_le_bytes());
    h.update(state.as_bytes());
    for (name, dtype, shape, data) in tensors {
        h.update(name.as_bytes());
        h.update(dtype.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `ckpt` into `dir` atomically and returns its path.
pub fn save(dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf, CheckpointError> {
    let path = dir.join(file_name(ckpt.step));
    let werr = |source| CheckpointError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(werr)?;
    let bytes = to_bytes(ckpt)?;
    crate::atomic_file::write(&path, &bytes).map_err(|e| werr(e.source))?;
    Ok(path)
}

/// The bytes of the checkpoint file of `ckpt`.
pub fn to_bytes(ckpt: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let tensors: Vec<(String, Tensor)> = ckpt
        .tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let datas: Vec<_> = tensors.iter().map(|(_, t)| t.data()).collect();
    let parts: Vec<(String, String, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&datas)
        .map(|((k, t), d)| {
            (
                k.clone(),
                format!("{:?}", View::dtype(t)),
                t.dims().to_vec(),
                d.as_ref(),
            )
        })
        .collect();
    let state = ckpt.state.to_string();
    // One metadata entry holding a JSON object with sorted keys, so equal checkpoints are
    // equal files (safetensors writes a map of several entries in random order).
    let header = serde_json::json!({
        "format": FORMAT,
        "step": ckpt.step,
        "state": ckpt.state,
        "sha256": digest(ckpt.step, &state, &parts),
    });
    let metadata = HashMap::from([(META_KEY.to_string(), header.to_string())]);
    safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| candle_core::Error::Msg(format!("cannot serialize: {e}")).into())
}

/// Reads and verifies a checkpoint.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, path, device)
}

/// Verifies and opens the checkpoint file `bytes` (read from `path`, named in errors).
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |why: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| corrupt(format!("unreadable header ({e})")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let header: serde_json::Value = meta
        .get(META_KEY)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| {
            corrupt(format!(
                "no `{META_KEY}` header in its metadata: not an ldm-run checkpoint"
            ))
        })?;
    let field = |k: &str| {
        header
            .get(k)
            .ok_or_else(|| corrupt(format!("no `{k}` in its header")))
    };
    if field("format")?.as_str() != Some(FORMAT) {
        return Err(corrupt(format!(
            "format {} is not {FORMAT}",
            field("format")?
        )));
    }
    let step = field("step")?
        .as_u64()
        .ok_or_else(|| corrupt("bad step".into()))?;
    let state = field("state")?.clone();
    let state_text = state.to_string();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| corrupt(format!("truncated or damaged ({e})")))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<(String, String, Vec<usize>, &[u8])> = views
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data(),
            )
        })
        .collect();
    if Some(digest(step, &state_text, &parts).as_str()) != field("sha256")?.as_str() {
        return Err(corrupt("its SHA-256 does not match its contents".into()));
    }
    let tensors = views
        .iter()
        .map(|(k, v)| {
            let t = Tensor::from_raw_buffer(v.data(), v.dtype().try_into()?, v.shape(), device)?;
            Ok((k.clone(), t))
        })
        .collect::<Result<_, candle_core::Error>>()?;
    Ok(Checkpoint {
        step,
        tensors,
        state,
    })
}

/// The newest checkpoint in `dir` that loads and verifies, with the newer ones that did not
/// (each with why), so the caller can report them.
pub fn latest_valid(dir: &Path, device: &Device) -> (Option<Checkpoint>, Vec<CheckpointError>) {
    let mut skipped = Vec::new();
    for (_, path) in list(dir) {
        match load(&path, device) {
            Ok(c) => return (Some(c), skipped),
            Err(e) => skipped.push(e),
        }
    }
    (None, skipped)
}

/// The step of the newest checkpoint in `dir` that loads and verifies.
pub fn newest_valid_step(dir: &Path) -> Option<u64> {
    latest_valid(dir, &Device::Cpu).0.map(|c| c.step)
}

/// Which of `steps` (any order) to delete to keep the newest `keep`.
pub fn to_delete(steps: &[u64], keep: usize) -> Vec<u64> {
    let mut sorted = steps.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.into_iter().skip(keep.max(1)).collect()
}

/// Deletes all but the newest `keep` checkpoints once the newest is verified, so the only valid
/// checkpoint is never deleted. Returns the deleted paths.
pub fn rotate(dir: &Path, keep: usize, device: &Device) -> Result<Vec<PathBuf>, CheckpointError> {
    let all = list(dir);
    let Some((_, newest)) = all.first() else {
        return Ok(Vec::new());
    };
    load(newest, device)?;
    let doomed = to_delete(&all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), keep);
    let mut removed = Vec::new();
    for (step, path) in all {
        if doomed.contains(&step) {
            fs::remove_file(&path).map_err(|source| CheckpointError::Write {
                path: path.clone(),
                source,
            })?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: u64) -> Checkpoint {
        let dev = Device::Cpu;
        let tensors = BTreeMap::from([
            (
                "model/w".to_string(),
                Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap(),
            ),
            (
                "opt/m/w".to_string(),
                Tensor::new(&[[0.5f32, 0.25], [0., -1.]], &dev).unwrap(),
            ),
        ]);
        Checkpoint {
            step,
            tensors,
            state: serde_json::json!({"rng": [1, 2, 3, 4], "epoch": 2}),
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), &sample(12)).unwrap();
        assert_eq!(path.file_name().unwrap(), "step-00000012.safetensors");
        let back = load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.step, 12);
        assert_eq!(back.state, sample(12).state);
        let w: Vec<Vec<f32>> = back.group("model")["w"].to_vec2().unwrap();
        assert_eq!(w, vec![vec![1., 2.], vec![3., 4.]]);
        assert_eq!(
            back.group("opt")["m/w"].to_vec2::<f32>().unwrap()[1],
            vec![0., -1.]
        );
        assert!(
            fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
    }

    #[test]
    fn damaged_files_are_detected_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample(1)).unwrap();
        let newest = save(dir.path(), &sample(2)).unwrap();
        let mut bytes = fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&newest, &bytes).unwrap();
        let err = load(&newest, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("SHA-256 does not match"), "{err}");
        fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        let err = load(&newest, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        let (found, skipped) = latest_valid(dir.path(), &Device::Cpu);
        assert_eq!(found.unwrap().step, 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn rotation_keeps_the_newest() {
        assert_eq!(to_delete(&[1, 5, 3, 4], 2), vec![3, 1]);
        assert_eq!(
            to_delete(&[7], 0),
            Vec::<u64>::new(),
            "never deletes the only one"
        );
        let dir = tempfile::tempdir().unwrap();
        for s in [10, 20, 30] {
            save(dir.path(), &sample(s)).unwrap();
        }
        rotate(dir.path(), 2, &Device::Cpu).unwrap();
        let left: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, vec![30, 20]);
    }

    #[test]
    fn floats_in_the_state_survive_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpt = sample(3);
        ckpt.state =
            serde_json::json!({ "scale_factor": 0.374_730_739_452_735_16_f64, "tiny": 1e-300 });
        let back = load(&save(dir.path(), &ckpt).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(
            back.state["scale_factor"].as_f64(),
            Some(0.374_730_739_452_735_16)
        );
        assert_eq!(back.state, ckpt.state);
    }

    #[test]
    fn full_disk_leaves_the_previous_checkpoint_intact() {
        let dir = tempfile::tempdir().unwrap();
        let good = save(dir.path(), &sample(1)).unwrap();
        // The next checkpoint's temporary file is /dev/full: every write fails with ENOSPC.
        let tmp = crate::atomic_file::temporary(&dir.path().join(file_name(2)));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = save(dir.path(), &sample(2)).unwrap_err().to_string();
        assert!(
            err.contains("cannot write checkpoint") && err.contains("No space left"),
            "{err}"
        );
        assert!(
            !dir.path().join(file_name(2)).exists(),
            "no half-written file under a real name"
        );
        assert!(!tmp.exists(), "the temporary file is removed");
        assert_eq!(load(&good, &Device::Cpu).unwrap().step, 1);
        assert_eq!(list(dir.path()).len(), 1);
    }

    #[test]
    fn rotation_refuses_when_the_newest_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample(1)).unwrap();
        let newest = save(dir.path(), &sample(2)).unwrap();
        fs::write(&newest, b"garbage").unwrap();
        assert!(rotate(dir.path(), 1, &Device::Cpu).is_err());
        assert_eq!(list(dir.path()).len(), 2);
    }
}
