//! The wire format: versioned binary frames with a hard size limit (see `docs/protocol.md`).
//!
//! Every frame is an 8-byte header followed by a payload:
//!
//! ```text
//! magic "SY" (2 bytes) | version u8 | kind u8 | payload length u32 (big endian) | payload
//! ```
//!
//! Decoding is total: any byte string yields a [`Frame`] or a [`FrameError`], never a panic, and
//! never allocates more than the input's own length.

use sellsync_model::{BadId, DeviceId, RecordId, UserId};

/// The two magic bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"SY";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 4;
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 8;
/// Default hard limit on a whole frame (header plus payload): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Longest token accepted in a hello or welcome.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest reason text accepted in an error frame.
pub const MAX_REASON_LEN: usize = 1024;
/// Longest short field (a nonce, a public key, a proof): its length is one byte.
pub const MAX_SHORT_LEN: usize = 255;
/// Longest grant a welcome may carry (what a hub hands a device: its peer credential, the
/// access rules and the revocation list).
pub const MAX_GRANT_LEN: usize = 1024 * 1024;

const FLAG_FINAL: u8 = 0x01;

/// The part a node plays in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The organisation's server: sees every document, answers each device for its user only.
    Hub,
    /// A phone or laptop acting for one user (also when it serves LAN peers).
    Device,
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Role::Hub => 1,
            Role::Device => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, FrameError> {
        match b {
            1 => Ok(Role::Hub),
            2 => Ok(Role::Device),
            _ => Err(FrameError::Malformed("unknown role")),
        }
    }
}

/// Why a session was refused or ended, as carried by an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The token was missing, unknown, expired or revoked.
    AuthFailed,
    /// A frame arrived that the state machine does not allow at this point.
    OutOfOrder,
    /// A frame could not be decoded (including a bad embedded sync message).
    Malformed,
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion,
    /// A frame exceeded the size limit.
    TooLarge,
    /// This side failed internally (for example its storage); the peer did nothing wrong.
    Internal,
    /// The peer is not the one this side meant to reach.
    WrongPeer,
    /// A code this version does not know; kept so that newer peers can be reported.
    Other(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::AuthFailed => 1,
            ErrorCode::OutOfOrder => 2,
            ErrorCode::Malformed => 3,
            ErrorCode::UnsupportedVersion => 4,
            ErrorCode::TooLarge => 5,
            ErrorCode::Internal => 6,
            ErrorCode::WrongPeer => 7,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number read from the wire (unknown numbers are kept as `Other`).
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::AuthFailed,
            2 => ErrorCode::OutOfOrder,
            3 => ErrorCode::Malformed,
            4 => ErrorCode::UnsupportedVersion,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::Internal,
            7 => ErrorCode::WrongPeer,
            n => ErrorCode::Other(n),
        }
    }
}

/// Opens a connection: who the dialing side is and what it already holds of the other's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the dialer speaks (also in the header; repeated for clarity).
    pub version: u8,
    /// The dialer's node id.
    pub node: DeviceId,
    /// The dialer's role.
    pub role: Role,
    /// The sequence number of the acceptor's change feed up to which the dialer is in sync.
    pub checkpoint: u64,
    /// The credential the acceptor verifies: the enrollment token for a hub, the peer
    /// credential for a LAN peer. Opaque to this crate.
    pub token: Vec<u8>,
    /// Fresh random bytes of the dialer, bound into the LAN handshake transcript (see
    /// [`crate::transcript`]); may be empty towards a hub.
    pub nonce: Vec<u8>,
    /// The dialer's public key, for a hub to certify in its grant; empty if none. Opaque.
    pub key: Vec<u8>,
}

/// The acceptor's positive answer to a hello (a refusal is an [`ErrorFrame`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The acceptor's node id.
    pub node: DeviceId,
    /// The acceptor's role.
    pub role: Role,
    /// The user the dialer was authenticated as (`None` for a hub dialing a hub).
    pub user: Option<UserId>,
    /// The acceptor's own token, for a dialer that checks it (LAN peers); empty from a hub.
    pub token: Vec<u8>,
    /// The sequence number of the dialer's change feed up to which the acceptor is in sync.
    pub checkpoint: u64,
    /// Fresh random bytes of the acceptor, bound into the LAN handshake transcript; may be
    /// empty from a hub.
    pub nonce: Vec<u8>,
    /// The acceptor's proof of possession of its key: its signature over the welcome
    /// transcript (LAN peers); empty from a hub.
    pub proof: Vec<u8>,
    /// What a hub hands the device that dialed it (its peer credential, the access rules and
    /// the revocation list, signed by the hub); empty otherwise. Opaque to this crate.
    pub grant: Vec<u8>,
}

/// Documents in the sender's change feed with a sequence number in `(since, upto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Set on the last announce frame of a flight.
    pub last: bool,
    /// The checkpoint the receiver holds (exclusive lower bound).
    pub since: u64,
    /// The sender's feed head when it announced (inclusive upper bound).
    pub upto: u64,
    /// The documents (only those the receiver may see).
    pub docs: Vec<RecordId>,
}

/// Per-document automerge sync messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBatch {
    /// Set on the last frame of a flight: the sender now waits for the other side.
    pub last: bool,
    /// One entry per document; a document appears at most once.
    pub entries: Vec<BatchEntry>,
}

/// One document's part of a sync batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The document.
    pub doc: RecordId,
    /// The encoded automerge sync message.
    pub message: Vec<u8>,
    /// The signatures of the changes the message carries, opaque to the protocol (see
    /// [`crate::Replica::sign_changes`]); empty for none.
    pub signatures: Vec<u8>,
}

impl BatchEntry {
    /// An entry without signatures.
    pub fn new(doc: RecordId, message: Vec<u8>) -> BatchEntry {
        BatchEntry {
            doc,
            message,
            signatures: Vec::new(),
        }
    }
}

/// An error report; the sender closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The machine-readable class.
    pub code: ErrorCode,
    /// A human-readable reason (at most [`MAX_REASON_LEN`] bytes of UTF-8).
    pub reason: String,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Kind 1: the dialer's opening frame.
    Hello(Hello),
    /// Kind 2: the acceptor's positive answer.
    Welcome(Welcome),
    /// Kind 3: documents changed since the receiver's checkpoint.
    Announce(Announce),
    /// Kind 4: a batch of sync messages.
    SyncBatch(SyncBatch),
    /// Kind 5: the sender found both sides quiet. Each side sends one; the first is answered by
    /// the second.
    Done {
        /// The checkpoint the receiver may record for the sender's feed: the receiver has every
        /// change of the sender's feed up to it.
        checkpoint: u64,
    },
    /// Kind 6: documents the receiver's user may no longer see.
    AccessRevoked(Vec<RecordId>),
    /// Kind 7: an error; the connection closes after it.
    Error(ErrorFrame),
    /// Kind 8: the LAN dialer's proof of possession of its key (its signature over the proof
    /// transcript), sent once it has verified the acceptor's welcome.
    Proof(Vec<u8>),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => 1,
            Frame::Welcome(_) => 2,
            Frame::Announce(_) => 3,
            Frame::SyncBatch(_) => 4,
            Frame::Done { .. } => 5,
            Frame::AccessRevoked(_) => 6,
            Frame::Error(_) => 7,
            Frame::Proof(_) => 8,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Announce(_) => "announce",
            Frame::SyncBatch(_) => "sync-batch",
            Frame::Done { .. } => "done",
            Frame::AccessRevoked(_) => "access-revoked",
            Frame::Error(_) => "error",
            Frame::Proof(_) => "proof",
        }
    }

    /// Encodes the frame. Fails only if a field breaks a format limit (a token, reason or list
    /// too long, or a frame over `max_frame`), so that nothing unreadable is ever sent.
    pub fn encode(&self, max_frame: usize) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(self.kind());
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello(h) => {
                out.push(h.version);
                put_id(&mut out, h.node.as_str());
                out.push(h.role.to_byte());
                out.extend_from_slice(&h.checkpoint.to_be_bytes());
                put_token(&mut out, &h.token)?;
                put_short(&mut out, &h.nonce)?;
                put_short(&mut out, &h.key)?;
            }
            Frame::Welcome(w) => {
                put_id(&mut out, w.node.as_str());
                out.push(w.role.to_byte());
                match w.user {
                    Some(u) => {
                        out.push(1);
                        out.extend_from_slice(&u.0.to_be_bytes());
                    }
                    None => out.push(0),
                }
                put_token(&mut out, &w.token)?;
                out.extend_from_slice(&w.checkpoint.to_be_bytes());
                put_short(&mut out, &w.nonce)?;
                put_short(&mut out, &w.proof)?;
                if w.grant.len() > MAX_GRANT_LEN {
                    return Err(FrameError::Malformed("grant longer than 1 MiB"));
                }
                put_count(&mut out, w.grant.len())?;
                out.extend_from_slice(&w.grant);
            }
            Frame::Announce(a) => {
                out.push(if a.last { FLAG_FINAL } else { 0 });
                out.extend_from_slice(&a.since.to_be_bytes());
                out.extend_from_slice(&a.upto.to_be_bytes());
                put_ids(&mut out, &a.docs)?;
            }
            Frame::SyncBatch(b) => {
                out.push(if b.last { FLAG_FINAL } else { 0 });
                put_count(&mut out, b.entries.len())?;
                for e in &b.entries {
                    put_id(&mut out, e.doc.as_str());
                    put_count(&mut out, e.message.len())?;
                    out.extend_from_slice(&e.message);
                    put_count(&mut out, e.signatures.len())?;
                    out.extend_from_slice(&e.signatures);
                }
            }
            Frame::Done { checkpoint } => out.extend_from_slice(&checkpoint.to_be_bytes()),
            Frame::AccessRevoked(docs) => put_ids(&mut out, docs)?,
            Frame::Error(e) => {
                if e.reason.len() > MAX_REASON_LEN {
                    return Err(FrameError::Malformed("reason longer than 1024 bytes"));
                }
                out.extend_from_slice(&e.code.to_u16().to_be_bytes());
                // Fits: checked against MAX_REASON_LEN above.
                out.extend_from_slice(&(e.reason.len() as u16).to_be_bytes());
                out.extend_from_slice(e.reason.as_bytes());
            }
            Frame::Proof(p) => put_short(&mut out, p)?,
        }
        if out.len() > max_frame {
            return Err(FrameError::Oversized {
                len: out.len(),
                limit: max_frame,
            });
        }
        let payload = out.len() - HEADER_LEN;
        let payload = u32::try_from(payload).map_err(|_| FrameError::Oversized {
            len: out.len(),
            limit: max_frame,
        })?;
        out[4..8].copy_from_slice(&payload.to_be_bytes());
        Ok(out)
    }

    /// Decodes exactly one frame from `bytes` (no trailing bytes allowed).
    pub fn decode(bytes: &[u8], max_frame: usize) -> Result<Frame, FrameError> {
        let total = frame_len(bytes, max_frame)?.ok_or(FrameError::Truncated {
            needed: HEADER_LEN,
            got: bytes.len(),
        })?;
        if bytes.len() < total {
            return Err(FrameError::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(FrameError::Malformed("trailing bytes after the frame"));
        }
        let mut r = Reader {
            buf: &bytes[HEADER_LEN..],
        };
        let frame = match bytes[3] {
            1 => {
                let version = r.u8()?;
                if version != PROTOCOL_VERSION {
                    return Err(FrameError::UnknownVersion(version));
                }
                Frame::Hello(Hello {
                    version,
                    node: r.device_id()?,
                    role: Role::from_byte(r.u8()?)?,
                    checkpoint: r.u64()?,
                    token: r.token()?,
                    nonce: r.short()?,
                    key: r.short()?,
                })
            }
            2 => Frame::Welcome(Welcome {
                node: r.device_id()?,
                role: Role::from_byte(r.u8()?)?,
                user: match r.u8()? {
                    0 => None,
                    1 => Some(UserId(r.u64()?)),
                    _ => return Err(FrameError::Malformed("bad user presence byte")),
                },
                token: r.token()?,
                checkpoint: r.u64()?,
                nonce: r.short()?,
                proof: r.short()?,
                grant: {
                    let len = r.count()?;
                    if len > MAX_GRANT_LEN {
                        return Err(FrameError::Malformed("grant longer than 1 MiB"));
                    }
                    r.take(len)?.to_vec()
                },
            }),
            3 => {
                let last = r.flags()?;
                let since = r.u64()?;
                let upto = r.u64()?;
                if upto < since {
                    return Err(FrameError::Malformed("announce upto is below since"));
                }
                Frame::Announce(Announce {
                    last,
                    since,
                    upto,
                    docs: r.record_ids()?,
                })
            }
            4 => {
                let last = r.flags()?;
                let n = r.count()?;
                // Each entry takes at least 10 bytes, so this bounds the allocation by the input.
                let mut entries = Vec::with_capacity(n.min(r.buf.len() / 10));
                for _ in 0..n {
                    let doc = r.record_id()?;
                    let len = r.count()?;
                    let message = r.take(len)?.to_vec();
                    let len = r.count()?;
                    let signatures = r.take(len)?.to_vec();
                    entries.push(BatchEntry {
                        doc,
                        message,
                        signatures,
                    });
                }
                Frame::SyncBatch(SyncBatch { last, entries })
            }
            5 => Frame::Done {
                checkpoint: r.u64()?,
            },
            6 => Frame::AccessRevoked(r.record_ids()?),
            7 => {
                let code = ErrorCode::from_u16(r.u16()?);
                let len = usize::from(r.u16()?);
                if len > MAX_REASON_LEN {
                    return Err(FrameError::Malformed("reason longer than 1024 bytes"));
                }
                let reason = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| FrameError::Malformed("reason is not UTF-8"))?
                    .to_owned();
                Frame::Error(ErrorFrame { code, reason })
            }
            8 => Frame::Proof(r.short()?),
            k => return Err(FrameError::UnknownKind(k)),
        };
        if !r.buf.is_empty() {
            return Err(FrameError::Malformed("payload longer than its fields"));
        }
        Ok(frame)
    }
}

/// The total length of the frame that starts `bytes`, once its header is complete.
///
/// `Ok(None)` means fewer than [`HEADER_LEN`] bytes are there yet. For a stream transport:
/// read until this returns a length, then until that many bytes are buffered.
pub fn frame_len(bytes: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        // Reject a bad prefix as early as possible.
        if bytes.len() >= 2 && bytes[..2] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        return Ok(None);
    };
    if header[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if header[2] != PROTOCOL_VERSION {
        return Err(FrameError::UnknownVersion(header[2]));
    }
    let payload = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let total = HEADER_LEN as u64 + u64::from(payload);
    if total > max_frame as u64 {
        return Err(FrameError::Oversized {
            len: usize::try_from(total).unwrap_or(usize::MAX),
            limit: max_frame,
        });
    }
    // Fits: total <= max_frame, a usize.
    Ok(Some(total as usize))
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The input ends before the header or the payload it announces.
    #[error("truncated frame: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes that were there.
        got: usize,
    },
    /// The first two bytes are not the protocol magic.
    #[error("not a sellsync frame (bad magic)")]
    BadMagic,
    /// The header (or the hello) names a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnknownVersion(u8),
    /// The frame kind is not one this version knows.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    Oversized {
        /// The frame's length (header plus payload).
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The payload does not follow the format.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A record or node id in the payload is not a valid id.
    #[error("bad id in frame: {0}")]
    BadId(#[from] BadId),
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    // Ids are at most 64 bytes (sellsync-model's invariant), so the length fits a byte.
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize) -> Result<(), FrameError> {
    let n = u32::try_from(n).map_err(|_| FrameError::Malformed("more than u32::MAX items"))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_ids(out: &mut Vec<u8>, ids: &[RecordId]) -> Result<(), FrameError> {
    put_count(out, ids.len())?;
    for id in ids {
        put_id(out, id.as_str());
    }
    Ok(())
}

fn put_token(out: &mut Vec<u8>, token: &[u8]) -> Result<(), FrameError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(FrameError::Malformed("token longer than 4096 bytes"));
    }
    // Fits: checked against MAX_TOKEN_LEN above.
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token);
    Ok(())
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), FrameError> {
    let len = u8::try_from(bytes.len())
        .map_err(|_| FrameError::Malformed("short field longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// A cursor over a payload. Every read checks the remaining length first.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Malformed(
                "field runs past the end of the payload",
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn count(&mut self) -> Result<usize, FrameError> {
        let b = self.take(4)?;
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        usize::try_from(n).map_err(|_| FrameError::Malformed("count does not fit this platform"))
    }

    fn flags(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            FLAG_FINAL => Ok(true),
            _ => Err(FrameError::Malformed("unknown flag bits")),
        }
    }

    fn str_id(&mut self) -> Result<&'a str, FrameError> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| FrameError::Malformed("id is not UTF-8"))
    }

    fn record_id(&mut self) -> Result<RecordId, FrameError> {
        Ok(self.str_id()?.parse()?)
    }

    fn device_id(&mut self) -> Result<DeviceId, FrameError> {
        Ok(self.str_id()?.parse()?)
    }

    fn record_ids(&mut self) -> Result<Vec<RecordId>, FrameError> {
        let n = self.count()?;
        // Each id takes at least 2 bytes, so this bounds the allocation by the input.
        let mut ids = Vec::with_capacity(n.min(self.buf.len() / 2));
        for _ in 0..n {
            ids.push(self.record_id()?);
        }
        Ok(ids)
    }

    fn short(&mut self) -> Result<Vec<u8>, FrameError> {
        let len = usize::from(self.u8()?);
        Ok(self.take(len)?.to_vec())
    }

    fn token(&mut self) -> Result<Vec<u8>, FrameError> {
        let len = usize::from(self.u16()?);
        if len > MAX_TOKEN_LEN {
            return Err(FrameError::Malformed("token longer than 4096 bytes"));
        }
        Ok(self.take(len)?.to_vec())
    }
}

/// Bytes an id takes on the wire.
pub(crate) fn id_wire_len(id: &RecordId) -> usize {
    1 + id.as_str().len()
}

/// Bytes a sync-batch entry takes on the wire.
pub(crate) fn entry_wire_len(e: &BatchEntry) -> usize {
    id_wire_len(&e.doc) + 4 + e.message.len() + 4 + e.signatures.len()
}

/// Header plus the fixed part of an announce payload.
pub(crate) const ANNOUNCE_OVERHEAD: usize = HEADER_LEN + 1 + 8 + 8 + 4;
/// Header plus the fixed part of a sync-batch payload.
pub(crate) const BATCH_OVERHEAD: usize = HEADER_LEN + 1 + 4;
/// Header plus the fixed part of an access-revoked payload.
pub(crate) const REVOKED_OVERHEAD: usize = HEADER_LEN + 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> RecordId {
        s.parse().unwrap()
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: "phone-1".parse().unwrap(),
                role: Role::Device,
                checkpoint: 42,
                token: b"secret".to_vec(),
                nonce: vec![7; 32],
                key: vec![1; 32],
            }),
            Frame::Welcome(Welcome {
                node: "hub".parse().unwrap(),
                role: Role::Hub,
                user: Some(UserId(7)),
                token: vec![],
                checkpoint: u64::MAX,
                nonce: vec![],
                proof: vec![9; 64],
                grant: vec![3; 300],
            }),
            Frame::Announce(Announce {
                last: true,
                since: 3,
                upto: 9,
                docs: vec![rid("a"), rid("b")],
            }),
            Frame::SyncBatch(SyncBatch {
                last: false,
                entries: vec![
                    BatchEntry::new(rid("a"), vec![1, 2, 3]),
                    BatchEntry {
                        doc: rid("b"),
                        message: vec![],
                        signatures: vec![7; 97],
                    },
                ],
            }),
            Frame::Done { checkpoint: 5 },
            Frame::AccessRevoked(vec![rid("x")]),
            Frame::Error(ErrorFrame {
                code: ErrorCode::Other(999),
                reason: "nope ✗".into(),
            }),
            Frame::Proof(vec![5; 64]),
        ]
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for f in samples() {
            let bytes = f.encode(DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(
                frame_len(&bytes, DEFAULT_MAX_FRAME).unwrap(),
                Some(bytes.len())
            );
            assert_eq!(Frame::decode(&bytes, DEFAULT_MAX_FRAME).unwrap(), f);
        }
    }

    #[test]
    fn every_strict_prefix_is_truncated_or_pending() {
        for f in samples() {
            let bytes = f.encode(DEFAULT_MAX_FRAME).unwrap();
            for cut in 0..bytes.len() {
                let err = Frame::decode(&bytes[..cut], DEFAULT_MAX_FRAME).unwrap_err();
                assert!(
                    matches!(err, FrameError::Truncated { .. }),
                    "{cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_inputs_give_typed_errors() {
        let good = samples()[2].encode(DEFAULT_MAX_FRAME).unwrap();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::BadMagic)
        );
        let mut bad = good.clone();
        bad[2] = 9;
        assert_eq!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::UnknownVersion(9))
        );
        let mut bad = good.clone();
        bad[3] = 200;
        assert_eq!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::UnknownKind(200))
        );
        assert!(matches!(
            Frame::decode(&good, 10),
            Err(FrameError::Oversized { .. })
        ));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
        // Flag byte with an unknown bit.
        let mut bad = good.clone();
        bad[HEADER_LEN] = 0x80;
        assert!(matches!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
        // A record id with a character outside the alphabet.
        let mut bad = good.clone();
        let id_at = ANNOUNCE_OVERHEAD + 1;
        bad[id_at] = b'/';
        assert!(matches!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::BadId(_))
        ));
        // A payload length that claims more than the input has.
        let mut bad = good;
        bad[7] = bad[7].wrapping_add(1);
        assert!(matches!(
            Frame::decode(&bad, DEFAULT_MAX_FRAME),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn a_huge_count_does_not_allocate_or_panic() {
        let mut bytes = vec![b'S', b'Y', PROTOCOL_VERSION, 6, 0, 0, 0, 4];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Frame::decode(&bytes, DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn encoding_refuses_what_decoding_would_reject() {
        let long = Frame::Error(ErrorFrame {
            code: ErrorCode::Internal,
            reason: "x".repeat(2000),
        });
        assert!(long.encode(DEFAULT_MAX_FRAME).is_err());
        let big = Frame::SyncBatch(SyncBatch {
            last: true,
            entries: vec![BatchEntry::new(rid("a"), vec![0; 100])],
        });
        assert!(matches!(big.encode(50), Err(FrameError::Oversized { .. })));
    }
}
