//! Every scanner on a small synthetic tree that mimics the real layout (label files
//! included), RAVDESS for real, and the fixture's four parts.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use data_manifest::scan::{FixturePart, GenericOptions, Layout, ScanOptions, ScanOutcome, scan};
use data_manifest::{Utterance, UtteranceManifest};

fn run(layout: Layout, root: &Path) -> ScanOutcome {
    scan(&layout, root, &ScanOptions::default()).unwrap()
}

fn ids(m: &UtteranceManifest) -> Vec<&str> {
    m.utterances.iter().map(|u| u.utt_id.as_str()).collect()
}

fn find<'a>(m: &'a UtteranceManifest, id: &str) -> &'a Utterance {
    m.utterances.iter().find(|u| u.utt_id == id).unwrap()
}

/// (path, reason) of every reject.
fn rejects(o: &ScanOutcome) -> Vec<(&str, &str)> {
    o.rejects
        .rejects
        .iter()
        .map(|r| (r.path.as_str(), r.reason.as_str()))
        .collect()
}

fn distinct<'a>(values: impl Iterator<Item = Option<&'a str>>) -> BTreeSet<&'a str> {
    values.flatten().collect()
}

#[test]
fn voxceleb1() {
    let dir = common::wav_tree(&[
        "wav/id10270/x6uYqmx31kE/00001.wav",
        "wav/id10270/8jEAjG6SegY/00008.wav",
        "wav/id10001/1zcIwhmdeo4/00001.wav",
        "wav/id10001/stray.wav",
    ]);
    common::write_text(dir.path(), "wav/README.txt", "not audio, not looked at");
    let o = run(Layout::VoxCeleb1, dir.path());
    let m = &o.manifest;
    assert_eq!(
        ids(m),
        [
            "id10001/1zcIwhmdeo4/00001",
            "id10270/8jEAjG6SegY/00008",
            "id10270/x6uYqmx31kE/00001"
        ]
    );
    let u = find(m, "id10270/x6uYqmx31kE/00001");
    assert_eq!(
        (u.speaker.as_deref(), u.session.as_deref(), u.split.as_str()),
        (Some("id10270"), Some("x6uYqmx31kE"), "test")
    );
    assert_eq!(u.path, "wav/id10270/x6uYqmx31kE/00001.wav");
    assert_eq!(find(m, "id10001/1zcIwhmdeo4/00001").split, "dev");
    assert_eq!(rejects(&o).len(), 1);
    assert!(rejects(&o)[0].1.starts_with("layout: "));
    assert_eq!(m.corpus_root, dir.path());
}

#[test]
fn voxceleb2_m4a_and_converted_copies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::encode_m4a(&[
        (
            &d.join("dev/aac/id00012/21Uxsk56VDQ/00001.m4a"),
            20_000,
            16_000,
            1,
        ),
        (
            &d.join("dev/aac/id00012/21Uxsk56VDQ/00002.m4a"),
            30_000,
            16_000,
            1,
        ),
        (
            &d.join("test/aac/id00017/01dfn2spqyE/00001.m4a"),
            25_000,
            16_000,
            1,
        ),
    ]);
    // The same utterance converted to WAV beside the original: a duplicate id.
    common::place_wavs(d, &["dev/wav/id00012/21Uxsk56VDQ/00001.wav"]);
    let o = run(Layout::VoxCeleb2, d);
    let m = &o.manifest;
    assert_eq!(
        ids(m),
        [
            "id00012/21Uxsk56VDQ/00001",
            "id00012/21Uxsk56VDQ/00002",
            "id00017/01dfn2spqyE/00001"
        ]
    );
    let u = find(m, "id00012/21Uxsk56VDQ/00002");
    assert_eq!(
        (u.num_samples, u.codec.as_str(), u.split.as_str()),
        (30_000, "aac", "dev")
    );
    assert_eq!(u.session.as_deref(), Some("21Uxsk56VDQ"));
    assert_eq!(find(m, "id00017/01dfn2spqyE/00001").split, "test");
    assert_eq!(
        rejects(&o),
        [(
            "dev/wav/id00012/21Uxsk56VDQ/00001.wav",
            "duplicate: utterance id id00012/21Uxsk56VDQ/00001 is already taken by \
             dev/aac/id00012/21Uxsk56VDQ/00001.m4a"
        )]
    );
    assert_eq!(o.summary.rejects_by_reason["duplicate"], 1);

    // A corpus converted to WAV alone scans the same way.
    let converted = tempfile::tempdir().unwrap();
    common::place_wavs(converted.path(), &["wav/id00012/21Uxsk56VDQ/00001.wav"]);
    let o = run(Layout::VoxCeleb2, converted.path());
    assert_eq!(ids(&o.manifest), ["id00012/21Uxsk56VDQ/00001"]);
    assert_eq!(o.manifest.utterances[0].codec, "pcm_s16le");
}

#[test]
fn generic_components_and_regex() {
    let dir = common::wav_tree(&[
        "spk1/day1/a.wav",
        "spk1/day2/b.wav",
        "spk2/day1/c.wav",
        "loose.wav",
    ]);
    let o = run(
        Layout::Generic(GenericOptions {
            speaker_component: Some(0),
            session_component: Some(-2),
            regex: None,
            split: "train".into(),
        }),
        dir.path(),
    );
    assert_eq!(
        ids(&o.manifest),
        ["spk1/day1/a", "spk1/day2/b", "spk2/day1/c"]
    );
    let b = find(&o.manifest, "spk1/day2/b");
    assert_eq!(
        (b.speaker.as_deref(), b.session.as_deref()),
        (Some("spk1"), Some("day2"))
    );
    // loose.wav has one component: no session component -2.
    assert_eq!(rejects(&o).len(), 1);

    let o = run(
        Layout::Generic(GenericOptions {
            speaker_component: None,
            session_component: None,
            regex: Some(
                regex::Regex::new(r"^(?P<speaker>spk\d)/(?P<split>day\d)/(?P<utt>\w+)\.wav$")
                    .unwrap(),
            ),
            split: "train".into(),
        }),
        dir.path(),
    );
    assert_eq!(ids(&o.manifest), ["a", "b", "c"]);
    assert_eq!(find(&o.manifest, "b").split, "day2");
    assert_eq!(rejects(&o)[0].0, "loose.wav");
    assert!(rejects(&o)[0].1.starts_with("layout: path does not match"));
}

#[test]
fn librispeech_chapters_are_sessions() {
    let dir = common::wav_tree(&[
        "train-clean-100/19/198/19-198-0000.flac",
        "train-clean-100/19/198/19-198-0001.flac",
        "train-clean-100/19/227/19-227-0000.flac",
        "dev-clean/84/121123/84-121123-0000.flac",
        "train-clean-100/19/198/20-198-0002.flac",
        "train-clean-100/19/19-198-0003.flac",
    ]);
    common::write_text(
        dir.path(),
        "train-clean-100/19/198/19-198.trans.txt",
        "0000 HELLO",
    );
    let o = run(Layout::LibriSpeech, dir.path());
    let m = &o.manifest;
    assert_eq!(
        ids(m),
        [
            "84-121123-0000",
            "19-198-0000",
            "19-198-0001",
            "19-227-0000"
        ]
    );
    let u = find(m, "19-227-0000");
    assert_eq!(
        (u.speaker.as_deref(), u.session.as_deref(), u.split.as_str()),
        (Some("19"), Some("227"), "train-clean-100")
    );
    assert_eq!(find(m, "84-121123-0000").split, "dev-clean");
    let r = rejects(&o);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r[1].1.contains("disagrees with its folders 19/198"),
        "{r:?}"
    );
    assert!(r[0].1.starts_with("layout: expected"), "{r:?}");
}

#[test]
fn cnceleb_genre_and_session() {
    let dir = common::wav_tree(&[
        "data/id00001/interview-01-001.flac",
        "data/id00001/interview-01-002.flac",
        "data/id00001/singing-02-001.flac",
        "data/id00002/live_broadcast-01-010.flac",
        "data/id00002/noname.flac",
        "eval/test/id00800-singing-01-001.flac",
    ]);
    let o = run(Layout::CnCeleb, dir.path());
    let m = &o.manifest;
    assert_eq!(
        ids(m),
        [
            "id00001/interview-01-001",
            "id00001/interview-01-002",
            "id00001/singing-02-001",
            "id00002/live_broadcast-01-010"
        ]
    );
    assert_eq!(
        distinct(m.utterances.iter().map(|u| u.session.as_deref())),
        ["interview-01", "live_broadcast-01", "singing-02"].into()
    );
    assert_eq!(
        find(m, "id00002/live_broadcast-01-010").speaker.as_deref(),
        Some("id00002")
    );
    let r = rejects(&o);
    assert_eq!(
        r,
        [(
            "data/id00002/noname.flac",
            "layout: expected data/<speaker>/<genre>-<session>-<utterance>.flac"
        )]
    );
}

#[test]
fn crema_d() {
    let dir = common::wav_tree(&[
        "AudioWAV/1001_DFA_ANG_XX.wav",
        "AudioWAV/1001_IEO_HAP_HI.wav",
        "AudioWAV/1002_DFA_NEU_XX.wav",
        "AudioWAV/1002_DFA_XYZ_XX.wav",
    ]);
    let o = run(Layout::CremaD, dir.path());
    assert_eq!(
        ids(&o.manifest),
        ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_NEU_XX"]
    );
    let u = find(&o.manifest, "1001_IEO_HAP_HI");
    assert_eq!(
        (u.speaker.as_deref(), u.emotion.as_deref(), u.split.as_str()),
        (Some("1001"), Some("HAP"), "all")
    );
    assert_eq!(rejects(&o)[0].0, "AudioWAV/1002_DFA_XYZ_XX.wav");
}

#[test]
fn iemocap_four_classes_sessions_and_missing_audio() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wav = |dialog: &str, turn: &str| format!("Session1/sentences/wav/{dialog}/{turn}.wav");
    let dialog = "Ses01F_impro01";
    let turns = [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01F_impro01_F001",
        "Ses01F_impro01_M001",
    ];
    let rels: Vec<String> = turns.iter().map(|t| wav(dialog, t)).collect();
    let mut rels: Vec<&str> = rels.iter().map(String::as_str).collect();
    let unlabelled = wav(dialog, "Ses01F_impro01_F009");
    rels.push(&unlabelled);
    common::place_wavs(d, &rels);
    common::place_wavs(
        d,
        &["Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_F000.wav"],
    );
    common::write_text(
        d,
        "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt",
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n\
         [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n\
         C-E2:\tNeutral;\t()\n\
         [10.0100 - 11.3925]\tSes01F_impro01_M000\texc\t[3.0, 3.0, 3.0]\n\
         [14.8872 - 18.0175]\tSes01F_impro01_F001\tfru\t[2.0, 3.5, 3.5]\n\
         [19.2900 - 20.7875]\tSes01F_impro01_M001\tang\t[2.0, 3.5, 3.5]\n\
         [21.0 - 22.0]\tSes01F_impro01_M002\tsad\t[2.0, 3.5, 3.5]\n",
    );
    common::write_text(
        d,
        "Session2/dialog/EmoEvaluation/Ses02M_script01_1.txt",
        "[1.0 - 2.0]\tSes02M_script01_1_F000\tsad\t[2.0, 2.0, 2.0]\n",
    );
    let o = run(
        Layout::Iemocap {
            all_emotions: false,
        },
        d,
    );
    assert_eq!(
        ids(&o.manifest),
        [
            "Ses01F_impro01_F000",
            "Ses01F_impro01_M000",
            "Ses01F_impro01_M001",
            "Ses02M_script01_1_F000"
        ]
    );
    let u = find(&o.manifest, "Ses01F_impro01_M000");
    assert_eq!(
        (
            u.speaker.as_deref(),
            u.emotion.as_deref(),
            u.fold.as_deref(),
            u.session.as_deref()
        ),
        (
            Some("Ses01M"),
            Some("hap"),
            Some("Session1"),
            Some("Session1")
        )
    );
    let u = find(&o.manifest, "Ses02M_script01_1_F000");
    assert_eq!(
        (u.speaker.as_deref(), u.fold.as_deref()),
        (Some("Ses02F"), Some("Session2"))
    );
    let r = rejects(&o);
    assert!(r.contains(&(
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M002.wav",
        "missing: labelled in dialog/EmoEvaluation but no audio file"
    )));
    assert_eq!(o.summary.rejected, 1);
    assert_eq!(o.summary.excluded, 2, "{r:?}");

    let all = run(Layout::Iemocap { all_emotions: true }, d);
    assert_eq!(
        find(&all.manifest, "Ses01F_impro01_F001")
            .emotion
            .as_deref(),
        Some("fru")
    );
}

#[test]
fn msp_podcast_labels_splits_and_speakers() {
    let dir = common::wav_tree(&[
        "Audios/MSP-PODCAST_0001_0008.wav",
        "Audios/MSP-PODCAST_0001_0010.wav",
        "Audios/MSP-PODCAST_0002_0001.wav",
        "Audios/MSP-PODCAST_0003_0001.wav",
    ]);
    let d = dir.path();
    common::write_text(
        d,
        "Labels/labels_consensus.csv",
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n\
         MSP-PODCAST_0001_0008.wav,N,4.2,4.0,4.4,127,Female,Train\n\
         MSP-PODCAST_0001_0010.wav,X,4.2,4.0,4.4,127,Female,Train\n\
         MSP-PODCAST_0002_0001.wav,A,4.2,4.0,4.4,Unknown,Male,Test1\n\
         MSP-PODCAST_0009_0001.wav,S,4.2,4.0,4.4,12,Male,Development\n",
    );
    let o = run(
        Layout::MspPodcast {
            all_emotions: false,
        },
        d,
    );
    assert_eq!(
        ids(&o.manifest),
        ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0002_0001"]
    );
    let a = find(&o.manifest, "MSP-PODCAST_0001_0008");
    assert_eq!(
        (a.speaker.as_deref(), a.emotion.as_deref(), a.split.as_str()),
        (Some("127"), Some("N"), "train")
    );
    let b = find(&o.manifest, "MSP-PODCAST_0002_0001");
    assert_eq!((b.speaker.as_deref(), b.split.as_str()), (None, "test1"));
    assert_eq!(
        rejects(&o),
        [
            (
                "Audios/MSP-PODCAST_0001_0010.wav",
                "excluded: EmoClass X is not an emotion class"
            ),
            (
                "Audios/MSP-PODCAST_0003_0001.wav",
                "excluded: no label in labels_consensus.csv"
            ),
            (
                "Audios/MSP-PODCAST_0009_0001.wav",
                "missing: labelled in labels_consensus.csv but no audio file"
            ),
        ]
    );
}

#[test]
fn ravdess_synthetic_tree() {
    let dir = common::wav_tree(&[
        "Actor_01/03-01-05-01-02-01-01.wav",
        "Actor_01/03-01-01-01-01-01-01.wav",
        "Actor_02/03-01-08-02-01-02-02.wav",
        "Actor_01/03-02-05-01-02-01-01.wav",
        "Actor_02/03-01-05-01-02-01-01.wav",
    ]);
    let o = run(Layout::Ravdess, dir.path());
    assert_eq!(
        ids(&o.manifest),
        [
            "03-01-01-01-01-01-01",
            "03-01-05-01-02-01-01",
            "03-01-08-02-01-02-02"
        ]
    );
    let u = find(&o.manifest, "03-01-08-02-01-02-02");
    assert_eq!(
        (u.speaker.as_deref(), u.emotion.as_deref()),
        (Some("Actor_02"), Some("surprised"))
    );
    let r = rejects(&o);
    assert_eq!(
        r[0],
        (
            "Actor_01/03-02-05-01-02-01-01.wav",
            "excluded: song (vocal channel 02), not speech"
        )
    );
    assert_eq!(r[1].0, "Actor_02/03-01-05-01-02-01-01.wav");
    assert!(
        r[1].1
            .starts_with("layout: file of Actor_01 in folder Actor_02"),
        "{r:?}"
    );
}

#[test]
fn ravdess_for_real_with_both_scanners() {
    let Some(root) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let o = run(Layout::Ravdess, &root.join("flac16k"));
    let m = &o.manifest;
    assert_eq!(m.utterances.len(), 1440);
    assert_eq!(
        distinct(m.utterances.iter().map(|u| u.speaker.as_deref())).len(),
        24
    );
    let emotions = distinct(m.utterances.iter().map(|u| u.emotion.as_deref()));
    assert_eq!(emotions.len(), 8);
    assert_eq!(o.summary.rejected + o.summary.excluded, 0);
    assert!(
        m.utterances
            .iter()
            .all(|u| u.sample_rate == 16000 && u.codec == "flac")
    );

    // The generic scanner with the actor folder as speaker and the emotion field by regex
    // finds the same utterances, speakers and emotion codes.
    let g = run(
        Layout::Generic(GenericOptions {
            speaker_component: Some(0),
            session_component: None,
            regex: Some(
                regex::Regex::new(
                    r"^Actor_\d+/03-01-(?P<emotion>\d{2})-\d{2}-\d{2}-\d{2}-\d{2}\.flac$",
                )
                .unwrap(),
            ),
            split: "all".into(),
        }),
        &root.join("flac16k"),
    );
    assert_eq!(g.manifest.utterances.len(), 1440);
    assert_eq!(
        distinct(g.manifest.utterances.iter().map(|u| u.speaker.as_deref())).len(),
        24
    );
    assert_eq!(
        distinct(g.manifest.utterances.iter().map(|u| u.emotion.as_deref())).len(),
        8
    );
    for (a, b) in m.utterances.iter().zip(&g.manifest.utterances) {
        assert_eq!(
            (&a.path, &a.speaker, a.num_samples),
            (&b.path, &b.speaker, b.num_samples)
        );
    }
}

#[test]
fn musan_and_rirs_categories() {
    let dir = common::wav_tree(&[
        "musan/noise/free-sound/noise-free-sound-0000.wav",
        "musan/music/fma/music-fma-0000.wav",
        "musan/speech/librivox/speech-librivox-0000.wav",
        "musan/other/x.wav",
        "RIRS_NOISES/simulated_rirs/mediumroom/Room001/Room001-00001.wav",
        "RIRS_NOISES/real_rirs_isotropic_noises/RWCP_type1_rir_circle_ane_imp050.wav",
    ]);
    let d = dir.path();
    let o = run(Layout::Musan, &d.join("musan"));
    let splits: Vec<(&str, &str)> = o
        .manifest
        .utterances
        .iter()
        .map(|u| (u.utt_id.as_str(), u.split.as_str()))
        .collect();
    assert_eq!(
        splits,
        [
            ("music/fma/music-fma-0000", "music"),
            ("noise/free-sound/noise-free-sound-0000", "noise"),
            ("speech/librivox/speech-librivox-0000", "speech"),
        ]
    );
    assert_eq!(rejects(&o)[0].0, "other/x.wav");
    let o = run(Layout::Rirs, &d.join("RIRS_NOISES"));
    let splits: Vec<&str> = o
        .manifest
        .utterances
        .iter()
        .map(|u| u.split.as_str())
        .collect();
    assert_eq!(splits, ["real", "mediumroom"]);
    assert!(o.manifest.utterances.iter().all(|u| u.speaker.is_none()));
}

#[test]
fn fixture_parts() {
    let root = common::fixture();
    let fixture = fixture_corpus::read_summary(&root).unwrap();
    let speakers = fixture.train_speakers.len() + fixture.test_speakers.len();
    let per_speaker = fixture.utterances / speakers;
    let speech = run(Layout::Fixture(FixturePart::Speech), &root);
    let m = &speech.manifest;
    assert_eq!(m.utterances.len(), fixture.utterances);
    assert_eq!(
        speech.summary.splits["train"],
        fixture.train_speakers.len() * per_speaker
    );
    assert_eq!(
        speech.summary.splits["test"],
        fixture.test_speakers.len() * per_speaker
    );
    assert!(m.utterances.iter().all(|u| {
        let speaker = u.speaker.as_deref().unwrap();
        u.split
            == if speaker.starts_with("id0") {
                "train"
            } else {
                "test"
            }
            && u.utt_id.starts_with(speaker)
            && u.path == format!("wav/{}.wav", u.utt_id)
    }));
    assert_eq!(m.corpus_root, root);

    let emotion = run(Layout::Fixture(FixturePart::Emotion), &root);
    assert_eq!(
        distinct(
            emotion
                .manifest
                .utterances
                .iter()
                .map(|u| u.speaker.as_deref())
        )
        .len(),
        8
    );
    assert_eq!(
        distinct(
            emotion
                .manifest
                .utterances
                .iter()
                .map(|u| u.emotion.as_deref())
        )
        .len(),
        6
    );
    assert!(
        emotion.manifest.utterances[0]
            .path
            .starts_with("emotion/AudioWAV/")
    );

    let musan = run(Layout::Fixture(FixturePart::Musan), &root);
    assert_eq!(musan.summary.splits["noise"], 8);
    assert_eq!(musan.summary.splits["music"], 6);
    assert_eq!(musan.summary.splits["speech"], 8);
    assert!(
        musan
            .manifest
            .utterances
            .iter()
            .all(|u| !u.utt_id.starts_with("musan/"))
    );

    let rirs = run(Layout::Fixture(FixturePart::Rirs), &root);
    for room in ["smallroom", "mediumroom", "real"] {
        assert_eq!(rirs.summary.splits[room], 6, "{room}");
    }
    for o in [&speech, &emotion, &musan, &rirs] {
        assert_eq!(o.rejects.rejects.len(), 0, "{:?}", o.rejects);
    }
}

#[test]
fn sphere_files_are_probed_and_two_channel_calls_become_one_utterance_per_side() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("spk1")).unwrap();
    let fields = |count: &'static str, channels: &'static str, coding: &'static str| {
        vec![
            ("sample_count", count),
            ("sample_rate", "8000"),
            ("channel_count", channels),
            ("sample_coding", coding),
            ("sample_n_bytes", if coding == "pcm" { "2" } else { "1" }),
            (
                "sample_byte_format",
                if coding == "pcm" { "10" } else { "1" },
            ),
        ]
    };
    // TIMIT names its SPHERE files .WAV; Switchboard uses .sph.
    std::fs::write(
        d.join("spk1/a.WAV"),
        data_manifest::probe::sphere::write(&fields("800", "1", "pcm"), &[1; 1600]),
    )
    .unwrap();
    std::fs::write(
        d.join("spk1/call.sph"),
        data_manifest::probe::sphere::write(&fields("400", "2", "ulaw"), &[7; 800]),
    )
    .unwrap();
    std::fs::write(
        d.join("spk1/packed.sph"),
        data_manifest::probe::sphere::write(
            &fields("400", "1", "ulaw,embedded-shorten-v2.00"),
            &[0; 90],
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("spk1/cut.sph"),
        data_manifest::probe::sphere::write(&fields("400", "1", "alaw"), &[0; 90]),
    )
    .unwrap();
    let outcome = scan(
        &Layout::Generic(GenericOptions {
            speaker_component: Some(0),
            session_component: None,
            regex: None,
            split: "test".into(),
        }),
        d,
        &ScanOptions::default(),
    )
    .unwrap();
    let ids: Vec<(&str, Option<u16>, &str)> = outcome
        .manifest
        .utterances
        .iter()
        .map(|u| (u.utt_id.as_str(), u.channel, u.codec.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("spk1/a", None, "pcm_s16be"),
            ("spk1/call-A", Some(0), "pcm_mulaw"),
            ("spk1/call-B", Some(1), "pcm_mulaw"),
        ]
    );
    let call = find(&outcome.manifest, "spk1/call-B");
    assert_eq!(
        (call.num_samples, call.sample_rate, call.channels),
        (400, 8000, 2)
    );
    assert_eq!(call.path, "spk1/call.sph");
    let reasons = rejects(&outcome);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == "spk1/cut.sph" && reasons[0].1.starts_with("truncated:"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "spk1/packed.sph" && reasons[1].1.contains("shorten"),
        "{reasons:?}"
    );
    // The channel column survives the Parquet round trip.
    let path = d.join("utterances.parquet");
    outcome.manifest.write(&path).unwrap();
    assert_eq!(UtteranceManifest::read(&path).unwrap(), outcome.manifest);
}

#[test]
fn unreadable_entries_are_rejects_and_duplicates_are_resolved_after_probing() {
    let dir = common::wav_tree(&["spk1/x.wav", "spk1/y.wav"]);
    let d = dir.path();
    // An empty x.flac sorts before the good x.wav of the same utterance id.
    std::fs::write(d.join("spk1/x.flac"), b"").unwrap();
    // A symbolic-link loop and a dangling link.
    std::os::unix::fs::symlink(d, d.join("spk1/loop")).unwrap();
    std::os::unix::fs::symlink(d.join("gone.wav"), d.join("spk1/dangling.wav")).unwrap();
    // A file name that is not UTF-8 (no manifest can name it).
    let latin1 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"z\xe9.wav");
    std::fs::copy(d.join("spk1/y.wav"), d.join("spk1").join(latin1)).unwrap();
    let o = run(
        Layout::Generic(GenericOptions {
            speaker_component: Some(0),
            session_component: None,
            regex: None,
            split: "train".into(),
        }),
        d,
    );
    assert_eq!(ids(&o.manifest), ["spk1/x", "spk1/y"]);
    assert_eq!(find(&o.manifest, "spk1/x").path, "spk1/x.wav");
    let reasons = rejects(&o);
    let reason = |path: &str| {
        reasons
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("no reject for {path} in {reasons:?}"))
    };
    assert!(reason("spk1/x.flac").starts_with("empty"), "{reasons:?}");
    assert!(
        reason("spk1/loop").starts_with("unreadable: "),
        "{reasons:?}"
    );
    assert!(
        reason("spk1/dangling.wav").starts_with("unreadable: "),
        "{reasons:?}"
    );
    assert!(
        reason("spk1/z\u{fffd}.wav").contains("not valid UTF-8"),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 4, "{reasons:?}");
}
