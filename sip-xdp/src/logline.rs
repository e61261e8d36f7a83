//! The log's writer: one record, one line. Log fields carry text from
//! packets and the database (a failure row's `source_ip`, a feed's entry, a
//! row the store skipped); a CR or LF in it would start a line that fail2ban
//! and log shippers read as a record of its own, a forged ban line among
//! them. Every control character but the record's final newline is written
//! escaped (`\n`, `\r`, `\x1b`), colour codes only when the log goes to a
//! person at a terminal.

use std::{borrow::Cow, io};

use tracing_subscriber::fmt::MakeWriter;

/// Wraps a `MakeWriter` so that every record it writes is one line.
pub struct OneLine<M> {
    inner: M,
    colours: bool,
}

impl<M> OneLine<M> {
    /// `colours`: the formatter writes ANSI colour codes, which keep their
    /// escape byte.
    pub fn new(inner: M, colours: bool) -> Self {
        Self { inner, colours }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: self.inner.make_writer(),
            colours: self.colours,
        }
    }
}

/// The writer `OneLine` makes. The formatter hands it one whole record per
/// `write_all`.
pub struct Escaping<W> {
    inner: W,
    colours: bool,
}

impl<W: io::Write> io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(&one_line(buf, self.colours))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `record` with every control character escaped but a final newline (and
/// tabs, and ESC when `colours`).
pub fn one_line(record: &[u8], colours: bool) -> Cow<'_, [u8]> {
    let (body, end) = match record.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (record, &b""[..]),
    };
    let raw = |b: u8| b == b'\t' || (b == 0x1b && colours) || !(b < 0x20 || b == 0x7f);
    if body.iter().all(|&b| raw(b)) {
        return Cow::Borrowed(record);
    }
    let mut out = Vec::with_capacity(record.len() + 16);
    for &b in body {
        match b {
            _ if raw(b) => out.push(b),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.extend_from_slice(end);
    Cow::Owned(out)
}

/// Text for a terminal table or a one-line message: control characters
/// escaped as in the log, so a value from a packet or the database cannot
/// move the cursor, clear the screen or start a line of its own.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().flat_map(char::escape_default).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_one_line() {
        let forged = b"WARN skipping failure row source_ip=x\n2026-12-05T05:00:00Z  WARN sip_xdp::ban: banned src_ip=198.51.100.66 reason=flood count=1\r\n";
        let out = one_line(forged, false);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"reason=flood count=1\\r\n"), "{out:?}");
        assert!(out.windows(2).any(|w| w == b"\\n"), "{out:?}");
    }

    #[test]
    fn control_bytes_are_escaped_and_colours_kept_only_when_asked() {
        assert_eq!(&*one_line(b"a\x1b[2Jb\x7f\n", false), b"a\\x1b[2Jb\\x7f\n");
        assert_eq!(
            &*one_line(b"\x1b[33mWARN\x1b[0m x\n", true),
            b"\x1b[33mWARN\x1b[0m x\n"
        );
        assert_eq!(&*one_line(b"tab\tok\n", false), b"tab\tok\n");
        assert!(matches!(one_line(b"plain line\n", false), Cow::Borrowed(_)));
    }

    #[test]
    fn printable_escapes_what_a_terminal_would_obey() {
        assert_eq!(printable("friendly-scanner"), "friendly-scanner");
        assert_eq!(printable("a\x1b[2J\r\nb"), "a\\u{1b}[2J\\r\\nb");
    }
}
