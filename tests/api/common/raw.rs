//! HTTP/1.1 over a raw socket, for the tests of what a connection does:
//! exact bytes out, responses parsed as they come (status line, headers,
//! `Content-Length` or chunked body), and how and when the server closes it.
//! Blocking std sockets, each read bounded by a timeout.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any single read waits unless told otherwise: a hung test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(30);

/// A request as bytes. `Host` is added, and `Content-Length` when there is a
/// body or the method is POST or PUT; `headers` come as given.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl RawResponse {
    /// The first value of a header (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed it (FIN).
    Eof,
    /// The server reset it (RST).
    Reset,
}

/// A connection whose receive buffer is as small as the kernel allows, so
/// that a response it does not read stalls the server's writes quickly.
pub fn connect_with_small_receive_buffer(addr: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
    stream
}

/// Waits until the first bytes of a response are in `stream`'s receive
/// buffer, without reading them (so the window stays shut); returns them.
pub fn peek_response_start(stream: &TcpStream) -> [u8; 12] {
    let mut head = [0; 12];
    let mut peeked = 0;
    while peeked < head.len() {
        peeked = stream.peek(&mut head).expect("the response begins");
        assert!(peeked > 0, "closed before the response");
    }
    head
}

pub struct RawConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawConn {
    pub fn connect(addr: &str) -> RawConn {
        RawConn::new(TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}")))
    }

    pub fn new(stream: TcpStream) -> RawConn {
        // Each write goes out at once (no Nagle wait for the previous one's ACK).
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(READ_LIMIT))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone socket");
        RawConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Reads one whole response.
    pub fn response(&mut self) -> std::io::Result<RawResponse> {
        let status_line = self.line()?;
        if status_line.is_empty() {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        assert_eq!(version, "HTTP/1.1", "{status_line:?}");
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = response
            .header("content-length")
            .map(|v| v.parse::<usize>().expect("numeric Content-Length"));
        if chunked {
            assert!(length.is_none(), "both chunked and Content-Length");
            response.chunked = true;
            response.body = self.chunked_body()?;
        } else if let Some(length) = length {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body)?;
            response.body = body;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            panic!("{status}: neither Content-Length nor chunked: {response:?}");
        }
        Ok(response)
    }

    fn chunked_body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            let mut crlf = [0; 2];
            self.reader.read_exact(&mut crlf)?;
            assert_eq!(&crlf, b"\r\n", "chunk not followed by CRLF");
        }
    }

    /// One line without its CRLF; "" at the end of the stream.
    fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(String::new());
        }
        if !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("truncated line {:?}", String::from_utf8_lossy(&line)),
            ));
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8(line).expect("header lines are ASCII"))
    }

    /// Reads (and discards) until the server ends the connection, for at
    /// most `limit`: how it ended, when, and how many bytes came before.
    /// `None` when it was still open at `limit`.
    pub fn wait_for_end(&mut self, limit: Duration) -> Option<(End, Instant, usize)> {
        let deadline = Instant::now() + limit;
        let mut received = self.reader.buffer().len();
        self.reader.consume(received);
        let mut buf = vec![0; 64 * 1024];
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.reader.get_mut().read(&mut buf) {
                Ok(0) => break Some(End::Eof),
                Ok(n) => received += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break Some(End::Reset),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        };
        let at = Instant::now();
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_LIMIT))
            .expect("read timeout");
        end.map(|end| (end, at, received))
    }
}
