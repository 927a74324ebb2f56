//! The fixture corpus prepared once per test binary: manifests of the training and held-out
//! speakers, VAD-trimmed audio caches, MUSAN/RIR caches, and the trial list.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use data_manifest::filter::{FilterOptions, filter};
use data_manifest::scan::{FixturePart, Layout, ScanOptions, scan};
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};

/// Paths of the prepared fixture.
pub struct Prepared {
    _dir: tempfile::TempDir,
    pub train: PathBuf,
    pub test: PathBuf,
    pub train_cache: PathBuf,
    pub test_cache: PathBuf,
    pub noise_cache: PathBuf,
    pub rir_cache: PathBuf,
    pub trials: PathBuf,
}

fn manifest(root: &Path, part: FixturePart, split: Option<&str>, out: &Path) {
    let mut outcome = scan(&Layout::Fixture(part), root, &ScanOptions::default()).expect("scan");
    if let Some(split) = split {
        filter(
            &mut outcome.manifest,
            &FilterOptions {
                splits: vec![split.to_owned()],
                ..Default::default()
            },
        );
    }
    outcome.manifest.write(out).expect("manifest");
}

fn cache(manifest: &Path, out: &Path, vad: bool) {
    let config = PrepareConfig {
        vad,
        ..Default::default()
    };
    let request = PrepareRequest {
        manifest: manifest.to_path_buf(),
        audio_out: Some(out.to_path_buf()),
        fbank_out: None,
        shard: stage_kit::Shard::WHOLE,
        threads: 0,
        config,
    };
    prepare(&request).expect("prepare");
}

/// The prepared fixture (built on first use). It lives as long as the process (a static is
/// never dropped), so it goes under cargo's target folder rather than the system's /tmp.
pub fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let root = fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).expect("fixture");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let p = |name: &str| dir.path().join(name);
        manifest(
            &root,
            FixturePart::Speech,
            Some("train"),
            &p("train.parquet"),
        );
        manifest(&root, FixturePart::Speech, Some("test"), &p("test.parquet"));
        manifest(&root, FixturePart::Musan, None, &p("musan.parquet"));
        manifest(&root, FixturePart::Rirs, None, &p("rirs.parquet"));
        cache(&p("train.parquet"), &p("train.h5"), true);
        cache(&p("test.parquet"), &p("test.h5"), true);
        cache(&p("musan.parquet"), &p("musan.h5"), false);
        cache(&p("rirs.parquet"), &p("rirs.h5"), false);
        data_manifest::trial_lists::read_text(&root.join("trials.txt"))
            .unwrap()
            .write(&p("trials.parquet"))
            .unwrap();
        Prepared {
            train: p("train.parquet"),
            test: p("test.parquet"),
            train_cache: p("train.h5"),
            test_cache: p("test.h5"),
            noise_cache: p("musan.h5"),
            rir_cache: p("rirs.h5"),
            trials: p("trials.parquet"),
            _dir: dir,
        }
    })
}
