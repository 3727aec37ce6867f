//! The journal: every sequenced command, appended to segment files before the engine applies
//! it, so that recovery = the latest snapshot + a replay of the journal after it.
//!
//! This is the one module of the engine crate that does IO (files, fsync); the matching core
//! stays sans-IO. Time still comes from the caller (`JournalWriter::sync_if_due(now_ns)`).
//!
//! # Files
//!
//! A journal is a directory of segment files named `journal-<first seq, 20 digits>.seg`, e.g.
//! `journal-00000000000000000001.seg`: the name sorts like the seq. Other files in the
//! directory are ignored. Each segment holds contiguous seqs, and segment n+1 starts at the
//! seq after the last one of segment n: a missing segment is a seq gap, an error.
//!
//! A segment rolls at a size limit (`JournalConfig::segment_size_limit_bytes`): a record goes
//! to a new segment when it would take the current one past the limit, so a segment is never
//! larger than the limit, except that every segment takes at least one record. Before a new
//! segment is created the old one is fsynced, the new one is created with its header and
//! fsynced, and the directory is fsynced (so the new name is durable). Hence only the LAST
//! segment can end in a torn write.
//!
//! All integers are little-endian. CRCs are CRC-32C (Castagnoli).
//!
//! ## Segment header (24 bytes, at offset 0)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FJNL` (`46 4A 4E 4C`) |
//! | 4 | 2 | format version `u16` = 1 |
//! | 6 | 2 | header length `u16` = 24 |
//! | 8 | 8 | first seq `u64` (the seq of the segment's first record; equal to the name's) |
//! | 16 | 4 | reserved, 0 |
//! | 20 | 4 | CRC-32C of bytes 0..20 |
//!
//! ## Records (from offset 24, back to back, nothing between them)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `u32` (144 in version 1) |
//! | 4 | 4 | CRC-32C over the 4 length bytes followed by the payload |
//! | 8 | length | payload: the command as `flow::native::encode_command` lays it out, which holds seq (payload offset 8) and ts_ns (payload offset 16) |
//!
//! The CRC covers the length too, so that a damaged length is caught like damaged payload.
//! The length is kept so that the format can grow: a later version may carry longer
//! payloads; this version (1) accepts exactly 144 bytes and calls any other length a bad
//! record. A version-1 record is therefore 152 bytes.
//!
//! # Torn tails and corruption
//!
//! Reading never skips a record silently. A record is *bad* when the file ends inside it
//! (short length/CRC header, short payload), its length is not 144, or its CRC does not
//! match; a segment header is bad when the file is shorter than it, or its magic, version,
//! length or CRC are wrong.
//!
//! - **Torn tail** (a crash in the middle of a write): a bad record in the LAST segment with
//!   nothing valid after it, i.e. no CRC-valid 152-byte record starts at any multiple of 152
//!   bytes after it (the writer always writes whole 152-byte records, so valid records after
//!   a bad one would sit exactly there). This covers a short last record, a last record with
//!   a bad CRC, and a zero-filled or garbage tail left by a crash. A bad header of the last
//!   segment with no valid record after it is a torn tail too (the crash came while the
//!   segment was being created); the whole file is then the tail.
//!
//!   Choice: a complete last record whose CRC does not match is taken for a torn write (a
//!   crash can persist a record's sectors out of order, or extend the file before its data),
//!   not for corruption: it is cut and reported, never kept. A record whose CRC matches was
//!   written whole, so if it does not decode, or its seq does not follow, that is an error
//!   even at the very end.
//!
//!   Reading (`verify`, `replay`, `JournalReader`) reports a torn tail
//!   (`TornTail`: segment, offset, bytes) and stops before it, without touching the file.
//!   `JournalWriter::open`, the recovery path, cuts it: it truncates the segment to the last
//!   good record (or removes a segment whose header is torn, fsyncing the directory), and
//!   returns the report in `OpenReport::torn_tail`.
//! - **Corruption**: any other bad record (followed by a valid one, or in a segment that is
//!   not the last), a CRC-valid payload that does not decode, a segment whose header seq
//!   differs from its name, and any seq that is not exactly the previous one plus 1
//!   (between records, or between segments: a missing segment) stop reading with a
//!   `JournalError` naming the segment file and the byte offset.
//!
//! # Writing
//!
//! `JournalWriter::append` encodes a batch into one reusable buffer and writes it with one
//! `write` per segment it touches (one, unless the batch crosses a roll). It refuses, before
//! writing anything, a batch whose seqs are not exactly `next_seq, next_seq + 1, ...` (any
//! seq from 1 up for an empty journal; seq 0 never). Durability is the caller's call, with
//! `FsyncPolicy`: `append` then `sync_if_due(now_ns)`; `sync` forces it. After an IO error
//! (including a failed fsync, after which Linux may have dropped the dirty pages) the writer
//! refuses all further work: reopen it, which recovers from what is on disk.
//!
//! One writer per directory: the journal does not lock it; the process that owns the
//! exchange does. A snapshot taken after seq S pairs with `replay(dir, S, ...)`; if the
//! journal ends before S (possible with `FsyncPolicy::Never` after a crash), the writer's
//! `next_seq` is not S + 1 and appending S + 1 is refused: the caller must decide.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::{Command, Sequenced};
use crate::flow::native::{self, NativeError};

pub const SEGMENT_MAGIC: [u8; 4] = *b"FJNL";
pub const SEGMENT_VERSION: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Length and CRC in front of each payload.
pub const RECORD_HEADER_LEN: usize = 8;
/// Payload length in format version 1: one native command record.
pub const PAYLOAD_LEN: usize = native::RECORD_SIZE;
/// One whole version-1 record: 152 bytes.
pub const RECORD_LEN: usize = RECORD_HEADER_LEN + PAYLOAD_LEN;
pub const DEFAULT_SEGMENT_SIZE_LIMIT_BYTES: u64 = 64 << 20;

const SEGMENT_PREFIX: &str = "journal-";
const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_SEQ_DIGITS: usize = 20;
/// Read buffer of a segment reader.
const READ_BUFFER_BYTES: usize = 1 << 16;
/// Write buffer reserved up front: batches up to this many records never grow it.
const WRITE_BUFFER_RECORDS: usize = 1024;

/// The file name of the segment whose first record has seq `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!(
        "{SEGMENT_PREFIX}{first_seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_SEQ_DIGITS
    )
}

/// The first seq a segment file name stands for; `None` if it is not a segment's name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// --- errors and reports ---

/// What is wrong with a record or a segment header.
#[derive(Debug)]
pub enum Defect {
    /// The file (`len` bytes) ends inside the 24-byte segment header.
    ShortSegmentHeader {
        len: u64,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    BadHeaderLen(u16),
    BadHeaderCrc {
        stored: u32,
        computed: u32,
    },
    /// The header's first seq is not the one in the file name.
    NameMismatch {
        name_seq: u64,
        header_seq: u64,
    },
    /// The file ends inside a record's 8-byte length and CRC (`available` bytes left).
    ShortRecordHeader {
        available: u64,
    },
    /// A payload length this version does not know (it knows 144).
    BadLength(u32),
    /// The file ends inside a record's payload.
    ShortPayload {
        len: u32,
        available: u64,
    },
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
    /// The CRC matches but the payload is not a command record.
    Undecodable(NativeError),
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ShortSegmentHeader { len } => write!(
                f,
                "file of {len} bytes ends inside the {SEGMENT_HEADER_LEN}-byte segment header"
            ),
            Defect::BadMagic(m) => write!(f, "bad segment magic {m:02x?}, expected \"FJNL\""),
            Defect::UnsupportedVersion(v) => write!(
                f,
                "segment format version {v} is not supported (this reader: {SEGMENT_VERSION})"
            ),
            Defect::BadHeaderLen(n) => write!(
                f,
                "segment header length {n}, expected {SEGMENT_HEADER_LEN}"
            ),
            Defect::BadHeaderCrc { stored, computed } => write!(
                f,
                "segment header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Defect::NameMismatch {
                name_seq,
                header_seq,
            } => write!(
                f,
                "segment header says first seq {header_seq}, its file name says {name_seq}"
            ),
            Defect::ShortRecordHeader { available } => write!(
                f,
                "file ends inside a record's length and CRC ({available} of {RECORD_HEADER_LEN} bytes)"
            ),
            Defect::BadLength(n) => {
                write!(f, "record payload length {n}, expected {PAYLOAD_LEN}")
            }
            Defect::ShortPayload { len, available } => write!(
                f,
                "file ends inside a record's payload ({available} of {len} bytes)"
            ),
            Defect::CrcMismatch { stored, computed } => write!(
                f,
                "record CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Defect::Undecodable(e) => write!(f, "record CRC matches but its payload: {e}"),
        }
    }
}

/// A torn write at the end of the journal: the bytes from `offset` to the end of the last
/// segment, which hold no valid record.
#[derive(Debug)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the first bad record (or the bad header) starts: the end of the good data.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file: what recovery cuts.
    pub bytes: u64,
    /// The segment header itself is torn (`offset` = 0): recovery removes the file.
    pub whole_segment: bool,
    /// What was found at `offset`.
    pub defect: Defect,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail in journal segment {}: {} bytes from byte offset {} ({})",
            self.segment.display(),
            self.bytes,
            self.offset,
            self.defect
        )?;
        if self.whole_segment {
            write!(f, "; the segment header itself is torn")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum JournalError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// A bad record or header that is not a torn tail: start-up must stop here.
    Corrupt {
        segment: PathBuf,
        offset: u64,
        defect: Defect,
    },
    /// A seq that is not the previous one plus 1 (records lost or a segment missing), or a
    /// journal that starts after the seq a replay needs (`offset` 0: the segment's start).
    SeqGap {
        segment: PathBuf,
        offset: u64,
        expected: u64,
        found: u64,
    },
    /// `append` was given seq `found`; the journal's next is `expected` (`None`: empty
    /// journal, any seq from 1 up).
    NotContiguous { expected: Option<u64>, found: u64 },
    /// `append` was given a command the 144-byte record cannot hold exactly.
    Unrepresentable { seq: u64, why: &'static str },
    /// The writer failed earlier (IO error or failed fsync) and does no more work.
    Poisoned,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { path, op, source } => {
                write!(f, "journal: {op} {}: {source}", path.display())
            }
            JournalError::Corrupt {
                segment,
                offset,
                defect,
            } => write!(
                f,
                "journal corrupt: segment {}, byte offset {offset}: {defect} \
                 (not a torn tail: data follows it or it is not the last segment; \
                 a damaged record is never skipped)",
                segment.display()
            ),
            JournalError::SeqGap {
                segment,
                offset,
                expected,
                found,
            } => write!(
                f,
                "journal seq gap: segment {}, byte offset {offset}: expected seq {expected}, \
                 found {found} (records or a whole segment are missing)",
                segment.display()
            ),
            JournalError::NotContiguous { expected, found } => match expected {
                Some(e) => write!(
                    f,
                    "journal append refused: seq {found} where seq {e} was expected \
                     (seqs continue the journal contiguously)"
                ),
                None => write!(
                    f,
                    "journal append refused: seq {found}; seqs count from 1 and must be contiguous"
                ),
            },
            JournalError::Unrepresentable { seq, why } => write!(
                f,
                "journal append refused: command seq {seq} cannot be journaled: {why}"
            ),
            JournalError::Poisoned => write!(
                f,
                "journal writer failed earlier and does no more work; reopen the journal to recover"
            ),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            JournalError::Corrupt {
                defect: Defect::Undecodable(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

impl From<JournalError> for io::Error {
    fn from(e: JournalError) -> Self {
        let kind = match &e {
            JournalError::Io { source, .. } => source.kind(),
            JournalError::NotContiguous { .. } | JournalError::Unrepresentable { .. } => {
                io::ErrorKind::InvalidInput
            }
            JournalError::Corrupt { .. } | JournalError::SeqGap { .. } => {
                io::ErrorKind::InvalidData
            }
            JournalError::Poisoned => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

// --- encoding ---

fn encode_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The header's first seq, or what is wrong with it.
fn check_header(h: &[u8; SEGMENT_HEADER_LEN]) -> Result<u64, Defect> {
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != SEGMENT_MAGIC {
        return Err(Defect::BadMagic(magic));
    }
    let stored = le_u32(&h[20..24]);
    let computed = crc32c::crc32c(&h[0..20]);
    if stored != computed {
        return Err(Defect::BadHeaderCrc { stored, computed });
    }
    let version = le_u16(&h[4..6]);
    if version != SEGMENT_VERSION {
        return Err(Defect::UnsupportedVersion(version));
    }
    let len = le_u16(&h[6..8]);
    if len as usize != SEGMENT_HEADER_LEN {
        return Err(Defect::BadHeaderLen(len));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    Ok(u64::from_le_bytes(seq))
}

/// CRC of a record: the 4 length bytes, then the payload.
fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), payload)
}

/// Appends one whole record for `c` to `buf`.
fn encode_record(c: &Sequenced, buf: &mut Vec<u8>) {
    let payload = native::encode_command(c);
    let len = (PAYLOAD_LEN as u32).to_le_bytes();
    let crc = record_crc(&len, &payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// Whether a 152-byte frame is a whole, CRC-valid version-1 record.
fn is_valid_record(frame: &[u8; RECORD_LEN]) -> bool {
    le_u32(&frame[0..4]) as usize == PAYLOAD_LEN
        && le_u32(&frame[4..8]) == record_crc(&frame[0..4], &frame[RECORD_HEADER_LEN..])
}

/// Whether a CRC-valid record starts at `from`, `from + 152`, ... within the first `len`
/// bytes of the file: "something valid after a bad record".
fn valid_record_from(path: &Path, from: u64, len: u64) -> Result<bool, JournalError> {
    let mut f = File::open(path).map_err(io_err(path, "open"))?;
    f.seek(SeekFrom::Start(from))
        .map_err(io_err(path, "seek in"))?;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, f);
    let mut frame = [0u8; RECORD_LEN];
    let mut at = from;
    while at + RECORD_LEN as u64 <= len {
        r.read_exact(&mut frame).map_err(io_err(path, "read"))?;
        if is_valid_record(&frame) {
            return Ok(true);
        }
        at += RECORD_LEN as u64;
    }
    Ok(false)
}

/// Why a command cannot be stored as a native record exactly (its text would not fit).
fn unrepresentable(c: &Sequenced) -> Option<&'static str> {
    match &c.command {
        Command::AddAsset(a) if a.symbol.len() > native::MAX_SYMBOL_LEN => {
            Some("asset symbol longer than 20 bytes")
        }
        Command::AddMarket(m) if m.symbol.len() > native::MAX_SYMBOL_LEN => {
            Some("market symbol longer than 20 bytes")
        }
        _ => None,
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), JournalError> {
    Ok(())
}

// --- reading ---

/// One segment file of a journal directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: Arc<Path>,
    /// The seq in the file name.
    pub first_seq: u64,
}

/// The segment files of `dir`, by first seq.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let name = entry.file_name();
        let Some(first_seq) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        segments.push(SegmentInfo {
            path: Arc::from(entry.path()),
            first_seq,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// One command read from the journal, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub segment: Arc<Path>,
    /// Byte offset of the record (its length field) in the segment.
    pub offset: u64,
    pub command: Sequenced,
}

struct Cursor {
    path: Arc<Path>,
    file: BufReader<File>,
    len: u64,
    offset: u64,
    /// Records read in this segment (for decode error messages).
    record_no: u64,
    is_last: bool,
}

enum Step {
    Record(Entry),
    SegmentEnd,
    Torn,
}

/// Reads a journal in order, checking every CRC and that seqs are contiguous across records
/// and segments; yields `Entry`s (segment, offset, command). Never modifies a file. Stops at
/// the first error (yielded once, then `None`) or at a torn tail (`torn_tail()` says what).
pub struct JournalReader {
    segments: Vec<SegmentInfo>,
    next_segment: usize,
    current: Option<Cursor>,
    /// Only commands with a greater seq are yielded.
    after_seq: u64,
    /// The journal must hold this seq (the first one a replay needs), when set.
    require_from: Option<u64>,
    /// The seq the next record must have (set from the first header read).
    expected_seq: Option<u64>,
    torn_tail: Option<TornTail>,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    bytes: u64,
    done: bool,
}

impl JournalReader {
    /// Reads the whole journal of `dir`, from its first segment.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, JournalError> {
        let segments = list_segments(dir.as_ref())?;
        Ok(Self::over(segments, 0, 0, None))
    }

    /// Reads what a recovery from a snapshot after `after_seq` needs: yields seqs from
    /// `after_seq + 1` on, which the journal must hold unless it ends at or before
    /// `after_seq` (a journal that starts later is a `SeqGap`). Segments that end before
    /// `after_seq + 1` are not read.
    pub fn open_after(dir: impl AsRef<Path>, after_seq: u64) -> Result<Self, JournalError> {
        let segments = list_segments(dir.as_ref())?;
        let from = after_seq.saturating_add(1);
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from)
            .unwrap_or(0);
        Ok(Self::over(segments, start, after_seq, Some(from)))
    }

    fn over(
        segments: Vec<SegmentInfo>,
        start: usize,
        after_seq: u64,
        require_from: Option<u64>,
    ) -> Self {
        JournalReader {
            segments,
            next_segment: start,
            current: None,
            after_seq,
            require_from,
            expected_seq: None,
            torn_tail: None,
            records: 0,
            first_seq: None,
            last_seq: None,
            bytes: 0,
            done: false,
        }
    }

    /// All segment files of the journal (including any this reader skips).
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// The torn tail found, once reading has reached it.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// Valid records read so far (including those at or before `after_seq`).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Seq of the first valid record read.
    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// Seq of the last valid record read.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The seq the journal continues with after what was read (after the last record, or
    /// the header seq of an empty last segment); `None` before any segment was read.
    pub fn next_seq(&self) -> Option<u64> {
        self.expected_seq
    }

    /// Bytes of valid data read (headers and whole records).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn torn(&mut self, path: &Path, offset: u64, len: u64, whole: bool, defect: Defect) {
        self.torn_tail = Some(TornTail {
            segment: path.to_path_buf(),
            offset,
            bytes: len - offset,
            whole_segment: whole,
            defect,
        });
        self.done = true;
    }

    /// Opens segment `index` and checks its header; `None` if the header is a torn tail.
    fn open_segment(&mut self, index: usize) -> Result<Option<Cursor>, JournalError> {
        let info = self.segments[index].clone();
        let path = &*info.path;
        let is_last = index + 1 == self.segments.len();
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let mut file = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let header = if len < SEGMENT_HEADER_LEN as u64 {
            Err(Defect::ShortSegmentHeader { len })
        } else {
            let mut h = [0u8; SEGMENT_HEADER_LEN];
            file.read_exact(&mut h).map_err(io_err(path, "read"))?;
            check_header(&h)
        };
        let header_seq = match header {
            Ok(seq) => seq,
            Err(defect) => {
                if is_last && !valid_record_from(path, SEGMENT_HEADER_LEN as u64, len)? {
                    self.torn(path, 0, len, true, defect);
                    return Ok(None);
                }
                return Err(JournalError::Corrupt {
                    segment: path.to_path_buf(),
                    offset: 0,
                    defect,
                });
            }
        };
        if header_seq != info.first_seq {
            return Err(JournalError::Corrupt {
                segment: path.to_path_buf(),
                offset: 0,
                defect: Defect::NameMismatch {
                    name_seq: info.first_seq,
                    header_seq,
                },
            });
        }
        let expected = match (self.expected_seq, self.require_from) {
            (Some(e), _) => Some(e),
            // The first segment read: a replay needs it to start at or before its seq.
            (None, Some(from)) if header_seq > from => Some(from),
            _ => None,
        };
        if let Some(expected) = expected {
            if header_seq != expected {
                return Err(JournalError::SeqGap {
                    segment: path.to_path_buf(),
                    offset: 0,
                    expected,
                    found: header_seq,
                });
            }
        }
        self.expected_seq = Some(header_seq);
        self.bytes += SEGMENT_HEADER_LEN as u64;
        Ok(Some(Cursor {
            path: info.path.clone(),
            file,
            len,
            offset: SEGMENT_HEADER_LEN as u64,
            record_no: 0,
            is_last,
        }))
    }

    fn read_record(&mut self) -> Result<Step, JournalError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(Step::SegmentEnd);
        };
        let path = &*cur.path;
        let remaining = cur.len - cur.offset;
        if remaining == 0 {
            return Ok(Step::SegmentEnd);
        }
        let defect = 'bad: {
            if remaining < RECORD_HEADER_LEN as u64 {
                break 'bad Defect::ShortRecordHeader {
                    available: remaining,
                };
            }
            let mut head = [0u8; RECORD_HEADER_LEN];
            cur.file
                .read_exact(&mut head)
                .map_err(io_err(path, "read"))?;
            let len = le_u32(&head[0..4]);
            if len as usize != PAYLOAD_LEN {
                break 'bad Defect::BadLength(len);
            }
            if remaining < RECORD_LEN as u64 {
                break 'bad Defect::ShortPayload {
                    len,
                    available: remaining - RECORD_HEADER_LEN as u64,
                };
            }
            let mut payload = [0u8; PAYLOAD_LEN];
            cur.file
                .read_exact(&mut payload)
                .map_err(io_err(path, "read"))?;
            let stored = le_u32(&head[4..8]);
            let computed = record_crc(&head[0..4], &payload);
            if stored != computed {
                break 'bad Defect::CrcMismatch { stored, computed };
            }
            let offset = cur.offset;
            let command = native::decode_command(&payload, cur.record_no).map_err(|e| {
                JournalError::Corrupt {
                    segment: path.to_path_buf(),
                    offset,
                    defect: Defect::Undecodable(e),
                }
            })?;
            // Set by `open_segment` before any record is read.
            let expected = self.expected_seq.unwrap_or(command.seq);
            if command.seq != expected {
                return Err(JournalError::SeqGap {
                    segment: path.to_path_buf(),
                    offset,
                    expected,
                    found: command.seq,
                });
            }
            self.expected_seq = Some(command.seq.saturating_add(1));
            cur.offset += RECORD_LEN as u64;
            cur.record_no += 1;
            self.records += 1;
            self.bytes += RECORD_LEN as u64;
            self.first_seq.get_or_insert(command.seq);
            self.last_seq = Some(command.seq);
            return Ok(Step::Record(Entry {
                segment: cur.path.clone(),
                offset,
                command,
            }));
        };
        let (offset, len, is_last) = (cur.offset, cur.len, cur.is_last);
        let path = cur.path.clone();
        if is_last && !valid_record_from(&path, offset + RECORD_LEN as u64, len)? {
            self.torn(&path, offset, len, false, defect);
            return Ok(Step::Torn);
        }
        Err(JournalError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            defect,
        })
    }

    fn step(&mut self) -> Result<Option<Entry>, JournalError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.current.is_none() {
                if self.next_segment == self.segments.len() {
                    self.done = true;
                    return Ok(None);
                }
                let index = self.next_segment;
                self.next_segment += 1;
                match self.open_segment(index)? {
                    Some(c) => self.current = Some(c),
                    None => return Ok(None),
                }
            }
            match self.read_record()? {
                Step::Record(e) if e.command.seq > self.after_seq => return Ok(Some(e)),
                Step::Record(_) => {}
                Step::SegmentEnd => self.current = None,
                Step::Torn => return Ok(None),
            }
        }
    }
}

impl Iterator for JournalReader {
    type Item = Result<Entry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.done = true;
                self.current = None;
                Some(Err(e))
            }
        }
    }
}

/// What a whole journal holds.
#[derive(Debug)]
pub struct JournalSummary {
    pub segments: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Bytes of valid data (headers and whole records), torn tail not counted.
    pub bytes: u64,
    pub torn_tail: Option<TornTail>,
}

/// Reads and checks the whole journal of `dir` without modifying anything.
pub fn verify(dir: impl AsRef<Path>) -> Result<JournalSummary, JournalError> {
    let mut r = JournalReader::open(dir)?;
    for e in r.by_ref() {
        e?;
    }
    Ok(JournalSummary {
        segments: r.segments.len(),
        records: r.records,
        first_seq: r.first_seq,
        last_seq: r.last_seq,
        bytes: r.bytes,
        torn_tail: r.torn_tail,
    })
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplaySummary {
    /// Commands handed to the callback (seq > `after_seq`).
    pub replayed: u64,
    /// The journal's last seq, if anything was read (may be at or before `after_seq`).
    pub last_seq: Option<u64>,
    /// A torn tail the replay stopped before (not cut: `JournalWriter::open` does that).
    pub torn_tail: Option<TornTail>,
}

/// Hands `f` every command of the journal with seq > `after_seq`, in order, after checking
/// it (see `JournalReader::open_after`). Reads only; a torn tail is reported, not cut.
pub fn replay(
    dir: impl AsRef<Path>,
    after_seq: u64,
    mut f: impl FnMut(Sequenced),
) -> Result<ReplaySummary, JournalError> {
    let mut r = JournalReader::open_after(dir, after_seq)?;
    let mut replayed = 0;
    for e in r.by_ref() {
        f(e?.command);
        replayed += 1;
    }
    Ok(ReplaySummary {
        replayed,
        last_seq: r.last_seq,
        torn_tail: r.torn_tail,
    })
}

// --- writing ---

/// When appended commands are made durable. Time comes from the caller
/// (`JournalWriter::sync_if_due(now_ns)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// One fsync per appended batch (group commit): the default.
    EveryBatch,
    /// At most one fsync per this many ms: a batch waits for the next due sync.
    EveryMillis(u64),
    /// No fsync but at segment rolls and `sync`/`close`: the OS writes back when it likes.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A segment never grows past this, except to hold its first record.
    pub segment_size_limit_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size_limit_bytes: DEFAULT_SEGMENT_SIZE_LIMIT_BYTES,
            fsync: FsyncPolicy::EveryBatch,
        }
    }
}

/// What opening a journal for writing found (and cut).
#[derive(Debug)]
pub struct OpenReport {
    /// Segment files after recovery.
    pub segments: usize,
    /// The seq the next append must start with; `None` for an empty journal.
    pub next_seq: Option<u64>,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
}

struct WriteSegment {
    path: PathBuf,
    file: File,
    len_bytes: u64,
    records: u64,
}

/// Appends batches of commands to a journal directory. See the module doc.
pub struct JournalWriter {
    dir: PathBuf,
    config: JournalConfig,
    segment: Option<WriteSegment>,
    next_seq: Option<u64>,
    /// Last seq written to a file, and last one covered by a completed fsync.
    written_seq: Option<u64>,
    durable_seq: Option<u64>,
    /// Encoded records of the batch being written; reused, so it stops growing.
    buf: Vec<u8>,
    unsynced: bool,
    last_sync_ns: Option<u64>,
    last_fsync: Option<Duration>,
    poisoned: bool,
}

impl JournalWriter {
    /// Opens the journal in `dir` (created if missing) for appending: checks the last
    /// segment, cuts a torn tail (reported in `OpenReport`), and fsyncs what is there. A
    /// corrupt last segment is an error. Earlier segments are checked by `replay`/`verify`.
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Self, OpenReport), JournalError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir, "create directory"))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let mut segments = list_segments(&dir)?;
        let (next_seq, last_seq, torn_tail) =
            Self::scan_tail(&segments, segments.len().saturating_sub(1))?;
        if let Some(t) = &torn_tail {
            if t.whole_segment {
                fs::remove_file(&t.segment).map_err(io_err(&t.segment, "remove torn segment"))?;
                sync_dir(&dir)?;
                segments.pop();
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&t.segment)
                    .map_err(io_err(&t.segment, "open"))?;
                f.set_len(t.offset)
                    .map_err(io_err(&t.segment, "truncate torn tail of"))?;
                f.sync_all().map_err(io_err(&t.segment, "fsync"))?;
            }
        }
        let segment = match segments.last() {
            None => None,
            Some(s) => {
                let path = s.path.to_path_buf();
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path, "open"))?;
                // What a crashed process left may sit in the page cache only.
                file.sync_all().map_err(io_err(&path, "fsync"))?;
                let len_bytes = file.metadata().map_err(io_err(&path, "stat"))?.len();
                let records = (len_bytes - SEGMENT_HEADER_LEN as u64) / RECORD_LEN as u64;
                Some(WriteSegment {
                    path,
                    file,
                    len_bytes,
                    records,
                })
            }
        };
        let writer = JournalWriter {
            dir,
            config,
            segment,
            next_seq,
            written_seq: last_seq,
            durable_seq: last_seq,
            buf: Vec::with_capacity(WRITE_BUFFER_RECORDS * RECORD_LEN),
            unsynced: false,
            last_sync_ns: None,
            last_fsync: None,
            poisoned: false,
        };
        let report = OpenReport {
            segments: segments.len(),
            next_seq,
            torn_tail,
        };
        Ok((writer, report))
    }

    /// Reads the segments from `start` to the end: the next seq, the last seq and a torn
    /// tail. A torn header in the last segment sends it one segment back, for the seqs
    /// before it. The last seq of an empty last segment is the one before its first (held by
    /// the segment before, fsynced when it was closed), unless it is the only segment.
    #[allow(clippy::type_complexity)]
    fn scan_tail(
        segments: &[SegmentInfo],
        start: usize,
    ) -> Result<(Option<u64>, Option<u64>, Option<TornTail>), JournalError> {
        let mut r = JournalReader::over(segments.to_vec(), start, 0, None);
        for e in r.by_ref() {
            e?;
        }
        match r.torn_tail {
            Some(t) if t.whole_segment && start > 0 && start + 1 == segments.len() => {
                Self::scan_tail(segments, start - 1)
            }
            torn => {
                let before = (start > 0)
                    .then(|| r.expected_seq.and_then(|s| s.checked_sub(1)))
                    .flatten();
                Ok((r.expected_seq, r.last_seq.or(before), torn))
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// The seq the next append must start with; `None` while the journal is empty.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Seq of the last command written (durable or not).
    pub fn last_seq(&self) -> Option<u64> {
        self.written_seq
    }

    /// Seq of the last command covered by a completed fsync: safe to acknowledge.
    pub fn durable_seq(&self) -> Option<u64> {
        self.durable_seq
    }

    /// The segment being appended to.
    pub fn segment_path(&self) -> Option<&Path> {
        self.segment.as_ref().map(|s| s.path.as_path())
    }

    /// How long the last fsync of a segment took (for metrics).
    pub fn last_fsync_latency(&self) -> Option<Duration> {
        self.last_fsync
    }

    /// Whether commands were written since the last fsync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// When (caller's clock, ns) the policy wants the next fsync: `Some(0)` = now; `None`
    /// while nothing waits or under `Never`. For a caller's timer under `EveryMillis`.
    pub fn sync_due_at_ns(&self) -> Option<u64> {
        if !self.unsynced {
            return None;
        }
        match self.config.fsync {
            FsyncPolicy::EveryBatch => Some(0),
            FsyncPolicy::Never => None,
            FsyncPolicy::EveryMillis(ms) => Some(
                self.last_sync_ns
                    .map_or(0, |t| t.saturating_add(ms.saturating_mul(1_000_000))),
            ),
        }
    }

    fn check_batch(&self, cmds: &[Sequenced]) -> Result<Option<u64>, JournalError> {
        let mut expected = self.next_seq;
        for c in cmds {
            let ok = match expected {
                Some(e) => c.seq == e,
                None => c.seq >= 1,
            };
            if !ok || c.seq == u64::MAX {
                return Err(JournalError::NotContiguous {
                    expected,
                    found: c.seq,
                });
            }
            if let Some(why) = unrepresentable(c) {
                return Err(JournalError::Unrepresentable { seq: c.seq, why });
            }
            expected = Some(c.seq + 1);
        }
        Ok(expected)
    }

    /// Writes a batch (not yet durable: see `sync_if_due`). Refuses, writing nothing, seqs
    /// that do not continue the journal exactly (`ErrorKind::InvalidInput`, with a
    /// `JournalError` inside). One `write` per segment the batch touches.
    pub fn append(&mut self, cmds: &[Sequenced]) -> io::Result<()> {
        if self.poisoned {
            return Err(JournalError::Poisoned.into());
        }
        if cmds.is_empty() {
            return Ok(());
        }
        let next = self.check_batch(cmds)?;
        let result = self.write_batch(cmds);
        if result.is_err() {
            self.poisoned = true;
        }
        result?;
        self.next_seq = next;
        Ok(())
    }

    fn write_batch(&mut self, cmds: &[Sequenced]) -> Result<(), JournalError> {
        let limit = self.config.segment_size_limit_bytes;
        let mut i = 0;
        while i < cmds.len() {
            let full = self
                .segment
                .as_ref()
                .is_none_or(|s| s.records > 0 && s.len_bytes + RECORD_LEN as u64 > limit);
            if full {
                self.roll(cmds[i].seq)?;
            }
            let Some(seg) = self.segment.as_mut() else {
                unreachable!("roll leaves a segment open");
            };
            self.buf.clear();
            let (mut len_bytes, mut records) = (seg.len_bytes, seg.records);
            while i < cmds.len() && (records == 0 || len_bytes + RECORD_LEN as u64 <= limit) {
                encode_record(&cmds[i], &mut self.buf);
                len_bytes += RECORD_LEN as u64;
                records += 1;
                i += 1;
            }
            if let Err(e) = seg.file.write_all(&self.buf) {
                // Best effort: leave no partial record behind. The writer is poisoned anyway.
                let _ = seg.file.set_len(seg.len_bytes);
                return Err(io_err(&seg.path, "write")(e));
            }
            seg.len_bytes = len_bytes;
            seg.records = records;
            self.written_seq = Some(cmds[i - 1].seq);
            self.unsynced = true;
        }
        Ok(())
    }

    /// Closes the current segment (fsynced) and creates the next, starting at `first_seq`.
    fn roll(&mut self, first_seq: u64) -> Result<(), JournalError> {
        if self.segment.is_some() {
            self.sync_inner()?;
        }
        let path = self.dir.join(segment_file_name(first_seq));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path, "create segment"))?;
        file.write_all(&encode_header(first_seq))
            .map_err(io_err(&path, "write header of"))?;
        file.sync_all().map_err(io_err(&path, "fsync"))?;
        sync_dir(&self.dir)?;
        self.segment = Some(WriteSegment {
            path,
            file,
            len_bytes: SEGMENT_HEADER_LEN as u64,
            records: 0,
        });
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<Option<Duration>, JournalError> {
        let Some(seg) = self.segment.as_mut() else {
            return Ok(None);
        };
        if !self.unsynced {
            return Ok(None);
        }
        let t0 = Instant::now();
        seg.file.sync_data().map_err(io_err(&seg.path, "fsync"))?;
        let took = t0.elapsed();
        self.last_fsync = Some(took);
        self.unsynced = false;
        self.durable_seq = self.written_seq;
        Ok(Some(took))
    }

    /// fsyncs (fdatasync) the current segment if anything was written since the last sync;
    /// returns how long it took. Does not move the `EveryMillis` clock (`sync_if_due` does).
    pub fn sync(&mut self) -> io::Result<Option<Duration>> {
        if self.poisoned {
            return Err(JournalError::Poisoned.into());
        }
        let result = self.sync_inner();
        if result.is_err() {
            // After a failed fsync the kernel may have dropped the dirty pages: never retry.
            self.poisoned = true;
        }
        Ok(result?)
    }

    /// Syncs if the policy says so at `now_ns` (the caller's clock); returns how long the
    /// fsync took if one ran. Call after each `append`, and from a timer under
    /// `EveryMillis` (see `sync_due_at_ns`).
    pub fn sync_if_due(&mut self, now_ns: u64) -> io::Result<Option<Duration>> {
        if self.poisoned {
            return Err(JournalError::Poisoned.into());
        }
        match self.sync_due_at_ns() {
            Some(due) if due <= now_ns => {
                let took = self.sync()?;
                self.last_sync_ns = Some(now_ns);
                Ok(took)
            }
            _ => Ok(None),
        }
    }

    /// Syncs whatever is unsynced (whatever the policy) and closes the journal.
    pub fn close(mut self) -> io::Result<()> {
        self.sync().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::liquibook;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "fulgur-journal-test-{}-{n}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Setup commands (assets, a market, deposits) then orders, seq 1..=n.
    fn commands(n: usize) -> Vec<Sequenced> {
        let flow = liquibook(n, 7, 3);
        let mut cmds: Vec<Command> = flow.setup_commands(0);
        cmds.push(Command::Tick);
        cmds.extend(flow.commands.into_iter().map(|c| c.command));
        cmds.truncate(n);
        assert_eq!(cmds.len(), n);
        cmds.into_iter()
            .enumerate()
            .map(|(i, command)| Sequenced {
                seq: i as u64 + 1,
                ts_ns: 1_700_000_000_000_000_000 + 1_000 * i as u64,
                command,
            })
            .collect()
    }

    /// Three records per segment.
    fn small() -> JournalConfig {
        JournalConfig {
            segment_size_limit_bytes: (SEGMENT_HEADER_LEN + 3 * RECORD_LEN) as u64 + 10,
            fsync: FsyncPolicy::EveryBatch,
        }
    }

    /// Writes `cmds` in batches of 1, 2, 3, ... and closes.
    fn write(dir: &Path, config: JournalConfig, cmds: &[Sequenced]) {
        let (mut w, report) = JournalWriter::open(dir, config).unwrap();
        assert!(report.torn_tail.is_none());
        let mut i = 0;
        let mut size = 1;
        while i < cmds.len() {
            let end = (i + size).min(cmds.len());
            w.append(&cmds[i..end]).unwrap();
            w.sync_if_due(0).unwrap();
            i = end;
            size += 1;
        }
        w.close().unwrap();
    }

    fn replay_all(dir: &Path, after_seq: u64) -> (Vec<Sequenced>, ReplaySummary) {
        let mut out = Vec::new();
        let summary = replay(dir, after_seq, |c| out.push(c)).unwrap();
        (out, summary)
    }

    fn last_segment(dir: &Path) -> PathBuf {
        list_segments(dir)
            .unwrap()
            .last()
            .unwrap()
            .path
            .to_path_buf()
    }

    fn flip(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn journal_file_names_round_trip() {
        let name = segment_file_name(42);
        assert_eq!(name, "journal-00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&name), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("journal-42.seg"), None);
        assert_eq!(
            parse_segment_file_name("journal-0000000000000000004x.seg"),
            None
        );
        assert_eq!(
            parse_segment_file_name("journal-00000000000000000042.seg.tmp"),
            None
        );
    }

    #[test]
    fn journal_round_trip_across_segments() {
        let dir = TempDir::new("round-trip");
        let cmds = commands(50);
        write(dir.path(), small(), &cmds);

        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 17, "3 records per segment");
        for (k, s) in segments.iter().enumerate() {
            assert_eq!(s.first_seq, 1 + 3 * k as u64);
            assert!(fs::metadata(&*s.path).unwrap().len() <= small().segment_size_limit_bytes);
        }
        let summary = verify(dir.path()).unwrap();
        assert_eq!(summary.segments, 17);
        assert_eq!(summary.records, 50);
        assert_eq!(summary.first_seq, Some(1));
        assert_eq!(summary.last_seq, Some(50));
        assert_eq!(
            summary.bytes,
            17 * SEGMENT_HEADER_LEN as u64 + 50 * RECORD_LEN as u64
        );
        assert!(summary.torn_tail.is_none());

        let (all, s) = replay_all(dir.path(), 0);
        assert_eq!(all, cmds);
        assert_eq!((s.replayed, s.last_seq), (50, Some(50)));
        for after in [1, 3, 4, 20, 49, 50, 60] {
            let (tail, s) = replay_all(dir.path(), after);
            assert_eq!(tail, cmds[(after as usize).min(50)..], "after {after}");
            assert_eq!(s.last_seq, Some(50));
        }

        // The inspect iterator: where each record is.
        let entries: Vec<Entry> = JournalReader::open(dir.path())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(entries.len(), 50);
        assert_eq!(&*entries[4].segment, &*segments[1].path);
        assert_eq!(entries[4].offset, (SEGMENT_HEADER_LEN + RECORD_LEN) as u64);
        assert_eq!(entries[4].command, cmds[4]);
    }

    #[test]
    fn journal_reopen_and_continue() {
        let dir = TempDir::new("reopen");
        let cmds = commands(30);
        write(dir.path(), small(), &cmds[..10]);

        let (mut w, report) = JournalWriter::open(dir.path(), small()).unwrap();
        assert_eq!(report.next_seq, Some(11));
        assert_eq!(report.segments, 4);
        assert!(report.torn_tail.is_none());
        assert_eq!((w.last_seq(), w.durable_seq()), (Some(10), Some(10)));

        // Not contiguous: refused, nothing written.
        for bad in [
            &cmds[11..13],
            &cmds[9..12],
            &[cmds[10].clone(), cmds[12].clone()][..],
        ] {
            let e = w.append(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("append refused: seq"), "{e}");
        }
        assert_eq!(verify(dir.path()).unwrap().last_seq, Some(10));

        w.append(&cmds[10..20]).unwrap();
        assert!(w.has_unsynced());
        assert_eq!(w.durable_seq(), Some(18), "synced at the rolls only");
        assert!(w.sync_if_due(5).unwrap().is_some());
        assert!(w.last_fsync_latency().is_some());
        assert_eq!(w.durable_seq(), Some(20));
        w.close().unwrap();

        let (mut w, report) = JournalWriter::open(dir.path(), small()).unwrap();
        assert_eq!(report.next_seq, Some(21));
        w.append(&cmds[20..]).unwrap();
        w.close().unwrap();
        assert_eq!(replay_all(dir.path(), 0).0, cmds);
    }

    #[test]
    fn journal_empty_and_first_seq() {
        let dir = TempDir::new("empty");
        let nested = dir.path().join("a").join("journal");
        let (mut w, report) = JournalWriter::open(&nested, small()).unwrap();
        assert_eq!((report.segments, report.next_seq), (0, None));
        let v = verify(&nested).unwrap();
        assert_eq!((v.segments, v.records, v.last_seq), (0, 0, None));
        assert_eq!(replay_all(&nested, 0).1.replayed, 0);

        let mut zero = commands(1);
        zero[0].seq = 0;
        assert!(w.append(&zero).is_err());
        // A journal after a snapshot may start anywhere.
        let cmds: Vec<Sequenced> = commands(5)
            .into_iter()
            .map(|mut c| {
                c.seq += 100;
                c
            })
            .collect();
        w.append(&cmds).unwrap();
        w.close().unwrap();
        assert_eq!(replay_all(&nested, 100).0, cmds);
        assert_eq!(replay_all(&nested, 103).0, cmds[3..]);
        // A replay that needs seqs the journal does not hold.
        match replay(&nested, 50, |_| {}) {
            Err(JournalError::SeqGap {
                offset: 0,
                expected: 51,
                found: 101,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // But reading the whole journal is fine.
        assert_eq!(verify(&nested).unwrap().first_seq, Some(101));
    }

    #[test]
    fn journal_fsync_policies() {
        let dir = TempDir::new("policies");
        let cmds = commands(10);
        let config = |fsync| JournalConfig {
            segment_size_limit_bytes: DEFAULT_SEGMENT_SIZE_LIMIT_BYTES,
            fsync,
        };
        let (mut w, _) = JournalWriter::open(dir.path(), config(FsyncPolicy::Never)).unwrap();
        w.append(&cmds[..2]).unwrap();
        assert_eq!(w.sync_due_at_ns(), None);
        assert!(w.sync_if_due(u64::MAX).unwrap().is_none());
        assert_eq!((w.last_seq(), w.durable_seq()), (Some(2), None));
        w.close().unwrap();

        let (mut w, _) =
            JournalWriter::open(dir.path(), config(FsyncPolicy::EveryMillis(5))).unwrap();
        assert_eq!(w.durable_seq(), Some(2));
        assert!(w.sync_if_due(1_000).unwrap().is_none(), "nothing to sync");
        w.append(&cmds[2..4]).unwrap();
        assert!(
            w.sync_if_due(1_000).unwrap().is_some(),
            "first sync is due at once"
        );
        w.append(&cmds[4..6]).unwrap();
        assert_eq!(w.sync_due_at_ns(), Some(5_001_000));
        assert!(w.sync_if_due(5_000_999).unwrap().is_none());
        assert_eq!(w.durable_seq(), Some(4));
        assert!(w.sync_if_due(5_001_000).unwrap().is_some());
        assert_eq!(w.durable_seq(), Some(6));
        w.close().unwrap();

        let (mut w, _) = JournalWriter::open(dir.path(), config(FsyncPolicy::EveryBatch)).unwrap();
        w.append(&cmds[6..]).unwrap();
        assert_eq!(w.sync_due_at_ns(), Some(0));
        assert!(w.sync_if_due(0).unwrap().is_some());
        assert_eq!(w.durable_seq(), Some(10));
        assert!(w.sync_if_due(1).unwrap().is_none());
        drop(w);
        assert_eq!(replay_all(dir.path(), 0).0, cmds);
    }

    #[test]
    fn journal_refuses_unrepresentable_commands() {
        let dir = TempDir::new("unrepresentable");
        let (mut w, _) = JournalWriter::open(dir.path(), small()).unwrap();
        let mut c = commands(1);
        let Command::AddAsset(a) = &mut c[0].command else {
            panic!("first command adds an asset");
        };
        a.symbol = "X".repeat(21);
        let e = w.append(&c).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 0);
        w.append(&commands(1)).unwrap();
    }

    #[test]
    fn journal_torn_last_record_at_every_offset() {
        let dir = TempDir::new("torn");
        let cmds = commands(11);
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        let full = fs::read(&last).unwrap();
        // The last segment holds seqs 10 and 11.
        assert_eq!(full.len(), SEGMENT_HEADER_LEN + 2 * RECORD_LEN);
        let start = SEGMENT_HEADER_LEN + RECORD_LEN;
        for cut in start + 1..full.len() {
            fs::write(&last, &full[..cut]).unwrap();

            let v = verify(dir.path()).unwrap();
            let t = v.torn_tail.as_ref().expect("torn tail");
            assert_eq!((t.offset, t.bytes), (start as u64, (cut - start) as u64));
            assert_eq!(t.segment, last);
            assert!(!t.whole_segment);
            assert_eq!((v.records, v.last_seq), (10, Some(10)));
            assert_eq!(
                fs::metadata(&last).unwrap().len(),
                cut as u64,
                "verify cuts nothing"
            );

            let (got, s) = replay_all(dir.path(), 0);
            assert_eq!(got, cmds[..10]);
            assert!(s.torn_tail.is_some());
            assert_eq!(
                fs::metadata(&last).unwrap().len(),
                cut as u64,
                "replay cuts nothing"
            );

            let (mut w, report) = JournalWriter::open(dir.path(), small()).unwrap();
            let t = report.torn_tail.expect("recovery reports the cut");
            assert_eq!((t.offset, t.bytes), (start as u64, (cut - start) as u64));
            assert_eq!(report.next_seq, Some(11));
            assert_eq!(fs::metadata(&last).unwrap().len(), start as u64);
            assert!(verify(dir.path()).unwrap().torn_tail.is_none());
            // The lost command is appended again.
            w.append(&cmds[10..]).unwrap();
            w.close().unwrap();
            assert_eq!(replay_all(dir.path(), 0).0, cmds);
        }
    }

    #[test]
    fn journal_torn_segment_header() {
        let dir = TempDir::new("torn-header");
        let cmds = commands(7);
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        let full = fs::read(&last).unwrap();
        // The last segment holds seq 7 only: cut inside its header (crash while rolling).
        for cut in 0..SEGMENT_HEADER_LEN {
            fs::write(&last, &full[..cut]).unwrap();
            let v = verify(dir.path()).unwrap();
            let t = v.torn_tail.as_ref().expect("torn header");
            assert!(t.whole_segment);
            assert_eq!((t.offset, t.bytes), (0, cut as u64));
            assert_eq!(v.last_seq, Some(6));
            assert_eq!(replay_all(dir.path(), 0).0, cmds[..6]);

            let (mut w, report) = JournalWriter::open(dir.path(), small()).unwrap();
            assert!(report.torn_tail.unwrap().whole_segment);
            assert_eq!(report.next_seq, Some(7));
            assert!(!last.exists(), "the torn segment is removed");
            w.append(&cmds[6..]).unwrap();
            w.close().unwrap();
            assert_eq!(replay_all(dir.path(), 0).0, cmds);
        }
        // A torn header in the only segment: the journal is empty again.
        let only = TempDir::new("torn-only-header");
        write(only.path(), small(), &cmds[..1]);
        let seg = last_segment(only.path());
        fs::write(&seg, &fs::read(&seg).unwrap()[..10]).unwrap();
        let (_, report) = JournalWriter::open(only.path(), small()).unwrap();
        assert_eq!((report.segments, report.next_seq), (0, None));
    }

    #[test]
    fn journal_zero_filled_tail_is_torn() {
        let dir = TempDir::new("zeros");
        let cmds = commands(5);
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        let good = fs::metadata(&last).unwrap().len();
        let mut bytes = fs::read(&last).unwrap();
        bytes.extend_from_slice(&[0u8; 4096]);
        fs::write(&last, bytes).unwrap();
        let t = verify(dir.path()).unwrap().torn_tail.unwrap();
        assert_eq!((t.offset, t.bytes), (good, 4096));
        assert!(matches!(t.defect, Defect::BadLength(0)));
        let (_, report) = JournalWriter::open(dir.path(), small()).unwrap();
        assert_eq!(report.next_seq, Some(6));
        assert_eq!(fs::metadata(&last).unwrap().len(), good);
    }

    #[test]
    fn journal_flipped_byte_in_last_record_is_torn_tail() {
        let dir = TempDir::new("flip-last");
        let cmds = commands(11);
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        let start = (SEGMENT_HEADER_LEN + RECORD_LEN) as u64;
        flip(&last, start + 30);
        let t = verify(dir.path()).unwrap().torn_tail.unwrap();
        assert_eq!((t.offset, t.bytes), (start, RECORD_LEN as u64));
        assert!(matches!(t.defect, Defect::CrcMismatch { .. }));
        let (_, report) = JournalWriter::open(dir.path(), small()).unwrap();
        assert_eq!(report.torn_tail.unwrap().offset, start);
        assert_eq!(report.next_seq, Some(11));
        assert_eq!(replay_all(dir.path(), 0).0, cmds[..10]);
    }

    fn expect_corrupt(result: Result<impl fmt::Debug, JournalError>, segment: &Path, offset: u64) {
        match result {
            Err(e @ JournalError::Corrupt { .. }) => {
                let JournalError::Corrupt {
                    segment: s,
                    offset: o,
                    ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!((s.as_path(), *o), (segment, offset));
                let msg = e.to_string();
                assert!(msg.contains(&segment.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("byte offset {offset}")), "{msg}");
            }
            other => panic!(
                "expected corruption at {} {offset}: {other:?}",
                segment.display()
            ),
        }
    }

    #[test]
    fn journal_flipped_byte_in_middle_is_an_error() {
        let cmds = commands(11);
        let record = |k: usize| (SEGMENT_HEADER_LEN + k * RECORD_LEN) as u64;
        // (segment index, record index in it, byte within the record)
        for (seg, rec, byte) in [(1, 1, 0), (1, 1, 5), (1, 1, 100), (0, 2, 151), (3, 0, 40)] {
            let dir = TempDir::new("flip-middle");
            write(dir.path(), small(), &cmds);
            let path = list_segments(dir.path()).unwrap()[seg].path.to_path_buf();
            flip(&path, record(rec) + byte);
            expect_corrupt(verify(dir.path()), &path, record(rec));
            expect_corrupt(replay(dir.path(), 0, |_| {}), &path, record(rec));
            let entries: Vec<_> = JournalReader::open(dir.path()).unwrap().collect();
            assert!(entries.last().unwrap().is_err());
            assert_eq!(
                entries.len(),
                3 * seg + rec + 1,
                "records before it, then the error"
            );
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                record(3.min(11 - 3 * seg)),
                "nothing cut"
            );
        }
        // In the last segment, followed by a valid record: an error too, also for the writer.
        let dir = TempDir::new("flip-last-segment-middle");
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        flip(&last, record(0) + 20);
        expect_corrupt(verify(dir.path()), &last, record(0));
        expect_corrupt(
            JournalWriter::open(dir.path(), small()).map(|(_, r)| r),
            &last,
            record(0),
        );
        // A damaged segment header followed by records.
        let dir = TempDir::new("flip-header");
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        flip(&last, 9);
        expect_corrupt(verify(dir.path()), &last, 0);
    }

    #[test]
    fn journal_undecodable_record_with_valid_crc_is_an_error() {
        let dir = TempDir::new("undecodable");
        let cmds = commands(4);
        write(dir.path(), small(), &cmds);
        let last = last_segment(dir.path());
        // Rewrite the last record with a bad command kind and a matching CRC.
        let mut bytes = fs::read(&last).unwrap();
        let at = SEGMENT_HEADER_LEN;
        bytes[at + RECORD_HEADER_LEN + 1] = 200;
        let crc = record_crc(
            &bytes[at..at + 4],
            &bytes[at + RECORD_HEADER_LEN..at + RECORD_LEN],
        );
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&last, bytes).unwrap();
        expect_corrupt(verify(dir.path()), &last, at as u64);
        expect_corrupt(
            JournalWriter::open(dir.path(), small()).map(|(_, r)| r),
            &last,
            at as u64,
        );
    }

    #[test]
    fn journal_seq_gap_is_an_error() {
        let dir = TempDir::new("gap");
        let cmds = commands(8);
        write(dir.path(), small(), &cmds[..5]);
        // A valid record with seq 7 after seq 5, written by hand.
        let last = last_segment(dir.path());
        let mut buf = Vec::new();
        encode_record(&cmds[6], &mut buf);
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&buf).unwrap();
        drop(f);
        let offset = (SEGMENT_HEADER_LEN + 2 * RECORD_LEN) as u64;
        match verify(dir.path()) {
            Err(JournalError::SeqGap {
                segment,
                offset: o,
                expected: 6,
                found: 7,
            }) => assert_eq!((segment, o), (last.clone(), offset)),
            other => panic!("{other:?}"),
        }
        assert!(JournalWriter::open(dir.path(), small()).is_err());
    }

    #[test]
    fn journal_missing_middle_segment_is_an_error() {
        let dir = TempDir::new("missing");
        let cmds = commands(12);
        write(dir.path(), small(), &cmds);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 4);
        fs::remove_file(&*segments[1].path).unwrap();
        match verify(dir.path()) {
            Err(e @ JournalError::SeqGap { .. }) => {
                let JournalError::SeqGap {
                    segment,
                    offset,
                    expected,
                    found,
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(segment.as_path(), &*segments[2].path);
                assert_eq!((*offset, *expected, *found), (0, 4, 7));
                assert!(e.to_string().contains("journal-00000000000000000007.seg"));
            }
            other => panic!("{other:?}"),
        }
        assert!(replay(dir.path(), 0, |_| {}).is_err());
        // A replay from a snapshot after the hole does not need the missing segment.
        let (tail, _) = replay_all(dir.path(), 6);
        assert_eq!(tail, cmds[6..]);
    }

    #[test]
    fn journal_header_seq_must_match_name() {
        let dir = TempDir::new("rename");
        let cmds = commands(6);
        write(dir.path(), small(), &cmds);
        let segments = list_segments(dir.path()).unwrap();
        let moved = dir.path().join(segment_file_name(5));
        fs::rename(&*segments[1].path, &moved).unwrap();
        match verify(dir.path()) {
            Err(JournalError::Corrupt {
                segment,
                offset: 0,
                defect:
                    Defect::NameMismatch {
                        name_seq: 5,
                        header_seq: 4,
                    },
            }) => assert_eq!(segment, moved),
            other => panic!("{other:?}"),
        }
    }
}
