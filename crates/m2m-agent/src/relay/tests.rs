use std::sync::Mutex as StdMutex;

use m2m_proto::hub::reply::RelayAttached;
use m2m_proto::relay::{CloseReason, RelayFrame, MAX_DATA};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::*;
use crate::conn::WriteHalf;

const PEER: &str = "0123456789abcdef0123456789abcdef";

fn client(
    window: u32,
    max_streams: u32,
    on_open: Option<OnOpen>,
) -> (Arc<RelayClient>, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let attached = RelayAttached {
        relay: "ws://hub/ws".into(),
        agent_id: PEER.into(),
        reachable: None,
        window,
        max_streams,
    };
    (RelayClient::new(attached, tx, on_open), rx)
}

fn frames(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        out.push(f);
    }
    out
}

fn close_of(frame: &[u8]) -> Option<CloseReason> {
    match RelayFrame::parse(frame).unwrap() {
        RelayFrame::Close { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Writes become DATA frames of at most MAX_DATA within the credit; with none left the
/// writer takes nothing (WouldBlock) until a CREDIT comes.
#[tokio::test]
async fn writes_stay_within_the_credit() {
    let window = 3 * MAX_DATA as u32;
    let (client, mut rx) = client(window, 8, None);
    let stream = client.open(PEER).unwrap();
    let (_r, w) = stream.split();
    let sent = frames(&mut rx);
    assert!(matches!(
        RelayFrame::parse(&sent[0]).unwrap(),
        RelayFrame::Open { stream: 1, .. }
    ));
    let data = vec![7u8; 4 * MAX_DATA];
    assert_eq!(w.try_write(&data).unwrap(), 3 * MAX_DATA);
    let sent = frames(&mut rx);
    assert_eq!(sent.len(), 3);
    for f in &sent {
        match RelayFrame::parse(f).unwrap() {
            RelayFrame::Data { stream, bytes } => {
                assert_eq!(stream, 1);
                assert_eq!(bytes.len(), MAX_DATA);
            }
            other => panic!("{other:?}"),
        }
    }
    let blocked = w.try_write(&data).unwrap_err();
    assert_eq!(blocked.kind(), std::io::ErrorKind::WouldBlock);
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), w.writable()).await;
    assert!(waiting.is_err(), "writable with no credit");
    let credit = RelayFrame::Credit {
        stream: 1,
        bytes: 10,
    }
    .to_vec();
    client.on_frame(&credit).unwrap();
    w.writable().await.unwrap();
    assert_eq!(w.try_write(&data).unwrap(), 10);
    // Credit for bytes never sent closes the stream.
    let lie = RelayFrame::Credit {
        stream: 1,
        bytes: window + 1,
    }
    .to_vec();
    client.on_frame(&lie).unwrap();
    let sent = frames(&mut rx);
    assert_eq!(close_of(sent.last().unwrap()), Some(CloseReason::Protocol));
}

/// The reader returns credit once half the window is consumed; DATA beyond the window
/// closes the stream `protocol` and the reader fails.
#[tokio::test]
async fn reads_return_credit_and_the_window_is_enforced() {
    let (client, mut rx) = client(1000, 8, None);
    let stream = client.open(PEER).unwrap();
    let (mut r, _w) = stream.split();
    frames(&mut rx);
    let data = |n: usize| {
        RelayFrame::Data {
            stream: 1,
            bytes: &vec![1u8; n],
        }
        .to_vec()
    };
    client.on_frame(&data(600)).unwrap();
    let mut buf = vec![0u8; 400];
    assert_eq!(r.read(&mut buf).await.unwrap(), 400);
    assert!(frames(&mut rx).is_empty(), "credit before half the window");
    assert_eq!(r.read(&mut buf).await.unwrap(), 200);
    let sent = frames(&mut rx);
    assert!(matches!(
        RelayFrame::parse(&sent[0]).unwrap(),
        RelayFrame::Credit {
            stream: 1,
            bytes: 600
        }
    ));
    client.on_frame(&data(1000)).unwrap();
    // 1 byte beyond the window.
    client.on_frame(&data(1)).unwrap();
    let sent = frames(&mut rx);
    assert_eq!(close_of(&sent[0]), Some(CloseReason::Protocol));
    assert_eq!(client.open_streams(), 0);
}

/// A CLOSE ends the reader with an error carrying the reason (`normal`: end of stream,
/// after every byte sent before it); dropping both halves sends CLOSE `normal`.
#[tokio::test]
async fn close_reasons_reach_the_reader() {
    let (client, mut rx) = client(1000, 8, None);
    let (mut r, w) = client.open(PEER).unwrap().split();
    let (mut r2, _w2) = client.open(PEER).unwrap().split();
    frames(&mut rx);
    let hello = RelayFrame::Data {
        stream: 1,
        bytes: b"hi",
    }
    .to_vec();
    client.on_frame(&hello).unwrap();
    let close = |stream, reason| {
        RelayFrame::Close {
            stream,
            reason,
            detail: "x",
        }
        .to_vec()
    };
    client.on_frame(&close(1, CloseReason::Normal)).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hi");
    client
        .on_frame(&close(3, CloseReason::Unreachable))
        .unwrap();
    let e = r2.read(&mut [0u8; 8]).await.unwrap_err();
    let closed = relay_closed(&e).expect("the reason");
    assert_eq!(closed.reason, CloseReason::Unreachable);
    assert!(w.try_write(b"x").is_err());
    drop((r, w));
    // Closed by the hub: no CLOSE of ours.
    assert!(frames(&mut rx).is_empty());
    let (r3, w3) = client.open(PEER).unwrap().split();
    frames(&mut rx);
    drop(r3);
    assert!(frames(&mut rx).is_empty(), "closed with one half alive");
    drop(w3);
    let sent = frames(&mut rx);
    assert_eq!(close_of(&sent[0]), Some(CloseReason::Normal));
}

/// Streams the hub opens: an odd id is refused `protocol`, beyond maxStreams `limit`, the
/// rest reach the handler with the stamped peer; the hub's connection closing ends them
/// `gone`.
#[tokio::test]
async fn hub_opened_streams() {
    let opened: Arc<StdMutex<Vec<RelayStream>>> = Arc::default();
    let keep = opened.clone();
    let on_open: OnOpen = Arc::new(move |s| keep.lock().unwrap().push(s));
    let (client, mut rx) = client(1000, 1, Some(on_open));
    let raw = m2m_proto::relay::raw_id(PEER).unwrap();
    client
        .on_frame(
            &RelayFrame::Open {
                stream: 3,
                peer: raw,
            }
            .to_vec(),
        )
        .unwrap();
    assert_eq!(close_of(&frames(&mut rx)[0]), Some(CloseReason::Protocol));
    client
        .on_frame(
            &RelayFrame::Open {
                stream: 2,
                peer: raw,
            }
            .to_vec(),
        )
        .unwrap();
    client
        .on_frame(
            &RelayFrame::Open {
                stream: 4,
                peer: raw,
            }
            .to_vec(),
        )
        .unwrap();
    assert_eq!(close_of(&frames(&mut rx)[0]), Some(CloseReason::Limit));
    let stream = opened.lock().unwrap().pop().unwrap();
    assert_eq!(stream.peer(), PEER);
    let (mut r, _w) = stream.split();
    client.shutdown();
    let e = r.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(relay_closed(&e).unwrap().reason, CloseReason::Gone);
    assert!(client.open(PEER).is_err());
    assert!(client.on_frame(&[9, 9]).is_err());
}
