//! The server's input path for binary connections: frame codec, then the request decoder,
//! on arbitrary bytes. Every decoded request must re-encode, and encoding is a fixed point
//! (decode(encode(r)) encodes to the same bytes), so the client and the server agree on
//! everything the server accepts.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sutra_protocol::{decode_request, FrameCodec, Limits};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        vector_dimension: 4,
        max_frame_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut codec = FrameCodec::new(limits.max_frame_bytes);
    let mut input = BytesMut::from(data);
    // A framing error ends the connection, as in the server; so does running out of bytes.
    while let Ok(Some(payload)) = codec.decode(&mut input) {
        let Ok(frame) = decode_request(&payload, &limits) else {
            continue;
        };
        let mut encoded = BytesMut::new();
        frame
            .encode_payload(&mut encoded)
            .expect("a decoded request encodes");
        let again = decode_request(&encoded, &limits).expect("an encoded request decodes");
        let mut reencoded = BytesMut::new();
        again
            .encode_payload(&mut reencoded)
            .expect("a decoded request encodes");
        assert_eq!(encoded, reencoded, "encoding is a fixed point");
    }
});
