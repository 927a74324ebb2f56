//! Manifests: the Parquet tables through which every stage finds its inputs. Each table is
//! versioned in its metadata and read back with checks that name the file and the problem.

pub mod error;
pub mod pseudo_labels;
pub mod rejects;
pub mod table;
pub mod trials;
pub mod utterances;

pub use error::{ManifestError, Result};
pub use pseudo_labels::{PseudoLabel, PseudoLabels};
pub use rejects::{Reject, RejectList};
pub use trials::{Trial, TrialList};
pub use utterances::{Utterance, UtteranceManifest};
