//! HTTP/1.1 heads for the router's own forwarding of plain requests (`crate::express`): a
//! request head parsed once, checked, and written out for the track with the hop-by-hop
//! headers gone and the forwarding headers added, in one pass over the bytes as received and
//! with no header map; a response head parsed, its body's framing told, and written out for
//! the client. Pure: bytes in, bytes out.
//!
//! Whatever is not plain (a request body, an upgrade, `Expect`, HTTP/1.0, an absolute or
//! unusual target, a head that is malformed or has not all arrived) is left to the general
//! path (hyper), which answers it exactly as before: this path never answers a malformed
//! request itself.

use http::HeaderName;
use http::header;

/// Header lines a head may have here; a head with more goes to the general path (which
/// refuses more than this as well).
pub const MAX_HEADERS: usize = crate::proxy::MAX_HEADERS;

/// Why a request head is left to the general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum General {
    /// Its head has not all arrived.
    Partial,
    /// Not a head this path parses; the general path answers it with its error.
    Malformed,
    /// Not HTTP/1.1.
    Version,
    /// CONNECT.
    Connect,
    /// Not an origin-form target of the characters RFC 3986 allows unescaped.
    Target,
    /// Not exactly one valid `Host`.
    Host,
    /// A request body, or framing that announces one.
    Body,
    /// A protocol upgrade, or `Expect`.
    Upgrade,
}

/// A parsed request head this path forwards.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// As received (a token).
    pub method: &'b str,
    /// Origin-form: starts with `/`.
    pub target: &'b str,
    /// Its header lines, in order, as received.
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// The client asked for the connection to close after this exchange.
    pub close: bool,
}

impl RequestHead<'_, '_> {
    /// Whether the method is one a request may be sent again for when a pooled connection
    /// to the track turns out closed before any answer (RFC 9110 §9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    /// A HEAD request: its answer has no body, whatever its head says.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

fn named(h: &httparse::Header<'_>, name: &HeaderName) -> bool {
    h.name.eq_ignore_ascii_case(name.as_str())
}

/// The comma-separated tokens of one header value, without surrounding whitespace.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(crate::decide::trim_ows)
        .filter(|t| !t.is_empty())
}

/// Bytes a target may hold unescaped here: RFC 3986's unreserved, sub-delims, `:`, `@`, `/`,
/// `?` and `%`. Anything else (a fragment, quotes, braces, non-ASCII) goes to the general path,
/// whose URI parser decides what becomes of it.
fn plain_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
                | b'%'
        )
}

/// A `Host` value this path passes on as it is: a name or IPv4 address of RFC 3986's
/// unreserved bytes, and maybe a port. Anything else (IPv6 literals, escapes, userinfo) goes to
/// the general path, whose URI parser decides what becomes of it.
fn plain_host(value: &[u8]) -> bool {
    let (host, port) = match memchr::memchr(b':', value) {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    !host.is_empty()
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

/// Parses the request head at the start of `buf` into `storage`; the head if this path
/// forwards it, or why the general path gets it.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut [httparse::Header<'b>],
) -> Result<RequestHead<'h, 'b>, General> {
    let mut req = httparse::Request::new(storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(General::Partial),
        Err(_) => return Err(General::Malformed),
    };
    if req.version != Some(1) {
        return Err(General::Version);
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(General::Malformed);
    };
    if method == "CONNECT" {
        return Err(General::Connect);
    }
    if !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return Err(General::Target);
    }
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let mut hosts = 0;
    let mut close = false;
    for h in headers {
        if named(h, &header::HOST) {
            hosts += 1;
            if !plain_host(h.value) {
                return Err(General::Host);
            }
        } else if named(h, &header::CONTENT_LENGTH) {
            if h.value != b"0" {
                return Err(General::Body);
            }
        } else if named(h, &header::TRANSFER_ENCODING) {
            return Err(General::Body);
        } else if named(h, &header::UPGRADE) || named(h, &header::EXPECT) {
            return Err(General::Upgrade);
        } else if named(h, &header::CONNECTION) {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    if hosts != 1 {
        return Err(General::Host);
    }
    Ok(RequestHead {
        method,
        target,
        headers,
        len,
        close,
    })
}

/// What changes in a request's head on its way to the track.
pub struct Rewrite<'a> {
    /// The header naming the cohort: only its first line goes on.
    pub cohort_header: &'a HeaderName,
    /// The header holding the sticky key, if it is a header: only its first line goes on.
    pub sticky_header: Option<&'a HeaderName>,
    /// The cohort header came from a peer that is not trusted: none of it goes on.
    pub spoofed: bool,
    /// The client's address, last in `X-Forwarded-For`.
    pub forwarded_for: &'a [u8],
}

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The headers that are hop-by-hop by themselves (RFC 9110 §7.6.1, and the proxy
/// authentication pair): both paths drop them.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

fn always_hop_by_hop(h: &httparse::Header<'_>) -> bool {
    HOP_BY_HOP.iter().any(|name| named(h, name))
}

/// The header names the `Connection` lines of `headers` list (other than its own options).
struct ConnectionNamed<'b> {
    first: [&'b [u8]; 8],
    n: usize,
    more: Vec<&'b [u8]>,
}

impl<'b> ConnectionNamed<'b> {
    fn of(headers: &[httparse::Header<'b>]) -> ConnectionNamed<'b> {
        let mut named_here = ConnectionNamed {
            first: [&[]; 8],
            n: 0,
            more: Vec::new(),
        };
        for h in headers.iter().filter(|h| named(h, &header::CONNECTION)) {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                match named_here.first.get_mut(named_here.n) {
                    Some(slot) => *slot = t,
                    None => named_here.more.push(t),
                }
                named_here.n += 1;
            }
        }
        named_here
    }

    fn lists(&self, h: &httparse::Header<'_>) -> bool {
        self.n > 0
            && self.first[..self.n.min(8)]
                .iter()
                .chain(&self.more)
                .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
    }
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `head` as the track gets it to `out`: the request line in origin form; every header
/// line as received except the hop-by-hop ones (the fixed set, those `Connection` lists other
/// than `Host`, `X-Forwarded-For` and the headers the router routes by, and any name with a
/// `_`, as nginx drops them: CGI-style backends read `_` as `-`); the cohort and sticky
/// headers' first lines only (none of the cohort header when `spoofed`); `X-Forwarded-For`
/// as one line with every earlier hop and then this client; `X-Forwarded-Proto: http`.
pub fn write_request(head: &RequestHead<'_, '_>, rw: &Rewrite<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let listed = ConnectionNamed::of(head.headers);
    let (mut cohort_seen, mut sticky_seen, mut forwarded) = (false, false, false);
    for h in head.headers {
        let name = h.name.as_bytes();
        if always_hop_by_hop(h) || name.contains(&b'_') {
            continue;
        }
        if named(h, &X_FORWARDED_FOR) {
            forwarded = true;
            continue;
        }
        if named(h, &X_FORWARDED_PROTO) {
            continue;
        }
        let cohort = named(h, rw.cohort_header);
        let sticky = rw.sticky_header.is_some_and(|s| named(h, s));
        if cohort {
            if rw.spoofed || cohort_seen {
                continue;
            }
            cohort_seen = true;
        } else if sticky {
            if sticky_seen {
                continue;
            }
            sticky_seen = true;
        } else if !named(h, &header::HOST) && listed.lists(h) {
            continue;
        }
        put_header(out, name, h.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded {
        for h in head.headers.iter().filter(|h| named(h, &X_FORWARDED_FOR)) {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(rw.forwarded_for);
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n\r\n");
}

/// A request head this module wrote (`write_request`), as `http` parts: what a mirror's copy
/// is made from. `None` if it is not one (it always is when written here).
pub fn request_parts(written: &[u8]) -> Option<http::request::Parts> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    if !matches!(req.parse(written), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut builder = http::Request::builder()
        .method(req.method?)
        .uri(req.path?)
        .version(http::Version::HTTP_11);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// Why a track's answer cannot be passed on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    /// The head is not HTTP/1.x.
    #[error("sent a malformed response head ({0})")]
    Malformed(httparse::Error),
    /// The head did not end within this many bytes.
    #[error("sent a response head larger than {0} bytes")]
    TooLarge(usize),
    /// `Content-Length` is not a number, or says two.
    #[error("sent an invalid Content-Length")]
    Length,
    /// 101 to a request that asked for no upgrade.
    #[error("switched protocols unasked")]
    Switched,
    /// The chunked framing is broken or its overhead too large.
    #[error("sent a malformed chunked body")]
    Chunked,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    /// The status code.
    pub code: u16,
    /// The reason phrase, as received.
    pub reason: &'b str,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// Its header lines, in order, as received.
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, blank line included.
    pub len: usize,
}

/// Parses the response head at the start of `buf`; `None` while it has not all arrived.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut [httparse::Header<'b>],
) -> Result<Option<ResponseHead<'h, 'b>>, BadResponse> {
    let mut resp = httparse::Response::new(storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Malformed(e)),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(BadResponse::Malformed(httparse::Error::Status));
    };
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    Ok(Some(ResponseHead {
        code,
        reason: resp.reason.unwrap_or(""),
        version,
        headers,
        len,
    }))
}

/// Whether the response head at the start of `buf` is ready to be parsed: the blank line that
/// ends it is in, or what is there cannot start a response head (so waiting would not help).
/// Much cheaper than a parse, so a head is parsed once, when it is whole.
pub fn response_head_ready(buf: &[u8]) -> bool {
    const START: &[u8] = b"HTTP/1.";
    let n = buf.len().min(START.len());
    if buf[..n] != START[..n] {
        return true;
    }
    memchr::memchr_iter(b'\n', buf).any(|i| match buf.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => buf.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Whether the ready response head at the start of `buf` may be an interim one (1xx), which
/// must be parsed to be skipped; false only when its status line says it is not.
pub fn maybe_interim(buf: &[u8]) -> bool {
    !(buf.len() > 9 && buf.starts_with(b"HTTP/1.") && buf[8] == b' ' && matches!(buf[9], b'2'..=b'9'))
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to HEAD, or 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: passed on as it comes, chunk by chunk.
    Chunked,
    /// Until the track closes the connection: passed on chunked, so the client's connection
    /// stays open.
    UntilClose,
}

impl ResponseHead<'_, '_> {
    /// An interim answer (1xx other than 101): the final one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.code) && self.code != 101
    }

    /// How its body is delimited; `head` when it answers a HEAD request.
    pub fn framing(&self, head: bool) -> Result<Framing, BadResponse> {
        if self.code == 101 {
            return Err(BadResponse::Switched);
        }
        let (chunked, length) = self.lengths()?;
        // A length is checked even where there is no body: it goes on to the client, which
        // must not get one that is not a number.
        if head || (100..200).contains(&self.code) || self.code == 204 || self.code == 304 {
            return Ok(Framing::Empty);
        }
        Ok(match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        })
    }

    /// Whether `Transfer-Encoding` ends with chunked (if it is there), and the length
    /// `Content-Length` says (if it is there; all its values must agree).
    fn lengths(&self) -> Result<(Option<bool>, Option<u64>), BadResponse> {
        let mut chunked = None;
        let mut length: Option<u64> = None;
        for h in self.headers {
            if named(h, &header::TRANSFER_ENCODING) {
                // The last coding applied decides; several lines are one list.
                if let Some(last) = tokens(h.value).last() {
                    chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                }
            } else if named(h, &header::CONTENT_LENGTH) {
                for v in tokens(h.value).chain(h.value.is_empty().then_some(&b""[..])) {
                    let n = std::str::from_utf8(v)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or(BadResponse::Length)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(BadResponse::Length);
                    }
                    length = Some(n);
                }
            }
        }
        Ok((chunked, length))
    }

    /// Whether the connection to the track may take another request once this answer's body
    /// has been read whole.
    pub fn keeps_alive(&self, framing: Framing) -> bool {
        self.version == 1
            && framing != Framing::UntilClose
            && !self
                .headers
                .iter()
                .filter(|h| named(h, &header::CONNECTION))
                .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")))
    }
}

/// Writes `head` as the client gets it to `out`: the status line as HTTP/1.1; every header
/// line except the hop-by-hop ones (the fixed set and those `Connection` lists); the body's
/// framing, written from `framing` whatever the track's lines said or listed
/// (`Content-Length: n`, or `Transfer-Encoding: chunked` for a chunked body or one that ends
/// with the connection, which goes on chunked; the length it declares for an answer without a
/// body); `Connection: close` when `close`.
pub fn write_response(head: &ResponseHead<'_, '_>, framing: Framing, close: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa3(head.code));
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let listed = ConnectionNamed::of(head.headers);
    for h in head.headers {
        if always_hop_by_hop(h) || named(h, &header::CONTENT_LENGTH) || listed.lists(h) {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    let length = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            None
        }
        Framing::Empty => head.lengths().ok().and_then(|(_, n)| n),
    };
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        decimal(n, out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal.
fn decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A status code's three digits (httparse accepts only three-digit codes).
fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// An answer the router gives itself (no track answered): `status`, a plain-text `body`, any
/// `extra` header lines, and `Connection: close` when `close`.
pub fn write_local(
    status: http::StatusCode,
    body: &str,
    extra: &[(&str, &str)],
    close: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        put_header(out, name.as_bytes(), value.as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Finds where a chunked body ends as its bytes pass through (RFC 9112 §7.1): sizes, chunk
/// data, extensions and trailers, each bounded.
#[derive(Clone, Debug, Default)]
pub struct Chunks {
    state: ChunkState,
    /// Bytes of extensions and trailer lines so far (bounded: they are not data).
    overhead: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// In a chunk size: its hex digits so far and their value.
    #[default]
    SizeStart,
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: whitespace or an extension, up to the CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    TrailerLine,
    TrailerLf {
        blank: bool,
    },
    Done,
}

/// Bytes of chunk extensions and trailers a body may have in all.
pub const MAX_CHUNK_OVERHEAD: usize = 64 * 1024;

impl Chunks {
    /// Whether the body's last byte has been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads on through `bytes`; returns how many of them belong to the body (all of them
    /// unless it ended within them).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, BadResponse> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            if self.state == Done {
                return Ok(i);
            }
            if let Data { left } = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { DataCr } else { Data { left } };
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                SizeStart => Size {
                    digits: 1,
                    value: u64::from(hex(b).ok_or(BadResponse::Chunked)?),
                },
                Size { digits, value } => match hex(b) {
                    Some(d) if digits < 15 => Size {
                        digits: digits + 1,
                        value: value << 4 | u64::from(d),
                    },
                    Some(_) => return Err(BadResponse::Chunked),
                    None => self.after_size(b, value)?,
                },
                Extension { size } => {
                    self.overhead += 1;
                    if self.overhead > MAX_CHUNK_OVERHEAD {
                        return Err(BadResponse::Chunked);
                    }
                    match b {
                        b'\r' => SizeLf { size },
                        b'\n' => return Err(BadResponse::Chunked),
                        _ => Extension { size },
                    }
                }
                SizeLf { size } => match b {
                    b'\n' if size == 0 => TrailerStart,
                    b'\n' => Data { left: size },
                    _ => return Err(BadResponse::Chunked),
                },
                DataCr => match b {
                    b'\r' => DataLf,
                    _ => return Err(BadResponse::Chunked),
                },
                DataLf => match b {
                    b'\n' => SizeStart,
                    _ => return Err(BadResponse::Chunked),
                },
                TrailerStart => match b {
                    b'\r' => TrailerLf { blank: true },
                    _ => self.trailer_byte()?,
                },
                TrailerLine => match b {
                    b'\r' => TrailerLf { blank: false },
                    b'\n' => return Err(BadResponse::Chunked),
                    _ => self.trailer_byte()?,
                },
                TrailerLf { blank } => match b {
                    b'\n' if blank => Done,
                    b'\n' => TrailerStart,
                    _ => return Err(BadResponse::Chunked),
                },
                Data { .. } | Done => unreachable_state()?,
            };
        }
        Ok(i)
    }

    fn after_size(&mut self, b: u8, size: u64) -> Result<ChunkState, BadResponse> {
        match b {
            b'\r' => Ok(ChunkState::SizeLf { size }),
            b';' | b' ' | b'\t' => {
                self.overhead += 1;
                Ok(ChunkState::Extension { size })
            }
            _ => Err(BadResponse::Chunked),
        }
    }

    fn trailer_byte(&mut self) -> Result<ChunkState, BadResponse> {
        self.overhead += 1;
        if self.overhead > MAX_CHUNK_OVERHEAD {
            return Err(BadResponse::Chunked);
        }
        Ok(ChunkState::TrailerLine)
    }
}

/// Both handled before the match; kept an error rather than a panic.
fn unreachable_state() -> Result<ChunkState, BadResponse> {
    Err(BadResponse::Chunked)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The chunk-size line for `n` bytes of data.
pub fn chunk_size_line(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
}

#[cfg(test)]
mod tests;
