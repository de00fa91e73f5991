//! The binary protocol byte by byte through a raw socket: response order under pipelining,
//! and the documented error for each kind of bad input, after which the server keeps serving.

use sutra_protocol::{ConceptId, ErrorCode, Request, Response, StoreConcept, Vector};
use sutra_tests::{frame_bytes, request_bytes, RawConnection, TestServer};

fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(error) => Some(error.code),
        _ => None,
    }
}

async fn assert_healthy(conn: &mut RawConnection, request_id: u32) -> anyhow::Result<()> {
    conn.send(&request_bytes(request_id, Request::Health))
        .await?;
    let frame = conn.expect().await?;
    assert_eq!(frame.request_id, request_id);
    assert!(matches!(frame.response, Response::Health(_)), "{frame:?}");
    Ok(())
}

#[tokio::test]
async fn ten_thousand_pipelined_frames_come_back_in_request_order() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let mut batch = Vec::new();
    for request_id in 1..=10_000_u32 {
        let id = ConceptId::parse(&format!("k{}", request_id % 100))?;
        let request = match request_id % 3 {
            0 => Request::StoreConcept(StoreConcept::new(id, "x")),
            1 => Request::GetConceptById { id },
            _ => Request::Delete { id },
        };
        batch.extend(request_bytes(request_id, request));
    }
    let responses = conn.pipeline(&batch, 10_000).await?;
    let ids: Vec<u32> = responses.iter().map(|frame| frame.request_id).collect();
    assert_eq!(
        ids,
        (1..=10_000).collect::<Vec<_>>(),
        "responses out of order"
    );
    server.stop().await
}

#[tokio::test]
async fn unknown_opcode_gets_an_error_and_the_connection_stays_usable() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    conn.send(&frame_bytes(&[1, 0x7f, 7, 0, 0, 0])).await?;
    let frame = conn.expect().await?;
    assert_eq!((frame.request_id, frame.opcode), (7, 0x7f));
    assert_eq!(error_code(&frame.response), Some(ErrorCode::UnknownOpcode));
    assert_healthy(&mut conn, 8).await?;
    server.stop().await
}

#[tokio::test]
async fn bad_bodies_get_their_documented_codes() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "bad UTF-8 id",
            vec![1, 3, 1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xfe],
            ErrorCode::InvalidArgument,
        ),
        (
            "empty id",
            vec![1, 3, 2, 0, 0, 0, 0, 0, 0, 0],
            ErrorCode::InvalidArgument,
        ),
        (
            "truncated body",
            vec![1, 3, 3, 0, 0, 0, 9, 0, 0, 0, b'a'],
            ErrorCode::MalformedFrame,
        ),
        (
            "trailing bytes",
            vec![1, 1, 4, 0, 0, 0, 0xaa],
            ErrorCode::MalformedFrame,
        ),
        (
            "version 2",
            vec![2, 1, 5, 0, 0, 0],
            ErrorCode::UnsupportedVersion,
        ),
        (
            "id over MAX_ID_BYTES",
            [vec![1, 3, 6, 0, 0, 0, 0x01, 0x02, 0, 0], vec![b'x'; 513]].concat(),
            ErrorCode::InvalidArgument,
        ),
        ("short header", vec![1, 3], ErrorCode::MalformedFrame),
    ];
    for (name, payload, code) in cases {
        conn.send(&frame_bytes(&payload)).await?;
        let frame = conn.expect().await?;
        assert_eq!(error_code(&frame.response), Some(code), "{name}: {frame:?}");
    }
    assert_healthy(&mut conn, 99).await?;
    server.stop().await
}

#[tokio::test]
async fn wrong_dimension_names_expected_and_got() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let mut store = StoreConcept::new(ConceptId::parse("v")?, "c");
    store.embedding = Some(Vector::new(vec![1.0; 255], 255)?);
    conn.send(&request_bytes(1, Request::StoreConcept(store)))
        .await?;
    let frame = conn.expect().await?;
    let Response::Error(error) = frame.response else {
        panic!("expected an error, got {frame:?}")
    };
    assert_eq!(error.code, ErrorCode::DimensionMismatch);
    assert_eq!(error.message, "embedding has 255 values, expected 256");
    conn.send(&request_bytes(
        2,
        Request::GetConceptById {
            id: ConceptId::parse("v")?,
        },
    ))
    .await?;
    assert_eq!(
        error_code(&conn.expect().await?.response),
        Some(ErrorCode::NotFound),
        "nothing was stored"
    );
    server.stop().await
}

#[tokio::test]
async fn non_finite_vector_values_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let mut store = StoreConcept::new(ConceptId::parse("nan")?, "c");
    store.embedding = Some(Vector::new(vec![0.5; 256], 256)?);
    let mut bytes = request_bytes(1, Request::StoreConcept(store));
    // Overwrite the last f32 (before the ttl option tag) with NaN.
    let at = bytes.len() - 1 - 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    conn.send(&bytes).await?;
    assert_eq!(
        error_code(&conn.expect().await?.response),
        Some(ErrorCode::InvalidArgument)
    );
    server.stop().await
}

#[tokio::test]
async fn oversized_frame_gets_error_then_close_and_others_keep_working() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        config.limits.max_frame_bytes = 2 * 1024 * 1024;
    })
    .await?;
    let mut bystander = RawConnection::connect(server.addr).await?;
    assert_healthy(&mut bystander, 1).await?;

    let mut conn = RawConnection::connect(server.addr).await?;
    // Exactly at the limit is accepted (as a frame; the body itself is garbage).
    let mut at_limit = (2 * 1024 * 1024_u32).to_be_bytes().to_vec();
    at_limit.extend(std::iter::repeat_n(0xab, 2 * 1024 * 1024));
    conn.send(&at_limit).await?;
    assert_eq!(
        error_code(&conn.expect().await?.response),
        Some(ErrorCode::UnsupportedVersion)
    );
    // One byte over: FrameTooLarge with request id 0, then the server closes.
    conn.send(&(2 * 1024 * 1024 + 1_u32).to_be_bytes()).await?;
    let frame = conn.expect().await?;
    assert_eq!(
        (frame.request_id, error_code(&frame.response)),
        (0, Some(ErrorCode::FrameTooLarge))
    );
    conn.expect_closed().await?;

    assert_healthy(&mut bystander, 2).await?;
    server.stop().await
}

#[tokio::test]
async fn garbage_after_a_zero_byte_is_refused_without_allocating_it() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    // 0x00 selects binary mode; 0x00ffffff is 16 MiB - 1, over the 4 MiB default.
    conn.send(&[
        0x00, 0xff, 0xff, 0xff, b'g', b'a', b'r', b'b', b'a', b'g', b'e',
    ])
    .await?;
    let frame = conn.expect().await?;
    assert_eq!(error_code(&frame.response), Some(ErrorCode::FrameTooLarge));
    conn.expect_closed().await?;
    let mut other = RawConnection::connect(server.addr).await?;
    assert_healthy(&mut other, 1).await?;
    server.stop().await
}

#[tokio::test]
async fn a_frame_split_across_many_writes_is_reassembled() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut conn = RawConnection::connect(server.addr).await?;
    let bytes = request_bytes(42, Request::Stats);
    for byte in &bytes {
        conn.send(std::slice::from_ref(byte)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let frame = conn.expect().await?;
    assert_eq!(frame.request_id, 42);
    assert!(matches!(frame.response, Response::Stats(_)));
    server.stop().await
}
