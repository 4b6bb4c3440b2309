//! The end of a component's log file, for error messages.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Only this much of the end of a log is read: apiserver logs grow to megabytes.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of the file at `path`, or a note saying why it could not be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match read_end(path) {
        Ok(text) => last_lines(&text, lines).to_owned(),
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

fn read_end(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The suffix of `text` holding its last `lines` lines (a trailing newline does not count
/// as an empty last line).
pub(crate) fn last_lines(text: &str, lines: usize) -> &str {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if lines == 0 {
        return "";
    }
    match body.rmatch_indices('\n').nth(lines - 1) {
        Some((newline, _)) => &body[newline + 1..],
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(last_lines("a\nb\nc", 0), "");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn reads_the_end_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        text.push_str("the end\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 2), "line 19999\nthe end");
    }

    #[test]
    fn a_missing_file_is_described_not_fatal() {
        let shown = tail(Path::new("/nonexistent/testenv.log"), 3);
        assert!(
            shown.contains("could not read /nonexistent/testenv.log"),
            "{shown}"
        );
    }
}
