//! Printing a command's answer to stdout. A reader that stops early (`... | head -1`) closes
//! the pipe; that ends the output quietly, as for other command-line tools, instead of
//! panicking as `println!` does.

use std::io::{ErrorKind, Write};

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
