//! The text-mode command parser on arbitrary lines. A command it accepts must also be a
//! valid binary request under the same limits (text mode is not a way around them).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sutra_protocol::text::{parse_text_command, TextCommand};
use sutra_protocol::{decode_request, Limits, RequestFrame};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        vector_dimension: 4,
        ..Limits::default()
    };
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Ok(Some(TextCommand::Request(request))) = parse_text_command(line, &limits) else {
            continue;
        };
        let frame = RequestFrame {
            request_id: 7,
            request,
        };
        let mut encoded = BytesMut::new();
        frame
            .encode_payload(&mut encoded)
            .expect("a parsed command encodes");
        let decoded =
            decode_request(&encoded, &limits).expect("a parsed command is a valid request");
        assert_eq!(decoded.request.opcode(), frame.request.opcode());
    }
});
