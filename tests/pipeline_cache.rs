//! The stage cache of `cargo xtask pipeline` on the fixture corpus: a second run skips
//! everything, an edit of the DINO configuration reruns pretraining and what depends on it
//! (not the scan or the audio caches), and `--only` reruns one stage.

use end_to_end::{edit, run, small_fixture_pipeline};

const NOT_DOWNSTREAM_OF_PRETRAIN: [&str; 3] = ["scan", "prepare", "baseline"];

#[test]
fn stages_rerun_exactly_when_what_they_depend_on_changes() {
    let work = tempfile::tempdir().unwrap();
    let pipeline = small_fixture_pipeline(work.path()).unwrap();
    let run_dir = work.path().join("run");

    let first = run(&pipeline, &run_dir, None).unwrap();
    assert!(
        first.skipped.is_empty() && first.resumed.is_empty(),
        "{first:?}"
    );
    for stage in [
        "scan",
        "prepare",
        "pretrain",
        "cluster-r1",
        "eval-sv-plda",
        "finetune-r1",
        "eval-sv-r1",
    ] {
        assert!(
            first.ran.iter().any(|s| s == stage),
            "{stage} missing: {first:?}"
        );
    }
    assert!(run_dir.join("report.md").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    // DINO and the round are each scored by cosine, AS-norm, PLDA and PLDA + AS-norm.
    for system in [&report["systems"][1], &report["systems"][2]] {
        for key in [
            "fixture",
            "fixture+asnorm",
            "fixture+plda",
            "fixture+plda+asnorm",
        ] {
            assert!(
                system["sv"][key]["eer"].is_number(),
                "{key} missing from {system}"
            );
        }
    }
    let round = &report["clustering"][0];
    for key in ["kmeans.k", "cleanup.kept_share", "diagnostics.kept.nmi"] {
        assert!(round[key].is_number(), "{key} missing from {round}");
    }

    let second = run(&pipeline, &run_dir, None).unwrap();
    assert!(
        second.ran.is_empty() && second.resumed.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.skipped, first.ran);

    edit(&pipeline, &["pretrain", "optim"], "lr", 0.004.into()).unwrap();
    let third = run(&pipeline, &run_dir, None).unwrap();
    assert_eq!(third.skipped, NOT_DOWNSTREAM_OF_PRETRAIN);
    let downstream: Vec<String> = first
        .ran
        .iter()
        .filter(|s| !NOT_DOWNSTREAM_OF_PRETRAIN.contains(&s.as_str()))
        .cloned()
        .collect();
    assert_eq!(third.ran, downstream);

    let fourth = run(&pipeline, &run_dir, Some("eval-sv")).unwrap();
    assert_eq!(fourth.ran, ["eval-sv"]);
    assert_eq!(fourth.skipped.len(), first.ran.len() - 1);
}
