//! The SDK as a library, in-process, against a real proxy.

use std::time::{Duration, Instant};

use mcm_core::sdk::{Client, MeshErrorCode};
use mcm_tests::start_proxy;

const VIDEO: &str = r#"{"connection":{"multipointGroup":{"urn":"lib"}},"payload":{"video":{"width":64,"height":4,"fps":25,"pixelFormat":"v210"}},"maxMetadataSize":16}"#;

fn client_json(socket: &std::path::Path) -> String {
    format!(
        r#"{{"apiVersion":"v1","apiConnectionString":"Socket={}","apiDefaultTimeoutMicroseconds":2000000}}"#,
        socket.display()
    )
}

#[test]
fn sdk_works_from_inside_a_tokio_runtime_and_carries_metadata_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let json = client_json(&proxy.unix);
    // An application that is itself async calls the blocking SDK from a runtime thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = Client::new(&json).expect("client");
        let mut tx = client.create_tx_connection(VIDEO).expect("tx");
        let mut rx = client.create_rx_connection(VIDEO).expect("rx");
        assert_eq!((tx.payload_size(), tx.metadata_size()), (256 * 4, 16));
        let mut sent = Vec::new();
        for i in 0..5u8 {
            let mut b = tx.get_buffer(None).unwrap();
            b.payload_mut().unwrap().fill(i);
            b.metadata_mut().unwrap()[..2].copy_from_slice(&[i, i]);
            b.set_metadata_len(2).unwrap();
            assert!(b
                .set_metadata_len(17)
                .is_err_and(|e| e.code == MeshErrorCode::BadBufLen));
            assert!(b
                .set_payload_len(1025)
                .is_err_and(|e| e.code == MeshErrorCode::BadBufLen));
            assert!(
                b.timestamp() > 1_700_000_000_000_000_000,
                "timestamps are TAI ns, never 0"
            );
            sent.push((b.seq(), b.timestamp()));
            b.put().unwrap();
        }
        // The receiver joined before the first grain: it starts at the head, the last grain.
        let mut b = rx.get_buffer(Some(Duration::from_secs(2))).unwrap();
        assert_eq!((b.seq(), b.timestamp()), sent[4]);
        assert!(b.payload().iter().all(|&x| x == 4));
        assert_eq!(b.metadata(), &[4, 4]);
        assert!(b
            .payload_mut()
            .is_err_and(|e| e.code == MeshErrorCode::BadBufPtr));
        b.put().unwrap();
        let e = rx
            .get_buffer(Some(Duration::from_millis(50)))
            .err()
            .unwrap();
        assert_eq!(e.code, MeshErrorCode::Timeout);
        tx.shutdown().unwrap();
        assert_eq!(
            rx.get_buffer(Some(Duration::from_secs(2)))
                .err()
                .unwrap()
                .code,
            MeshErrorCode::ConnClosed
        );
        // Same-group connections must agree; a second sender is refused with MCM's code.
        let bigger = VIDEO.replace("\"width\":64", "\"width\":128");
        assert_eq!(
            client.create_rx_connection(&bigger).err().unwrap().code,
            MeshErrorCode::ConnConfigIncompat
        );
        assert_eq!(
            client.create_tx_connection(VIDEO).err().unwrap().code,
            MeshErrorCode::ConnConfigIncompat
        );
        drop(tx);
        drop(rx);
        drop(client);
    });
}

#[test]
fn client_gives_up_on_a_proxy_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and says nothing.
    let _silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(4).flatten() {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let t = Instant::now();
    let e = Client::new(&format!(
        r#"{{"apiConnectionString":"Server=127.0.0.1; Port={port}"}}"#
    ))
    .err()
    .unwrap();
    assert_eq!(e.code, MeshErrorCode::ConnFailed, "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "bounded by the SDK's 5 s call deadline"
    );
}

#[test]
fn client_limits_its_connections_to_max_media_connections() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let json = client_json(&proxy.unix)
        .replace("\"apiVersion\"", "\"maxMediaConnections\":2,\"apiVersion\"");
    let client = Client::new(&json).unwrap();
    let a = client.create_rx_connection(VIDEO).unwrap();
    let b = client.create_rx_connection(VIDEO).unwrap();
    assert_eq!(
        client.create_rx_connection(VIDEO).err().unwrap().code,
        MeshErrorCode::MaxConn
    );
    drop(a);
    let c = client.create_rx_connection(VIDEO).unwrap();
    drop((b, c));
}
