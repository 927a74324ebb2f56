//! The `data-manifest` binary end to end on the fixture corpus: what the pipeline runner
//! calls, with the files it reads back (through pyarrow too).

mod common;

use std::path::Path;

use common::{cli, cli_ok, s};
use data_manifest::scan::SCANNER_KEY;
use data_manifest::utterances::LABEL_FILTERS_KEY;
use data_manifest::{RejectList, TrialList, UtteranceManifest};

fn scan_fixture(part: &str, out: &Path) -> String {
    let root = common::fixture();
    cli_ok(&[
        "scan",
        "fixture",
        "--part",
        part,
        "--root",
        s(&root),
        "--out",
        s(&out.join(format!("{part}.parquet"))),
        "--rejects",
        s(&out.join(format!("{part}-rejects.parquet"))),
        "--threads",
        "2",
        "--summary-json",
        s(&out.join(format!("{part}-summary.json"))),
    ])
}

#[test]
fn fixture_speech_scan_and_its_trial_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixture = fixture_corpus::read_summary(&common::fixture()).unwrap();
    let speakers = fixture.train_speakers.len() + fixture.test_speakers.len();
    let text = scan_fixture("speech", d);
    assert!(
        text.contains(&format!("{} utterances", fixture.utterances)),
        "{text}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("speech-summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["utterances"], fixture.utterances);
    assert_eq!(summary["speakers"], speakers);
    let manifest = d.join("speech.parquet");
    assert_eq!(
        UtteranceManifest::read_metadata(&manifest).unwrap()[SCANNER_KEY],
        "fixture/speech"
    );
    assert!(
        RejectList::read(&d.join("speech-rejects.parquet"))
            .unwrap()
            .rejects
            .is_empty()
    );

    let list = common::fixture().join("trials.txt");
    let out = cli_ok(&[
        "trials",
        "--list",
        s(&list),
        "--manifest",
        s(&manifest),
        "--out",
        s(&d.join("trials.parquet")),
        "--summary-json",
        s(&d.join("trials.json")),
    ]);
    let half = fixture.trials / 2;
    assert!(
        out.contains(&format!(
            "{} trials ({half} target, {half} non-target)",
            fixture.trials
        )),
        "{out}"
    );
    let trials = TrialList::read(&d.join("trials.parquet")).unwrap();
    assert_eq!(trials.counts(), (half, half));
    assert!(trials.trials[0].enroll.starts_with("id1"));

    // A trial naming an utterance the manifest lacks fails, naming it; --drop-missing drops
    // the trial and says so.
    let mut text = std::fs::read_to_string(&list).unwrap();
    text += "1 id10001/NoSuchVideo/00001.wav id10001/NoSuchVideo/00002.wav\n";
    let broken = d.join("broken.txt");
    std::fs::write(&broken, text).unwrap();
    let broken_out = d.join("broken.parquet");
    let args = [
        "trials",
        "--list",
        s(&broken),
        "--manifest",
        s(&manifest),
        "--out",
        s(&broken_out),
    ];
    let failed = cli(&args);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("2 trial utterance(s) are not in the manifest")
            && err.contains("id10001/NoSuchVideo/00001, id10001/NoSuchVideo/00002"),
        "{err}"
    );
    assert!(!d.join("broken.parquet").exists());
    let mut dropping = args.to_vec();
    dropping.push("--drop-missing");
    let out = cli_ok(&dropping);
    assert!(out.contains("1 trials DROPPED"), "{out}");
    assert_eq!(
        TrialList::read(&d.join("broken.parquet"))
            .unwrap()
            .trials
            .len(),
        fixture.trials
    );
}

#[test]
fn reject_share_above_the_bound_fails_without_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    common::place_wavs(&root, &["a/1.wav", "a/2.wav", "b/1.wav"]);
    std::fs::write(root.join("b/2.wav"), "text, not audio").unwrap();
    let out = |name: &str| dir.path().join(name);
    let args = |fraction: &'static str| {
        vec![
            "scan".to_owned(),
            "generic".into(),
            "--root".into(),
            s(&root).into(),
            "--speaker-component".into(),
            "0".into(),
            "--out".into(),
            s(&out(&format!("u-{fraction}.parquet"))).into(),
            "--rejects".into(),
            s(&out("rejects.parquet")).into(),
            "--max-reject-fraction".into(),
            fraction.into(),
        ]
    };
    let strict: Vec<String> = args("0.1");
    let failed = cli(&strict.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("above --max-reject-fraction"));
    assert!(!out("u-0.1.parquet").exists());
    let rejects = RejectList::read(&out("rejects.parquet")).unwrap();
    assert_eq!(rejects.rejects.len(), 1);
    assert_eq!(rejects.rejects[0].path, "b/2.wav");
    assert!(rejects.rejects[0].reason.starts_with("not audio: "));

    let lenient: Vec<String> = args("0.5");
    let text = cli_ok(&lenient.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text.contains("Rejected 1 file(s) (25.00 %): not audio 1"),
        "{text}"
    );
    assert_eq!(
        UtteranceManifest::read(&out("u-0.5.parquet"))
            .unwrap()
            .utterances
            .len(),
        3
    );
}

#[test]
fn emotion_trials_folds_shards_filters_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scan_fixture("emotion", d);
    let manifest = d.join("emotion.parquet");
    let make = |out: &str| {
        cli_ok(&[
            "make-trials",
            "--manifest",
            s(&manifest),
            "--out",
            s(&d.join(out)),
            "--per-speaker",
            "20",
            "--seed",
            "3",
        ])
    };
    let text = make("t1.parquet");
    make("t2.parquet");
    let (t1, t2) = (
        TrialList::read(&d.join("t1.parquet")).unwrap(),
        TrialList::read(&d.join("t2.parquet")).unwrap(),
    );
    assert_eq!(t1, t2);
    assert_eq!(t1.counts(), (160, 160), "{text}");
    let speaker = |id: &str| id.split('_').next().unwrap().to_owned();
    assert!(
        t1.trials
            .iter()
            .all(|t| t.target == (speaker(&t.enroll) == speaker(&t.test)))
    );

    cli_ok(&[
        "split",
        "--manifest",
        s(&manifest),
        "--out",
        s(&d.join("folds.parquet")),
        "--by",
        "speaker",
        "--folds",
        "4",
    ]);
    let folds = UtteranceManifest::read(&d.join("folds.parquet")).unwrap();
    let mut fold_of = std::collections::HashMap::new();
    for u in &folds.utterances {
        let fold = fold_of.entry(u.speaker.clone()).or_insert(u.fold.clone());
        assert_eq!(*fold, u.fold);
    }
    assert_eq!(
        fold_of
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4
    );

    let mut sharded = 0;
    for i in 0..3 {
        let out = d.join(format!("shard{i}.parquet"));
        cli_ok(&[
            "shard",
            "--manifest",
            s(&manifest),
            "--shard",
            &format!("{i}/3"),
            "--out",
            s(&out),
        ]);
        sharded += UtteranceManifest::read(&out).unwrap().utterances.len();
    }
    assert_eq!(sharded, folds.utterances.len());

    let plain = cli_ok(&[
        "filter",
        "--manifest",
        s(&manifest),
        "--out",
        s(&d.join("long.parquet")),
        "--min-seconds",
        "2.0",
    ]);
    assert!(!plain.contains("WARNING"));
    assert!(
        !UtteranceManifest::read_metadata(&d.join("long.parquet"))
            .unwrap()
            .contains_key(LABEL_FILTERS_KEY)
    );
    let labelled = cli_ok(&[
        "filter",
        "--manifest",
        s(&manifest),
        "--out",
        s(&d.join("labelled.parquet")),
        "--min-utts-per-speaker",
        "8",
    ]);
    assert!(
        labelled.starts_with("WARNING: this filter used speaker labels"),
        "{labelled}"
    );
    assert_eq!(
        UtteranceManifest::read_metadata(&d.join("labelled.parquet")).unwrap()[LABEL_FILTERS_KEY],
        "min_utterances_per_speaker=8"
    );

    // A filter that keeps nothing (a misspelt split) fails and writes nothing.
    let empty = d.join("empty.parquet");
    let typo = cli(&[
        "filter",
        "--manifest",
        s(&manifest),
        "--out",
        s(&empty),
        "--split",
        "tset",
    ]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && !empty.exists(), "{stderr}");
    assert!(
        stderr.contains("keeps none of its") && stderr.contains("(its splits: "),
        "{stderr}"
    );

    // A reader that has closed the pipe (`show ... | head -1`) ends the output quietly.
    let mut show = std::process::Command::new(env!("CARGO_BIN_EXE_data-manifest"))
        .args(["show", s(&manifest)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(show.stdout.take());
    let shown = show.wait_with_output().unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    let stats = cli_ok(&[
        "stats",
        "--manifest",
        s(&manifest),
        "--summary-json",
        s(&d.join("stats.json")),
    ]);
    assert!(stats.contains("emotions: ANG"), "{stats}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("stats.json")).unwrap()).unwrap();
    assert_eq!(json["speakers"], 8);
    let histogram: u64 = json["duration_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["utterances"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram, json["utterances"].as_u64().unwrap());
}

#[test]
fn scan_shards_merge_into_the_whole_scan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = common::fixture();
    let mut manifests = Vec::new();
    for i in 0..2 {
        let out = d.join(format!("part{i}.parquet"));
        cli_ok(&[
            "scan",
            "fixture",
            "--part",
            "rirs",
            "--root",
            s(&root),
            "--out",
            s(&out),
            "--rejects",
            s(&d.join(format!("rejects{i}.parquet"))),
            "--shard",
            &format!("{i}/2"),
        ]);
        manifests.push(out);
    }
    scan_fixture("rirs", d);
    let merged = d.join("merged.parquet");
    let mut args = vec!["merge", "--out", s(&merged), "--manifests"];
    args.extend(manifests.iter().map(|p| s(p)));
    cli_ok(&args);
    let whole = UtteranceManifest::read(&d.join("rirs.parquet")).unwrap();
    assert_eq!(UtteranceManifest::read(&merged).unwrap(), whole);
    assert_eq!(
        UtteranceManifest::read_metadata(&merged).unwrap()[SCANNER_KEY],
        "fixture/rirs"
    );
}

/// The manifests are plain Parquet: pyarrow reads every column and the metadata.
#[test]
fn pyarrow_reads_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scan_fixture("musan", d);
    let script = r#"
import sys, json, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items() if not k.startswith(b"ARROW")}
print(json.dumps({
    "rows": t.num_rows,
    "columns": t.column_names,
    "types": [str(f.type) for f in t.schema],
    "first": {c: t.column(c)[0].as_py() for c in t.column_names},
    "metadata": meta,
}))
"#;
    let manifest = d.join("musan.parquet");
    let out = stage_kit::reference::run_python(script, &[&manifest]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours = UtteranceManifest::read(&manifest).unwrap();
    let first = &ours.utterances[0];
    assert_eq!(v["rows"], ours.utterances.len());
    assert_eq!(
        v["columns"],
        serde_json::json!([
            "utt_id",
            "path",
            "corpus",
            "speaker",
            "session",
            "num_samples",
            "sample_rate",
            "channels",
            "codec",
            "split",
            "emotion",
            "fold",
            "channel"
        ])
    );
    assert_eq!(v["types"][5], "uint64");
    assert_eq!(v["first"]["utt_id"], first.utt_id.as_str());
    assert_eq!(v["first"]["num_samples"], first.num_samples);
    assert_eq!(v["first"]["split"], first.split.as_str());
    assert_eq!(v["first"]["speaker"], serde_json::Value::Null);
    assert_eq!(v["metadata"]["speech_dino.schema"], "utterances/1");
    assert_eq!(
        v["metadata"]["speech_dino.corpus_root"],
        s(&common::fixture())
    );
    assert_eq!(v["metadata"][SCANNER_KEY], "fixture/musan");
}
