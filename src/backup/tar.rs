//! A small streaming reader of tar archives, for `pg_basebackup --format=tar --pgdata=-`.
//!
//! It reads the archive as it arrives, one member at a time, never seeking and never holding
//! more than one 512-byte header (plus a long name) in memory. It understands what
//! `pg_basebackup` and common tar writers produce: ustar headers (with the `prefix` field), GNU
//! long names and link targets (`././@LongLink`, types `L` and `K`), pax extended headers (type
//! `x`: `path`, `linkpath`, `size`, `mtime`; global ones, type `g`, are skipped), sizes in octal
//! or GNU base-256, regular files, directories and symbolic links. Other member types (hard
//! links, devices, FIFOs) are reported as [`MemberKind::Other`] with their contents skipped.
//!
//! The archive must end with its end-of-archive marker (a zero block): a stream that stops
//! anywhere else, even between members, is reported as truncated, never as a shorter archive.

use tokio::io::{AsyncRead, AsyncReadExt};

const BLOCK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("the tar stream is truncated: it ends in the middle of {what} (after {offset} bytes)")]
    Truncated { what: String, offset: u64 },

    #[error("the tar stream is malformed at byte {offset}: {problem}")]
    Malformed { offset: u64, problem: String },

    #[error("reading the tar stream failed after {offset} bytes: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
    Symlink {
        target: String,
    },
    /// Another type (the type flag): hard links, devices, FIFOs.
    Other(u8),
}

/// One member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// As archived, without a leading `./` or a trailing `/`.
    pub path: String,
    pub kind: MemberKind,
    /// Bytes of contents (0 for directories and links).
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
}

/// Reads members one after the other: [`TarReader::next_member`], then the member's contents
/// with [`TarReader::read_data`] (what is not read is skipped by the next `next_member`).
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner` so far.
    offset: u64,
    /// Contents of the current member not read yet.
    remaining: u64,
    /// Padding after the current member's contents.
    padding: u64,
    /// The path of the current member, for error messages.
    current: String,
    ended: bool,
}

/// Extended attributes from pax or GNU headers, for the next member.
#[derive(Default)]
struct Overrides {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
    mtime: Option<i64>,
}

impl<R: AsyncRead + Unpin> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader { inner, offset: 0, remaining: 0, padding: 0, current: String::new(), ended: false }
    }

    /// The underlying stream, positioned after what was read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes read from the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next member, or `None` at the end-of-archive marker.
    pub async fn next_member(&mut self) -> Result<Option<Member>, TarError> {
        if self.ended {
            return Ok(None);
        }
        let what = format!("the contents of {}", self.current);
        self.skip(self.remaining + self.padding, &what).await?;
        self.remaining = 0;
        self.padding = 0;
        let mut overrides = Overrides::default();
        loop {
            let mut header = [0u8; BLOCK];
            let header_offset = self.offset;
            self.read_exact(&mut header, "a member header (no end-of-archive marker)").await?;
            if header.iter().all(|byte| *byte == 0) {
                self.ended = true;
                return Ok(None);
            }
            check_checksum(&header).map_err(|problem| TarError::Malformed { offset: header_offset, problem })?;
            let malformed = |problem: String| TarError::Malformed { offset: header_offset, problem };
            let size = match overrides.size {
                Some(size) => size,
                None => numeric(&header[124..136]).map_err(|problem| malformed(format!("size: {problem}")))?,
            };
            let type_flag = header[156];
            match type_flag {
                b'L' | b'K' | b'x' | b'g' => {
                    if size > 1024 * 1024 {
                        return Err(malformed(format!("an extended header of {size} bytes")));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.read_exact(&mut data, "an extended header").await?;
                    self.skip(padding(size), "an extended header's padding").await?;
                    match type_flag {
                        b'L' => overrides.path = Some(c_string(&data)),
                        b'K' => overrides.linkpath = Some(c_string(&data)),
                        b'x' => parse_pax(&data, &mut overrides).map_err(malformed)?,
                        _ => {}
                    }
                    continue;
                }
                _ => {}
            }
            let path = match overrides.path.take() {
                Some(path) => path,
                None => {
                    let name = c_string(&header[0..100]);
                    let prefix =
                        if &header[257..262] == b"ustar" { c_string(&header[345..500]) } else { String::new() };
                    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
                }
            };
            let path = normalise(&path);
            if path.is_empty() {
                return Err(malformed("a member without a name".into()));
            }
            let mode =
                numeric(&header[100..108]).map_err(|problem| malformed(format!("mode: {problem}")))? as u32 & 0o7777;
            let mtime = match overrides.mtime {
                Some(mtime) => mtime,
                None => numeric(&header[136..148]).map_err(|problem| malformed(format!("mtime: {problem}")))? as i64,
            };
            let kind = match type_flag {
                b'0' | 0 | b'7' => MemberKind::File,
                b'5' => MemberKind::Dir,
                b'2' => MemberKind::Symlink {
                    target: overrides.linkpath.take().unwrap_or_else(|| c_string(&header[157..257])),
                },
                other => MemberKind::Other(other),
            };
            // Directories and links have no contents, whatever the size field says.
            let contents = if matches!(kind, MemberKind::Dir | MemberKind::Symlink { .. }) { 0 } else { size };
            if contents.checked_add(padding(contents)).is_none() {
                return Err(malformed(format!("{path}: a size of {contents} bytes, more than a stream can hold")));
            }
            self.remaining = contents;
            self.padding = padding(contents);
            self.current = path.clone();
            let size = if matches!(kind, MemberKind::File) { contents } else { 0 };
            return Ok(Some(Member { path, kind, size, mode, mtime }));
        }
    }

    /// Reads some of the current member's contents into `buf`; 0 once all of it was read.
    pub async fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let read =
            self.inner.read(&mut buf[..want]).await.map_err(|source| TarError::Io { offset: self.offset, source })?;
        if read == 0 {
            return Err(TarError::Truncated { what: format!("the contents of {}", self.current), offset: self.offset });
        }
        self.offset += read as u64;
        self.remaining -= read as u64;
        Ok(read)
    }

    async fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let read = self
                .inner
                .read(&mut buf[filled..])
                .await
                .map_err(|source| TarError::Io { offset: self.offset, source })?;
            if read == 0 {
                return Err(TarError::Truncated { what: what.to_owned(), offset: self.offset });
            }
            filled += read;
            self.offset += read as u64;
        }
        Ok(())
    }

    async fn skip(&mut self, mut count: u64, what: &str) -> Result<(), TarError> {
        let mut scratch = [0u8; 8192];
        while count > 0 {
            let want = count.min(scratch.len() as u64) as usize;
            self.read_exact(&mut scratch[..want], what).await?;
            count -= want as u64;
        }
        Ok(())
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// `./base/1/` → `base/1`.
fn normalise(path: &str) -> String {
    let mut path = path;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    path.trim_end_matches('/').to_owned()
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|byte| *byte == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal field (spaces and NULs around it allowed), or GNU base-256 (high bit of the first byte).
fn numeric(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value.checked_mul(256).ok_or("base-256 value too large")? | u64::from(*byte);
        }
        return Ok(value);
    }
    let text = String::from_utf8_lossy(field);
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("{text:?} is not an octal number"))
}

fn check_checksum(header: &[u8; BLOCK]) -> Result<(), String> {
    let stored = numeric(&header[148..156]).map_err(|problem| format!("checksum: {problem}"))?;
    let unsigned: u64 = header
        .iter()
        .enumerate()
        .map(|(index, byte)| if (148..156).contains(&index) { 32 } else { u64::from(*byte) })
        .sum();
    let signed: i64 = header
        .iter()
        .enumerate()
        .map(|(index, byte)| if (148..156).contains(&index) { 32 } else { i64::from(*byte as i8) })
        .sum();
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(format!("header checksum {stored} does not match the header ({unsigned}): not a tar stream, or corrupt"))
    }
}

/// pax records: `<length> <key>=<value>\n`, the length counting the whole record.
fn parse_pax(mut data: &[u8], overrides: &mut Overrides) -> Result<(), String> {
    while !data.is_empty() {
        if data.iter().all(|byte| *byte == 0) {
            break;
        }
        let space = data.iter().position(|byte| *byte == b' ').ok_or("a pax record without a length")?;
        let length: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or("a pax record with a bad length")?;
        if length <= space + 1 || length > data.len() {
            return Err(format!("a pax record of length {length} does not fit"));
        }
        let record = &data[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let equals = record.iter().position(|byte| *byte == b'=').ok_or("a pax record without '='")?;
        let key = String::from_utf8_lossy(&record[..equals]);
        let value = String::from_utf8_lossy(&record[equals + 1..]).into_owned();
        match key.as_ref() {
            "path" => overrides.path = Some(value),
            "linkpath" => overrides.linkpath = Some(value),
            "size" => overrides.size = Some(value.parse().map_err(|_| format!("pax size {value:?}"))?),
            "mtime" => {
                let seconds = value.split('.').next().unwrap_or_default();
                overrides.mtime = Some(seconds.parse().map_err(|_| format!("pax mtime {value:?}"))?);
            }
            _ => {}
        }
        data = &data[length..];
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header block: name, type, size, mode, mtime, link target.
    pub(crate) fn header(name: &str, type_flag: u8, size: u64, link: &str) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        let name = name.as_bytes();
        block[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        block[100..108].copy_from_slice(b"0000600\0");
        block[108..116].copy_from_slice(b"0000000\0");
        block[116..124].copy_from_slice(b"0000000\0");
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        block[136..148].copy_from_slice(format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        block[156] = type_flag;
        block[157..157 + link.len()].copy_from_slice(link.as_bytes());
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|byte| u64::from(*byte)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    pub(crate) fn member(out: &mut Vec<u8>, name: &str, type_flag: u8, data: &[u8], link: &str) {
        out.extend_from_slice(&header(name, type_flag, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
    }

    pub(crate) fn end(out: &mut Vec<u8>) {
        out.resize(out.len() + 2 * BLOCK, 0);
    }

    fn pax_record(key: &str, value: &str) -> String {
        let rest = format!(" {key}={value}\n");
        let mut length = rest.len();
        while format!("{length}{rest}").len() != length {
            length = format!("{length}{rest}").len();
        }
        format!("{length}{rest}")
    }

    async fn read_all(bytes: &[u8]) -> Result<Vec<(Member, Vec<u8>)>, TarError> {
        let mut reader = TarReader::new(bytes);
        let mut members = Vec::new();
        while let Some(member) = reader.next_member().await? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let read = reader.read_data(&mut buf).await?;
                if read == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..read]);
            }
            members.push((member, data));
        }
        Ok(members)
    }

    #[tokio::test]
    async fn files_directories_links_long_names_and_pax() {
        let long = format!("base/16384/{}", "n".repeat(150));
        let pax_path = format!("base/16384/{}", "p".repeat(180));
        let mut archive = Vec::new();
        member(&mut archive, "./base/", b'5', b"", "");
        member(&mut archive, "backup_label", b'0', b"START WAL LOCATION: 0/2000028\n", "");
        member(&mut archive, "././@LongLink", b'L', format!("{long}\0").as_bytes(), "");
        member(&mut archive, "truncated-name", b'0', &[7u8; 700], "");
        let records = format!("{}{}", pax_record("path", &pax_path), pax_record("size", "1000000"));
        member(&mut archive, "PaxHeader", b'x', records.as_bytes(), "");
        // The header's own size is wrong on purpose: pax overrides it.
        let mut data_header = header("short", b'0', 3, "");
        data_header[0..5].copy_from_slice(b"short");
        archive.extend_from_slice(&data_header);
        archive.extend_from_slice(&vec![9u8; 1_000_000]);
        archive.resize(archive.len() + padding(1_000_000) as usize, 0);
        member(&mut archive, "pg_tblspc/16390", b'2', b"", "/srv/space");
        end(&mut archive);

        let members = read_all(&archive).await.unwrap();
        let summary: Vec<(&str, &MemberKind, u64)> =
            members.iter().map(|(member, _)| (member.path.as_str(), &member.kind, member.size)).collect();
        let link = MemberKind::Symlink { target: "/srv/space".into() };
        assert_eq!(
            summary,
            [
                ("base", &MemberKind::Dir, 0),
                ("backup_label", &MemberKind::File, 30),
                (long.as_str(), &MemberKind::File, 700),
                (pax_path.as_str(), &MemberKind::File, 1_000_000),
                ("pg_tblspc/16390", &link, 0),
            ]
        );
        assert_eq!(members[1].1, b"START WAL LOCATION: 0/2000028\n");
        assert_eq!(members[2].1, vec![7u8; 700]);
        assert!(members[3].1.iter().all(|byte| *byte == 9) && members[3].1.len() == 1_000_000);
        assert_eq!((members[1].0.mode, members[1].0.mtime), (0o600, 1_700_000_000));
    }

    #[tokio::test]
    async fn unread_contents_are_skipped() {
        let mut archive = Vec::new();
        member(&mut archive, "a", b'0', &[1u8; 1500], "");
        member(&mut archive, "b", b'0', b"bee", "");
        end(&mut archive);
        let mut reader = TarReader::new(&archive[..]);
        assert_eq!(reader.next_member().await.unwrap().unwrap().path, "a");
        let b = reader.next_member().await.unwrap().unwrap();
        assert_eq!((b.path.as_str(), b.size), ("b", 3));
        let mut buf = [0u8; 10];
        assert_eq!(reader.read_data(&mut buf).await.unwrap(), 3);
        assert!(reader.next_member().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_truncated_stream_is_an_error_wherever_it_stops() {
        let mut archive = Vec::new();
        member(&mut archive, "base/1/1259", b'0', &[5u8; 3000], "");
        member(&mut archive, "global/pg_control", b'0', &[6u8; 8192], "");
        let complete = archive.clone();
        end(&mut archive);
        assert_eq!(read_all(&archive).await.unwrap().len(), 2);
        // In contents, in a header, and between members (no end-of-archive marker).
        for cut in [1000, 3584 + 200, complete.len()] {
            let error = read_all(&archive[..cut]).await.unwrap_err();
            assert!(matches!(error, TarError::Truncated { .. }), "cut at {cut}: {error}");
            assert!(error.to_string().contains("truncated"), "{error}");
        }
        let error = read_all(&archive[..1000]).await.unwrap_err().to_string();
        assert!(error.contains("base/1/1259"), "{error}");
    }

    #[tokio::test]
    async fn garbage_is_not_a_tar_stream() {
        let error = read_all(&[b'x'; 2048]).await.unwrap_err();
        assert!(matches!(error, TarError::Malformed { .. }), "{error}");
    }

    #[test]
    fn base_256_sizes() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 1;
        field[10] = 2;
        assert_eq!(numeric(&field).unwrap(), 513);
        assert_eq!(numeric(b"00000001750\0").unwrap(), 1000);
    }
}
