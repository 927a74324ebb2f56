//! Manifests: the Parquet tables through which every stage finds its inputs, and the tools
//! that make them. Each table is versioned in its metadata and read back with checks that
//! name the file and the problem.
//!
//! - Tables: [`utterances`], [`trials`], [`rejects`], [`pseudo_labels`] (on [`table`]).
//! - Making manifests: [`probe`] (audio headers), [`scan`] (corpus layouts -> utterances and
//!   rejects), [`trial_lists`] (official trial files), [`make_trials`] (balanced lists for
//!   corpora without one).
//! - Utilities on manifests: [`stats`], [`folds`] (the `split` subcommand), [`sharding`],
//!   [`filter`], [`merge`]; each reports through [`summary`].

pub mod error;
pub mod filter;
pub mod folds;
pub mod make_trials;
pub mod merge;
pub mod probe;
pub mod pseudo_labels;
pub mod rejects;
pub mod scan;
pub mod sharding;
pub mod stats;
pub mod summary;
pub mod table;
pub mod trial_lists;
pub mod trials;
pub mod utterances;

pub use error::{ManifestError, Result};
pub use pseudo_labels::{PseudoLabel, PseudoLabels};
pub use rejects::{Reject, RejectList};
pub use trials::{Trial, TrialList};
pub use utterances::{Utterance, UtteranceManifest};
