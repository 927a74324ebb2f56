//! Augmentation sets: MUSAN and RIRS_NOISES. Their category goes into `split`, where the
//! augmentation cache reads it; the utterance id is the path below the set's folder without
//! extension.

use std::path::Path;

use crate::error::Result;
use crate::scan::listing::{audio_files, under, without_extension};
use crate::scan::{Candidate, Listing};

/// MUSAN's three categories.
pub const MUSAN_CATEGORIES: &[&str] = &["noise", "music", "speech"];

/// MUSAN under `root/base`: `{noise,music,speech}/<source>/<file>.wav`.
pub fn musan(root: &Path, base: &str) -> Result<Listing> {
    list(root, base, |inner| {
        let category = inner.split('/').next().unwrap_or("");
        (MUSAN_CATEGORIES.contains(&category) && inner.contains('/'))
            .then(|| category.to_owned())
            .ok_or_else(|| "expected {noise,music,speech}/<source>/<file>".to_owned())
    })
}

/// RIRS_NOISES under `root/base`: `simulated_rirs/{smallroom,mediumroom,largeroom}/...`
/// (category: the room size), `real_rirs_isotropic_noises/*` (`real` for impulse responses,
/// `isotropic_noise` for the noise recordings, whose names contain `noise`) and
/// `pointsource_noises/*` (`pointsource_noise`).
pub fn rirs(root: &Path, base: &str) -> Result<Listing> {
    list(root, base, |inner| {
        let parts: Vec<&str> = inner.split('/').collect();
        match parts[..] {
            [
                "simulated_rirs",
                room @ ("smallroom" | "mediumroom" | "largeroom"),
                _,
                ..,
            ] => Ok(room.to_owned()),
            ["real_rirs_isotropic_noises", name] if name.contains("noise") => {
                Ok("isotropic_noise".to_owned())
            }
            ["real_rirs_isotropic_noises", _] => Ok("real".to_owned()),
            ["pointsource_noises", _] => Ok("pointsource_noise".to_owned()),
            _ => Err(
                "expected simulated_rirs/<size>room/..., real_rirs_isotropic_noises/<file> \
                 or pointsource_noises/<file>"
                    .to_owned(),
            ),
        }
    })
}

/// Lists `root/base`, the category of each file coming from its path below `base`.
fn list(
    root: &Path,
    base: &str,
    category: impl Fn(&str) -> std::result::Result<String, String>,
) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, base)? {
        let inner = under(&path, base);
        match category(inner) {
            Ok(split) => {
                listing
                    .candidates
                    .push(Candidate::new(&path, without_extension(inner), &split))
            }
            Err(reason) => listing.reject(&path, "layout", reason),
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rir_categories() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "simulated_rirs/smallroom/Room001/Room001-00001.wav",
            "simulated_rirs/largeroom/Room002/Room002-00001.wav",
            "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav",
            "real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav",
            "pointsource_noises/noise-free-sound-0001.wav",
            "stray.wav",
        ] {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let listing = rirs(dir.path(), "").unwrap();
        let splits: Vec<(&str, &str)> = listing
            .candidates
            .iter()
            .map(|c| (c.utt_id.as_str(), c.split.as_str()))
            .collect();
        assert_eq!(
            splits,
            [
                (
                    "pointsource_noises/noise-free-sound-0001",
                    "pointsource_noise"
                ),
                (
                    "real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1",
                    "isotropic_noise"
                ),
                (
                    "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla",
                    "real"
                ),
                (
                    "simulated_rirs/largeroom/Room002/Room002-00001",
                    "largeroom"
                ),
                (
                    "simulated_rirs/smallroom/Room001/Room001-00001",
                    "smallroom"
                ),
            ]
        );
        assert_eq!(listing.rejects.len(), 1);
        assert_eq!(listing.rejects[0].path, "stray.wav");
    }
}
