//! A real node on 127.0.0.1:0 and a minimal Kafka client built on the `kafka-protocol`
//! codecs, for wire-level tests of request handling.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rafka_server::{BrokerConfig, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestBroker {
    pub node: Option<Node>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub overrides: Vec<String>,
}

pub fn config(dir: &std::path::Path, port: u16, extra: &[&str]) -> BrokerConfig {
    let mut overrides = vec![
        format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
        format!("log.dirs={}", dir.join("data").display()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    BrokerConfig::load(None, vec![], &overrides).expect("valid test config")
}

impl TestBroker {
    pub async fn start(extra: &[&str]) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(config(dir.path(), 0, extra)).await.expect("node starts");
        let addr = node.listen_addresses()[0].1;
        TestBroker {
            node: Some(node),
            addr,
            dir,
            overrides: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Graceful stop, then start again on the same port and data.
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        let extra: Vec<&str> = self.overrides.iter().map(String::as_str).collect();
        let node = Node::start(config(self.dir.path(), self.addr.port(), &extra)).await.expect("node restarts");
        self.node = Some(node);
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_correlation: 1,
        }
    }

    /// Sends a request; returns its correlation id.
    pub async fn send(&mut self, api_key: ApiKey, version: i16, body: &RequestKind) -> i32 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let mut payload = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")))
            .encode(&mut payload, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut payload, version).unwrap();
        self.send_raw_frame(&payload).await;
        correlation_id
    }

    pub async fn send_raw_frame(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn recv(&mut self, api_key: ApiKey, version: i16) -> (i32, ResponseKind) {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(20), self.stream.read_exact(&mut len))
            .await
            .expect("response within 20 s")
            .expect("connection open");
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).await.unwrap();
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(version)).unwrap();
        let body = ResponseKind::decode(api_key, &mut buf, version).unwrap();
        assert_eq!(buf.remaining(), 0, "whole response decoded");
        (header.correlation_id, body)
    }

    pub async fn call(&mut self, api_key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let id = self.send(api_key, version, &body).await;
        let (got, response) = self.recv(api_key, version).await;
        assert_eq!(got, id, "correlation id echoed");
        response
    }

    /// True when the broker closed the connection (EOF or reset) within `within`.
    pub async fn is_closed(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(within, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => false,
        }
    }
}
