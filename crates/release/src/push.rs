//! Moving a branch of a remote forward: git's receive-pack protocol over smart HTTP(S), or
//! with a `git receive-pack` process for a remote that is a path. gix fetches but cannot push;
//! the autopilot pushes only commits it made on top of what it fetched, so a pack of whole
//! objects (no deltas) and one compare-and-swap command are all it takes.
//!
//! The pure parts (pkt-lines, the pack, the server's answers) are here; the transports are in
//! [`crate::mirror`].

use gix::ObjectId;
use gix::objs::Kind;

/// The largest ref advertisement read (a remote with very many branches and tags).
pub const MAX_ADVERTISEMENT: u64 = 16 << 20;
/// The largest answer to a push read.
pub const MAX_REPORT: u64 = 1 << 20;

/// A git object to send: its kind and its content (without git's `kind size\0` header).
pub type Object = (Kind, Vec<u8>);

/// Why a server's answer could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's answer is not git's receive-pack protocol: {0}")]
pub struct ProtocolError(pub String);

/// One pkt-line holding `data`.
pub fn pkt_line(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// The flush packet that ends a section.
pub const FLUSH: &[u8] = b"0000";

/// Splits `bytes` into pkt-lines: `Some(payload)` for a line, `None` for a flush.
fn pkt_lines(mut bytes: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut out = vec![];
    while !bytes.is_empty() {
        let head = bytes
            .get(..4)
            .ok_or_else(|| ProtocolError(format!("{} stray bytes at the end", bytes.len())))?;
        let len = std::str::from_utf8(head)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                ProtocolError(format!("bad pkt-line length {:?}", String::from_utf8_lossy(head)))
            })?;
        match len {
            0 => {
                out.push(None);
                bytes = &bytes[4..];
            }
            // 0001 and 0002 are protocol v2's delimiters, which v0 never sends.
            1..=3 => return Err(ProtocolError(format!("bad pkt-line length {len}"))),
            _ => {
                let payload = bytes
                    .get(4..len)
                    .ok_or_else(|| ProtocolError(format!("a pkt-line of {len} bytes is cut short")))?;
                out.push(Some(payload));
                bytes = &bytes[len..];
            }
        }
    }
    Ok(out)
}

/// What a remote advertised for a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// Where each of its references points.
    pub refs: Vec<(String, ObjectId)>,
    /// The capabilities it offers.
    pub capabilities: Vec<String>,
}

impl Advertised {
    /// Where `name` (e.g. `refs/heads/main`) points, if the remote has it.
    pub fn tip(&self, name: &str) -> Option<ObjectId> {
        self.refs.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    /// Whether it offers `capability`.
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// Reads receive-pack's ref advertisement: as the smart HTTP endpoint sends it (a
/// `# service=git-receive-pack` line and a flush first) or as the process does.
pub fn parse_advertisement(bytes: &[u8]) -> Result<Advertised, ProtocolError> {
    let lines = pkt_lines(bytes)?;
    let mut lines = lines.as_slice();
    if let [Some(first), None, rest @ ..] = lines
        && first.starts_with(b"# service=")
    {
        lines = rest;
    }
    if let [Some(first), rest @ ..] = lines
        && first.trim_ascii_end() == b"version 1"
    {
        lines = rest;
    }
    let mut out = Advertised {
        refs: vec![],
        capabilities: vec![],
    };
    for (i, line) in lines.iter().enumerate() {
        let Some(line) = line else {
            return Ok(out);
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let (line, caps) = match line.iter().position(|&b| b == 0) {
            Some(nul) if i == 0 => (&line[..nul], Some(&line[nul + 1..])),
            Some(_) => return Err(ProtocolError("capabilities after the first reference".into())),
            None => (line, None),
        };
        if let Some(caps) = caps {
            out.capabilities = String::from_utf8_lossy(caps)
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect();
        }
        let text =
            std::str::from_utf8(line).map_err(|_| ProtocolError("a reference line is not UTF-8".into()))?;
        let (id, name) = text
            .split_once(' ')
            .ok_or_else(|| ProtocolError(format!("bad reference line {text:?}")))?;
        let id = ObjectId::from_hex(id.as_bytes())
            .map_err(|_| ProtocolError(format!("bad object id in {text:?}")))?;
        // An empty repository advertises only its capabilities, on a null id.
        if name != "capabilities^{}" {
            out.refs.push((name.to_string(), id));
        }
    }
    Err(ProtocolError("the reference list does not end".into()))
}

/// The request that moves `branch` from `old` to `new` and carries the objects it needs.
pub fn request(old: ObjectId, new: ObjectId, branch: &str, advertised: &Advertised, pack: &[u8]) -> Vec<u8> {
    // Only what the server offers; report-status is what tells us the push took.
    let mut caps = vec!["report-status".to_string()];
    if advertised.offers("agent") || advertised.capabilities.iter().any(|c| c.starts_with("agent=")) {
        caps.push(format!("agent=cohort/{}", env!("CARGO_PKG_VERSION")));
    }
    let command = format!("{old} {new} refs/heads/{branch}\0{}", caps.join(" "));
    let mut out = pkt_line(command.as_bytes());
    out.extend_from_slice(FLUSH);
    out.extend_from_slice(pack);
    out
}

/// What the remote said of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Why it could not take the objects, if it could not.
    pub unpack_error: Option<String>,
    /// Per reference: `None` if it was updated, else why not.
    pub refs: Vec<(String, Option<String>)>,
}

/// Reads receive-pack's report-status.
pub fn parse_report(bytes: &[u8]) -> Result<Report, ProtocolError> {
    let mut report = Report {
        unpack_error: None,
        refs: vec![],
    };
    let mut unpack_seen = false;
    for line in pkt_lines(bytes)? {
        let Some(line) = line else {
            return match unpack_seen {
                true => Ok(report),
                false => Err(ProtocolError("no unpack status".into())),
            };
        };
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\n');
        if let Some(status) = text.strip_prefix("unpack ") {
            unpack_seen = true;
            report.unpack_error = (status != "ok").then(|| status.to_string());
        } else if let Some(name) = text.strip_prefix("ok ") {
            report.refs.push((name.to_string(), None));
        } else if let Some(rest) = text.strip_prefix("ng ") {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, "rejected"));
            report.refs.push((name.to_string(), Some(why.to_string())));
        } else {
            return Err(ProtocolError(format!("unexpected status line {text:?}")));
        }
    }
    Err(ProtocolError("the report does not end".into()))
}

/// A version 2 pack of `objects`, each stored whole (zlib-compressed, no deltas).
pub fn pack(objects: &[Object]) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Write;
    let mut out = b"PACK".to_vec();
    out.extend_from_slice(&2u32.to_be_bytes());
    let count = u32::try_from(objects.len()).map_err(std::io::Error::other)?;
    out.extend_from_slice(&count.to_be_bytes());
    for (kind, data) in objects {
        let kind: u8 = match kind {
            Kind::Commit => 1,
            Kind::Tree => 2,
            Kind::Blob => 3,
            Kind::Tag => 4,
        };
        // The type and size header: 3 bits of type and 4 of size, then 7 bits of size per byte.
        let mut size = data.len() as u64;
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            out.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        out.push(byte);
        let mut z = gix::zlib::stream::deflate::Write::new(&mut out, gix::zlib::Compression::default());
        z.write_all(data)?;
        z.flush()?;
    }
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&out);
    let id = hasher.try_finalize().map_err(std::io::Error::other)?;
    out.extend_from_slice(id.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: char) -> ObjectId {
        ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("id")
    }

    #[test]
    fn pkt_lines_round_trip_and_a_flush_ends_a_section() {
        let mut bytes = pkt_line(b"hello\n");
        assert_eq!(&bytes[..4], b"000a");
        bytes.extend_from_slice(FLUSH);
        assert_eq!(
            pkt_lines(&bytes).expect("lines"),
            vec![Some(&b"hello\n"[..]), None]
        );
    }

    #[test]
    fn hostile_pkt_lines_are_refused_not_read_past_their_end() {
        for bad in [&b"00"[..], b"zzzz", b"0003", b"00ffshort", b"0001"] {
            assert!(pkt_lines(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_http_advertisement_gives_the_tips_and_capabilities() {
        let mut bytes = pkt_line(b"# service=git-receive-pack\n");
        bytes.extend_from_slice(FLUSH);
        bytes.extend(pkt_line(
            format!(
                "{} refs/heads/main\0report-status delete-refs agent=git/2.39\n",
                id('a')
            )
            .as_bytes(),
        ));
        bytes.extend(pkt_line(format!("{} refs/heads/other\n", id('b')).as_bytes()));
        bytes.extend_from_slice(FLUSH);
        let ad = parse_advertisement(&bytes).expect("advertisement");
        assert_eq!(ad.tip("refs/heads/main"), Some(id('a')));
        assert_eq!(ad.tip("refs/heads/other"), Some(id('b')));
        assert_eq!(ad.tip("refs/heads/gone"), None);
        assert!(ad.offers("report-status"));
    }

    #[test]
    fn an_empty_repository_advertises_no_reference() {
        let mut bytes = pkt_line(format!("{} capabilities^{{}}\0report-status\n", id('0')).as_bytes());
        bytes.extend_from_slice(FLUSH);
        let ad = parse_advertisement(&bytes).expect("advertisement");
        assert!(ad.refs.is_empty());
        assert!(ad.offers("report-status"));
    }

    #[test]
    fn an_advertisement_that_does_not_end_or_lies_is_refused() {
        let unterminated = pkt_line(format!("{} refs/heads/main\0report-status\n", id('a')).as_bytes());
        assert!(parse_advertisement(&unterminated).is_err());
        let mut bad_id = pkt_line(b"nothex refs/heads/main\0report-status\n");
        bad_id.extend_from_slice(FLUSH);
        assert!(parse_advertisement(&bad_id).is_err());
    }

    #[test]
    fn a_report_says_which_references_moved_and_why_others_did_not() {
        let mut bytes = pkt_line(b"unpack ok\n");
        bytes.extend(pkt_line(b"ok refs/heads/main\n"));
        bytes.extend(pkt_line(b"ng refs/heads/prod failed to lock\n"));
        bytes.extend_from_slice(FLUSH);
        let report = parse_report(&bytes).expect("report");
        assert_eq!(report.unpack_error, None);
        assert_eq!(
            report.refs,
            vec![
                ("refs/heads/main".to_string(), None),
                ("refs/heads/prod".to_string(), Some("failed to lock".to_string()))
            ]
        );
        let mut failed = pkt_line(b"unpack index-pack abnormal exit\n");
        failed.extend_from_slice(FLUSH);
        assert_eq!(
            parse_report(&failed).expect("report").unpack_error.as_deref(),
            Some("index-pack abnormal exit")
        );
        assert!(parse_report(FLUSH).is_err(), "a report without an unpack status");
    }

    #[test]
    fn the_request_asks_only_for_offered_capabilities() {
        let ad = Advertised {
            refs: vec![],
            capabilities: vec!["report-status".into()],
        };
        let bytes = request(id('a'), id('b'), "main", &ad, b"PACK");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(&format!(
                "{} {} refs/heads/main\0report-status0000PACK",
                id('a'),
                id('b')
            )),
            "{text}"
        );
    }
}
