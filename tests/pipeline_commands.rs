//! `cargo xtask pipeline` as a user types it: a run killed in the middle of pretraining
//! resumes without redoing its finished stages, and `pipeline voxceleb --dry-run` on a
//! VoxCeleb-shaped tree (the fixture laid out as VoxCeleb1/2, MUSAN, RIRS_NOISES, CREMA-D)
//! prints the whole plan with the paper's settings.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use end_to_end::{run, small_fixture_pipeline, xtask_command};

/// Long enough for a cold build of the stage binaries on 2 cores.
const FIRST_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(40 * 60);

fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    })
}

#[test]
fn a_run_killed_during_pretraining_resumes_it_and_redoes_nothing_finished() {
    let work = tempfile::tempdir().unwrap();
    let pipeline = small_fixture_pipeline(work.path()).unwrap();
    let run_dir = work.path().join("run");
    let mut child = xtask_command([
        "pipeline".as_ref(),
        pipeline.as_os_str(),
        "--run-dir".as_ref(),
        run_dir.as_os_str(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0)
    .spawn()
    .unwrap();
    let checkpoints = run_dir.join("pretrain/checkpoints");
    let started = Instant::now();
    while !has_checkpoint(&checkpoints) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pipeline ended before its first checkpoint"
        );
        assert!(
            started.elapsed() < FIRST_CHECKPOINT_TIMEOUT,
            "no pretraining checkpoint in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The whole process group: cargo, the runner and the stage binary, as a power cut would.
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    assert!(
        !run_dir.join("pretrain/stage.json").exists(),
        "pretraining had already finished"
    );

    let resumed = run(&pipeline, &run_dir, None).unwrap();
    assert_eq!(resumed.skipped, ["scan", "prepare", "baseline"]);
    assert_eq!(resumed.resumed, ["pretrain"]);
    assert!(resumed.ran.iter().any(|s| s == "eval-sv-r1"), "{resumed:?}");
    let log = std::fs::read_to_string(run_dir.join("pretrain/stage.log")).unwrap();
    assert!(log.contains("resuming from"), "{log}");
}

/// Lays the fixture corpus out as the paper's corpora: VoxCeleb2 dev (training speakers),
/// VoxCeleb1 with the cleaned trial lists (held-out speakers), MUSAN, RIRS_NOISES, CREMA-D.
fn voxceleb_shaped_tree(fixture: &Path, root: &Path) -> Vec<(String, std::path::PathBuf)> {
    let summary = xtask::fixture::read_summary(fixture).unwrap();
    let vox2 = root.join("voxceleb2/dev/aac");
    let vox1 = root.join("voxceleb1/wav");
    std::fs::create_dir_all(&vox2).unwrap();
    std::fs::create_dir_all(&vox1).unwrap();
    for speaker in &summary.train_speakers {
        symlink(fixture.join("wav").join(speaker), vox2.join(speaker)).unwrap();
    }
    for speaker in &summary.test_speakers {
        symlink(fixture.join("wav").join(speaker), vox1.join(speaker)).unwrap();
    }
    for list in [
        "veri_test2.txt",
        "list_test_all2.txt",
        "list_test_hard2.txt",
    ] {
        std::fs::copy(
            fixture.join("trials.txt"),
            root.join("voxceleb1").join(list),
        )
        .unwrap();
    }
    symlink(fixture.join("musan"), root.join("musan")).unwrap();
    symlink(fixture.join("rirs"), root.join("RIRS_NOISES")).unwrap();
    symlink(fixture.join("emotion"), root.join("CREMA-D")).unwrap();
    [
        ("voxceleb2", "voxceleb2"),
        ("voxceleb1", "voxceleb1"),
        ("musan", "musan"),
        ("rirs", "RIRS_NOISES"),
        ("crema-d", "CREMA-D"),
    ]
    .into_iter()
    .map(|(name, dir)| (name.to_owned(), root.join(dir)))
    .collect()
}

/// `cargo xtask pipeline voxceleb --dry-run EXTRA...` on the VoxCeleb-shaped tree; its stdout.
fn voxceleb_dry_run(extra: &[&str]) -> String {
    let fixture = xtask::fixture::ensure(xtask::fixture::Size::Tiny, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut args = vec![
        "pipeline".to_owned(),
        "voxceleb".to_owned(),
        "--dry-run".to_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    for (name, path) in voxceleb_shaped_tree(&fixture, work.path()) {
        args.extend(["--corpus".to_owned(), format!("{name}={}", path.display())]);
    }
    args.extend([
        "--run-dir".to_owned(),
        work.path().join("run").display().to_string(),
    ]);
    let output = xtask_command(&args)
        .env_remove("IEMOCAP_ROOT")
        .env_remove("MSP_PODCAST_ROOT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_voxceleb_slurm_dry_run_prints_array_sizes_and_resources() {
    let stdout = voxceleb_dry_run(&["--executor", "slurm"]);
    let sbatch = |stage: &str| -> Vec<String> {
        let section = stdout
            .split(&format!("== {stage} (Slurm) ==\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {stage} jobs in\n{stdout}"));
        section
            .lines()
            .take_while(|l| !l.starts_with("=="))
            .filter(|l| l.starts_with("$ sbatch "))
            .map(str::to_owned)
            .collect()
    };
    let prepare = sbatch("prepare");
    assert_eq!(prepare.len(), 2, "{prepare:?}");
    assert!(prepare[0].contains("--array=0-63%32") && prepare[0].contains("--cpus-per-task=4"));
    assert!(prepare[1].contains("--dependency=afterok:<scan.merge>:<prepare.array>"));
    let pretrain = sbatch("pretrain");
    for option in [
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--signal=B:USR1@300",
        "--requeue",
        "--time=1-00:00:00",
        "--dependency=afterok:<scan.merge>:<prepare.merge>",
    ] {
        assert!(pretrain[0].contains(option), "{option} not in {pretrain:?}");
    }
    assert!(stdout.contains("srun "), "{stdout}");
    assert!(sbatch("finetune-r2")[0].contains("--gpus-per-node=4"));
    assert_eq!(sbatch("scan")[0].matches("--array=0-15%16").count(), 1);
    let embed = sbatch("embed-r1");
    assert!(embed[0].contains("--array=0-7%8") && embed[0].contains("--gpus-per-node=1"));
    assert!(embed[1].contains("<embed-r1.array>"), "{embed:?}");
}

#[test]
fn the_voxceleb_dry_run_prints_the_papers_plan() {
    let stdout = voxceleb_dry_run(&[]);

    // The plan table's rows (command lines, which start with `$`, may hold " run " too).
    let planned: Vec<String> = stdout
        .lines()
        .filter(|line| !line.starts_with('$'))
        .filter_map(|line| {
            line.split_once(" run ")
                .map(|(stage, _)| stage.trim().to_owned())
        })
        .collect();
    let mut expected: Vec<String> = [
        "scan",
        "prepare",
        "baseline",
        "pretrain",
        "embed",
        "eval-sv",
        "eval-emotion",
    ]
    .map(str::to_owned)
    .into();
    for round in ["r1", "r2"] {
        for stage in ["cluster", "finetune", "embed", "eval-sv", "eval-emotion"] {
            expected.push(format!("{stage}-{round}"));
            // DINO scored by a PLDA on the first round's pseudo-labels.
            if stage == "cluster" && round == "r1" {
                expected.push("eval-sv-plda".to_owned());
            }
        }
    }
    assert_eq!(planned, expected, "{stdout}");
    for setting in [
        "type = \"resnet\"",
        "blocks = [3, 4, 6, 3]",
        "out_dim = 65536",
        "batch_size = 128",
        "epochs = 70",
        "teacher_momentum = [0.996, 1.0]",
        "veri_test2.txt",
        "list_test_all2.txt",
        "list_test_hard2.txt",
        "scan voxceleb2 --root",
        "scan voxceleb1 --root",
        "crema-d",
    ] {
        assert!(
            stdout.contains(setting),
            "{setting:?} not in the plan:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("iemocap") && !stdout.contains("msp-podcast"),
        "{stdout}"
    );
}

/// Two training corpora joined, one of them read by the generic scanner with a regex from
/// the pipeline file: the fixture's speech (training split) and its emotion part laid out as
/// CREMA-D (`AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`). Pretraining sees the
/// utterances of both, and writes its validation curve.
#[test]
fn a_pipeline_joins_two_training_corpora_and_passes_generic_scanner_options() {
    let work = tempfile::tempdir().unwrap();
    let pipeline = small_fixture_pipeline(work.path()).unwrap();
    let fixture = xtask::fixture::ensure(xtask::fixture::Size::Tiny, 1).unwrap();
    let mut file: toml::Table =
        toml::from_str(&std::fs::read_to_string(&pipeline).unwrap()).unwrap();
    let generic: toml::Table = toml::from_str(&format!(
        r#"
        kind = "generic"
        default = "{}"
        regex = '^AudioWAV/(?P<utt>(?P<speaker>\d+)_(?P<session>[A-Z]+)_[A-Z]+_[A-Z]+)\.wav$'
        "#,
        fixture.join("emotion").display()
    ))
    .unwrap();
    file["corpora"]
        .as_table_mut()
        .unwrap()
        .insert("actors".into(), generic.into());
    let speech = file.remove("train").unwrap();
    let actors: toml::Table = toml::from_str("corpus = \"actors\"").unwrap();
    file.insert(
        "train".into(),
        toml::Value::Array(vec![speech, actors.into()]),
    );
    std::fs::write(&pipeline, toml::to_string(&file).unwrap()).unwrap();

    let run_dir = work.path().join("run");
    let outcome = xtask::pipeline::run(&xtask::pipeline::Options {
        name: pipeline.display().to_string(),
        run_dir: Some(run_dir.clone()),
        rounds: Some(0),
        ..Default::default()
    })
    .unwrap();
    assert!(outcome.ran.iter().any(|s| s == "eval-sv"), "{outcome:?}");
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(path)).unwrap()).unwrap()
    };
    let parts = json("scan/fixture-speech.summary.json")["utterances"]
        .as_u64()
        .unwrap()
        - 120
        + json("scan/actors.summary.json")["utterances"]
            .as_u64()
            .unwrap();
    assert_eq!(
        json("scan/actors.summary.json")["speakers"],
        8,
        "actors as speakers"
    );
    assert_eq!(
        json("pretrain/report.json")["utterances"].as_u64(),
        Some(parts)
    );
    // The validation curve: the last epoch is validated whatever the period.
    let validation = &json("pretrain/report.json")["validation"];
    assert_eq!(validation["last"]["epoch"], 2, "{validation}");
    assert!(validation["last"]["eer"].as_f64().is_some(), "{validation}");
    assert!(
        run_dir
            .join("pretrain")
            .join(stage_kit::run_folder::CURVES_SVG)
            .is_file()
    );
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("Validation (during training") && report.contains("pretrain/curves.svg"),
        "{report}"
    );
    assert!(report.contains("fixture-emotion+pooled"), "{report}");
}
