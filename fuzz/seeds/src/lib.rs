//! Builds the seed inputs of the fuzz targets from the recorded vectors
//! (`tests/data/vectors/`, a copy of `../shared/vectors/`): each target gets the lines,
//! requests and envelopes of the transcripts in its own input format (described at each
//! target). The generated corpora are not committed; `scripts/fuzz` writes them.

use serde_json::Value;

/// A client-to-server WebSocket text frame (RFC 6455 5.2): FIN, masked with key 0 (the
/// payload reads as itself), 7/16/64-bit length as the size needs.
pub fn masked_text(payload: &[u8]) -> Vec<u8> {
    masked(0x81, payload)
}

/// A masked frame with the given first byte (FIN, RSV and opcode).
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// The vectors the seeds are made of.
#[derive(Debug, Default)]
pub struct Vectors {
    /// Lines sent in the P2P transcript.
    pub p2p_sent: Vec<String>,
    /// Frames received in the P2P transcript, as compact JSON lines.
    pub p2p_received: Vec<String>,
    /// WebSocket messages sent in the hub transcript.
    pub hub_sent: Vec<String>,
    /// HTTP request targets of the hub transcript.
    pub http_targets: Vec<String>,
    /// 2.0 envelopes: key and base64 text (those that open and those that must not).
    pub envelopes: Vec<([u8; 32], String)>,
}

fn jsonl(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines().filter_map(|l| serde_json::from_str(l).ok())
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl Vectors {
    /// Reads the vectors from the texts of `p2p-transcript-v2.jsonl`,
    /// `hub-transcript-v2.jsonl` and `crypto-v2.json`.
    pub fn parse(p2p: &str, hub: &str, crypto: &str) -> Vectors {
        let mut v = Vectors::default();
        for entry in jsonl(p2p) {
            if let Some(Value::String(s)) = entry.get("sent") {
                v.p2p_sent.push(s.clone());
            }
            if let Some(r @ Value::Object(_)) = entry.get("received") {
                v.p2p_received.push(r.to_string());
            }
        }
        for entry in jsonl(hub) {
            match entry.get("sent") {
                Some(Value::String(s)) => v.hub_sent.push(s.clone()),
                Some(other) => v.hub_sent.push(other.to_string()),
                None => {
                    let label = entry.get("label").and_then(Value::as_str).unwrap_or("");
                    if let Some(target) = label.strip_prefix("HTTP GET ") {
                        v.http_targets.push(target.to_owned());
                    }
                }
            }
        }
        if let Ok(crypto) = serde_json::from_str::<Value>(crypto) {
            for list in ["envelopes", "must_fail"] {
                for e in crypto[list].as_array().into_iter().flatten() {
                    let key = e["key_hex"].as_str().and_then(unhex32);
                    if let (Some(key), Some(data)) = (key, e["data_b64"].as_str()) {
                        v.envelopes.push((key, data.to_owned()));
                    }
                }
            }
        }
        v
    }

    /// Every target's seeds: (target, inputs).
    pub fn seeds(&self) -> Vec<(&'static str, Vec<Vec<u8>>)> {
        vec![
            ("line_decoder", self.line_decoder()),
            ("frame_parse", self.frame_parse()),
            (
                "hub_request",
                self.hub_sent
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            ),
            ("envelope_open", self.envelope_open()),
            ("session_v20", self.session(&[0, 1])),
            ("session_v21", self.session(&[0, 1, 2, 3, 4, 5, 8, 9, 11])),
            ("hub_ws", self.hub_ws()),
            ("hub_http", self.hub_http()),
        ]
    }

    fn line_decoder(&self) -> Vec<Vec<u8>> {
        let stream = |lines: &[String], sep: &str| {
            let mut s = lines.join(sep).into_bytes();
            s.extend_from_slice(sep.as_bytes());
            s
        };
        let mut seeds = Vec::new();
        // Limits: 2047 (everything fits), 64 (the longer lines do not), 0.
        for (lo, hi) in [(0xff, 0x07), (64, 0), (0, 0)] {
            for (sep, cuts) in [("\n", 0), ("\r\n", 7), ("\n\n", 200)] {
                let mut seed = vec![lo, hi, cuts];
                seed.extend(stream(&self.p2p_sent, sep));
                seeds.push(seed);
            }
        }
        seeds
    }

    fn frame_parse(&self) -> Vec<Vec<u8>> {
        self.p2p_sent
            .iter()
            .chain(&self.p2p_received)
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn envelope_open(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for (key, data) in &self.envelopes {
            // Mode 0: open this text under this key.
            let mut open = vec![0];
            open.extend_from_slice(key);
            open.extend_from_slice(data.as_bytes());
            seeds.push(open);
            // Mode 1: seal, edit one character, open.
            let mut tamper = vec![1];
            tamper.extend_from_slice(key);
            tamper.extend_from_slice(&[7; 12]);
            tamper.extend_from_slice(&[5, 0, b'A']);
            tamper.extend_from_slice(br#"{"action":"analyze"}"#);
            seeds.push(tamper);
        }
        seeds
    }

    /// Header (seed, flags), then an honest exchange interleaved with the transcript lines.
    fn session(&self, flag_sets: &[u8]) -> Vec<Vec<u8>> {
        let honest: &[&[u8]] = &[
            b"\x01",
            b"\x01",
            b"\x01{\"text\":\"hello\"}",
            b"\x01\x03odd first byte: the responder answers",
            b"\x01plain text payload",
            b"\x02\x02",
            b"\x03\x10\x00\x01tampered",
            b"\x04\x05\x00cut",
            b"\x05\x03forged",
        ];
        let mut seeds = Vec::new();
        for &flags in flag_sets {
            let mut seed = vec![1, 2, 3, 4, 5, 6, 7, 8, flags];
            for line in honest {
                seed.extend_from_slice(line);
                seed.push(b'\n');
            }
            seeds.push(seed);
            let mut raw = vec![8, 7, 6, 5, 4, 3, 2, 1, flags];
            for (i, line) in self.p2p_sent.iter().enumerate() {
                raw.extend_from_slice(line.as_bytes());
                raw.push(b'\n');
                raw.extend_from_slice(honest[i % honest.len()]);
                raw.push(b'\n');
            }
            seeds.push(raw);
        }
        seeds
    }

    fn hub_ws(&self) -> Vec<Vec<u8>> {
        let mut all = vec![0];
        let mut seeds = Vec::new();
        for sent in &self.hub_sent {
            let frame = masked_text(sent.as_bytes());
            all.extend_from_slice(&frame);
            let mut one = vec![0];
            one.extend(frame);
            seeds.push(one);
        }
        // The whole transcript on one connection, read in 1-, 3- and 200-byte pieces,
        // ending with a ping and a close frame.
        all.extend(masked(0x89, b"ping"));
        all.extend(masked(0x88, &[0x03, 0xe8]));
        let mut trickled = vec![3, 1, 3, 200];
        trickled.extend_from_slice(&all[1..]);
        seeds.push(all);
        seeds.push(trickled);
        seeds
    }

    fn hub_http(&self) -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = self
            .http_targets
            .iter()
            .map(|t| format!("\x04{t}\nhost: hub.example:8080").into_bytes())
            .collect();
        seeds.push(b"\x04/metrics".to_vec());
        seeds.push(b"\x00/agents".to_vec());
        seeds.push(b"\x01/agents\norigin: http://x\naccess-control-request-method: GET".to_vec());
        seeds.push(
            b"\x04/ws\nconnection: Upgrade\nupgrade: websocket\nsec-websocket-version: 13\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ=="
                .to_vec(),
        );
        seeds
    }
}
