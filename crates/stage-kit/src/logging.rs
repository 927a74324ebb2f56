//! Logging for stage binaries: human-readable lines on stderr (coloured only on a terminal, so
//! that the stage logs the pipeline runner captures stay plain text) and, when a run folder
//! asks for it, the same events as JSON lines in a file. `RUST_LOG` filters both (default:
//! [`DEFAULT_FILTER`]).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter without `RUST_LOG`: info, except the decoding library's own messages, which
/// name no file (`skipped 4 bytes of junk` for every m4a of VoxCeleb2, a million lines;
/// `probe reached EOF` for a truncated file); the stages report what matters of a file
/// themselves, by name (rejects, length checks). `RUST_LOG=info,symphonia=warn` brings them
/// back.
pub const DEFAULT_FILTER: &str = "info,symphonia=off";

/// Installs the global subscriber. `json_log`, when given, is appended to (created if needed).
pub fn init(json_log: Option<&Path>) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let human = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let json = match json_log {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating log folder {}", parent.display()))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening JSON log {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(Mutex::new(file)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer, for capturing formatted events.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_decoders_own_messages_are_quiet_by_default() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(DEFAULT_FILTER))
            .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "symphonia_format_isomp4::demuxer", "skipped 4 bytes of junk");
            tracing::error!(target: "symphonia_core::io", "a real decoder error");
            tracing::info!(target: "feature_extract::prepare", "3 of 3 utterances cached");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // The decoder names no file; the stages report its failures by file name.
        assert!(
            !text.contains("junk") && !text.contains("a real decoder error"),
            "{text}"
        );
        assert!(text.contains("3 of 3"), "{text}");
    }
}
