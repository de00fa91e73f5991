//! Annotated hex dumps, for the documents that pin byte formats to their encoders
//! (`PROTOCOL.md`, `docs/storage-format.md`): the bytes walked field by field, at most 8 bytes
//! a line, each field's first line followed by `# note`. A test encodes an example, dumps it,
//! and compares the dump with the fenced block after `<!-- example: NAME -->` in the document
//! ([`splice`]), so a format change fails until the document changes with it.
//!
//! Test support (feature `test-util`): it panics on bytes that do not match the fields named.

#![allow(
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a dump that does not fit its bytes is a failed test"
)]

use std::fmt::Write as _;

/// Bytes being annotated, front to back.
pub struct Dump<'a> {
    bytes: &'a [u8],
    out: String,
}

impl<'a> Dump<'a> {
    /// A dump of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Dump<'a> {
        Dump {
            bytes,
            out: String::new(),
        }
    }

    /// The annotated lines; every byte must have been walked.
    pub fn finish(self) -> String {
        assert!(
            self.bytes.is_empty(),
            "example has {} unannotated bytes",
            self.bytes.len()
        );
        self.out
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> u8 {
        self.bytes[0]
    }

    /// The next `n` bytes, not consumed.
    pub fn peek_bytes(&self, n: usize) -> &[u8] {
        &self.bytes[..n]
    }

    /// The next `n` bytes under `note` (continuation lines say `...`).
    pub fn take(&mut self, n: usize, note: &str) -> Vec<u8> {
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        if head.is_empty() {
            writeln!(self.out, "{:<24}# {note}", "").unwrap();
        }
        for (index, chunk) in head.chunks(8).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|byte| format!("{byte:02x}")).collect();
            let note = if index == 0 { note } else { "..." };
            writeln!(self.out, "{:<24}# {note}", hex.join(" ")).unwrap();
        }
        head.to_vec()
    }

    /// A little-endian u32 under `note` as given.
    pub fn u32_le(&mut self, note: &str) -> u32 {
        let raw = self.take(4, note);
        u32::from_le_bytes(raw.try_into().unwrap())
    }

    /// A little-endian u32 `name = value (u32 LE)`.
    pub fn u32(&mut self, name: &str) -> u32 {
        let value = u32::from_le_bytes(self.bytes[..4].try_into().unwrap());
        self.take(4, &format!("{name} = {value} (u32 LE)"));
        value
    }

    /// A little-endian u64 `name = value (u64 LE)`.
    pub fn u64(&mut self, name: &str) -> u64 {
        let value = u64::from_le_bytes(self.bytes[..8].try_into().unwrap());
        self.take(8, &format!("{name} = {value} (u64 LE)"));
        value
    }

    /// A string: its u32 LE length, then its UTF-8 bytes.
    pub fn string(&mut self, name: &str) {
        let len = self.u32_le(&format!("{name}: length (u32 LE)"));
        let text = String::from_utf8(self.bytes[..len as usize].to_vec()).unwrap();
        self.take(len as usize, &format!("{name}: {text:?}"));
    }

    /// An option tag (1 present, 0 absent); whether a value follows.
    pub fn option_tag(&mut self, name: &str) -> bool {
        let tag = self.peek();
        self.take(
            1,
            &format!(
                "{name}: option tag = {tag} ({})",
                if tag == 1 { "present" } else { "absent" }
            ),
        );
        tag == 1
    }

    /// An option<u64>.
    pub fn option_u64(&mut self, name: &str) {
        if self.option_tag(name) {
            self.u64(name);
        }
    }

    /// A map<string,string>: a u32 LE count, then key and value strings.
    pub fn attributes(&mut self) {
        let count = self.u32_le("attributes: count (u32 LE)");
        for _ in 0..count {
            self.string("attribute key");
            self.string("attribute value");
        }
    }

    /// An option<vector>: a u32 LE count, then the f32 LE values.
    pub fn option_vector(&mut self) {
        if self.option_tag("embedding") {
            let count = self.u32_le("embedding: count (u32 LE)");
            for index in 0..count {
                let value = f32::from_le_bytes(self.bytes[..4].try_into().unwrap());
                self.take(4, &format!("embedding[{index}] = {value} (f32 LE)"));
            }
        }
    }

    /// A concept's leading fields: id, content, concept_type, model, attributes.
    pub fn concept_head(&mut self) {
        for name in ["id", "content", "concept_type", "model"] {
            self.string(name);
        }
        self.attributes();
    }

    /// A concept's closing fields: created_at_ms, expires_at_ms.
    pub fn concept_tail(&mut self) {
        self.u64("created_at_ms");
        self.option_u64("expires_at_ms");
    }

    /// A whole concept as the protocol encodes it.
    pub fn concept(&mut self) {
        self.concept_head();
        self.option_vector();
        self.concept_tail();
    }
}

/// Replaces the fenced ```` ```text ```` block after each `<!-- example: NAME -->` in
/// `document` with the dump of that example; the new document and the names whose blocks
/// differed. Panics on a marker naming no example.
pub fn splice(document: &str, examples: &[(&'static str, String)]) -> (String, Vec<&'static str>) {
    let mut out = String::new();
    let mut changed = Vec::new();
    let mut rest = document;
    while let Some(start) = rest.find("<!-- example: ") {
        let (before, from_marker) = rest.split_at(start);
        out.push_str(before);
        let marker_end = from_marker
            .find("-->")
            .expect("unterminated example marker")
            + 3;
        let name = from_marker["<!-- example: ".len()..marker_end - 3].trim();
        let (example, dump) = examples
            .iter()
            .find(|(example, _)| *example == name)
            .unwrap_or_else(|| panic!("the document names unknown example {name}"));
        out.push_str(&from_marker[..marker_end]);
        let after_marker = &from_marker[marker_end..];
        let block_start = after_marker
            .find("```text\n")
            .expect("example marker without a ```text block");
        let body_start = block_start + "```text\n".len();
        let body_len = after_marker[body_start..]
            .find("```")
            .expect("unterminated block");
        if &after_marker[body_start..body_start + body_len] != dump {
            changed.push(*example);
        }
        out.push_str(&after_marker[..body_start]);
        out.push_str(dump);
        rest = &after_marker[body_start + body_len..];
    }
    out.push_str(rest);
    (out, changed)
}

/// Checks `document` (at `path`) against `examples`: every example must be named in it and
/// every block must equal its dump; with the environment variable `update` set, rewrites the
/// document instead.
pub fn check_document(path: &std::path::Path, examples: &[(&'static str, String)], update: &str) {
    let document = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{} is unreadable: {error}", path.display()));
    for (name, _) in examples {
        assert!(
            document.contains(&format!("<!-- example: {name} -->")),
            "{} lacks example {name}",
            path.display()
        );
    }
    let (updated, changed) = splice(&document, examples);
    if std::env::var_os(update).is_some() {
        std::fs::write(path, updated).unwrap();
        return;
    }
    assert!(
        changed.is_empty(),
        "the hex dumps in {} differ from the encoder for {changed:?}; after an intended change, regenerate them with {update}=1",
        path.display()
    );
}
