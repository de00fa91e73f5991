//! Telling the three dialects apart from a connection's first bytes, without consuming them.

use std::time::Duration;

use tokio::net::TcpStream;

/// Bytes peeked to find the first line of a non-binary client.
pub const SNIFF_BYTES: usize = 1024;

/// How often the sniffer looks again for the end of an incomplete first line.
const SNIFF_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Binary,
    Http,
    Text,
}

/// Waits for the first bytes and classifies the connection; `None` when the peer closed
/// without sending anything.
pub(crate) async fn sniff(
    stream: &TcpStream,
    sniff_timeout: Duration,
) -> std::io::Result<Option<Dialect>> {
    let mut buf = [0_u8; SNIFF_BYTES];
    let first = stream.peek(&mut buf[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    if buf[0] == 0x00 {
        return Ok(Some(Dialect::Binary));
    }
    let deadline = tokio::time::Instant::now() + sniff_timeout;
    loop {
        let len = stream.peek(&mut buf).await?;
        let seen = buf.get(..len).unwrap_or_default();
        let complete = seen.contains(&b'\n');
        let undecided =
            may_become_http(seen) && len < buf.len() && tokio::time::Instant::now() < deadline;
        if complete || !undecided {
            return Ok(Some(if complete && looks_like_http(seen) {
                Dialect::Http
            } else {
                Dialect::Text
            }));
        }
        tokio::time::sleep(SNIFF_POLL).await;
    }
}

fn is_method(token: &[u8]) -> bool {
    (1..=16).contains(&token.len()) && token.iter().all(u8::is_ascii_uppercase)
}

/// `METHOD SP request-target SP HTTP/1.x`, with an optional trailing `\r`.
fn is_http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|byte| *byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_method(method)
        && !target.is_empty()
        && target.iter().all(u8::is_ascii_graphic)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// Whether an incomplete first line could still turn out to be an HTTP request line.
fn may_become_http(prefix: &[u8]) -> bool {
    let mut parts = prefix.splitn(3, |byte| *byte == b' ');
    let method = parts.next().unwrap_or_default();
    let Some(target) = parts.next() else {
        return method.len() <= 16 && method.iter().all(u8::is_ascii_uppercase);
    };
    if !is_method(method) || !target.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    match parts.next() {
        None => true,
        Some(version) => {
            let version = version.strip_suffix(b"\r").unwrap_or(version);
            b"HTTP/1.1".starts_with(version) || b"HTTP/1.0".starts_with(version)
        }
    }
}

/// Whether the first bytes of a connection are (or may become) an HTTP request line.
pub(crate) fn looks_like_http(seen: &[u8]) -> bool {
    match seen.iter().position(|byte| *byte == b'\n') {
        Some(end) => is_http_request_line(seen.get(..end).unwrap_or_default()),
        None => may_become_http(seen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_recognised() {
        assert!(is_http_request_line(b"GET /health HTTP/1.1\r"));
        assert!(is_http_request_line(b"POST /embed HTTP/1.0"));
        assert!(!is_http_request_line(b"GET doc-1"));
        assert!(!is_http_request_line(b"GET doc 1"));
        assert!(!is_http_request_line(b"get /health HTTP/1.1"));
        assert!(!is_http_request_line(b"GET /health HTTP/2"));
        assert!(!is_http_request_line(b"GET /a b HTTP/1.1"));
    }

    #[test]
    fn incomplete_lines_are_judged_conservatively() {
        assert!(may_become_http(b"GE"));
        assert!(may_become_http(b"GET /hea"));
        assert!(may_become_http(b"GET /health HTT"));
        assert!(!may_become_http(b"get"));
        assert!(!may_become_http(b"GET /health X"));
        assert!(!may_become_http(b"STORE d1 note"));
    }
}
