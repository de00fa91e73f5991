//! The client's input path: frame codec, then the response decoder, on arbitrary server
//! bytes. Decoded responses must re-encode to a fixed point.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sutra_protocol::{decode_response, FrameCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(1 << 20);
    let mut input = BytesMut::from(data);
    while let Ok(Some(payload)) = codec.decode(&mut input) {
        let Ok(frame) = decode_response(&payload) else {
            continue;
        };
        let mut encoded = BytesMut::new();
        frame
            .encode_payload(&mut encoded)
            .expect("a decoded response encodes");
        let again = decode_response(&encoded).expect("an encoded response decodes");
        let mut reencoded = BytesMut::new();
        again
            .encode_payload(&mut reencoded)
            .expect("a decoded response encodes");
        assert_eq!(encoded, reencoded, "encoding is a fixed point");
    }
});
