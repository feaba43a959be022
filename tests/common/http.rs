//! A small HTTP/1.1 server on 127.0.0.1 for download tests: fixed replies per path, every
//! requested path logged. Never touches the internet.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server does for one path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// 200 with this body sent as `Content-Encoding: gzip` (the client undoes it).
    Encoded(Vec<u8>),
    /// Headers promising this body, then only `n` bytes of it, then the connection is dropped.
    DropAfter(Vec<u8>, usize),
}

pub struct Server {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves `routes` (path -> reply); any other path is a 404.
    pub fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &routes, &log);
            }
        });
        Server { base, requests }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("{}/{prefix}/", self.base)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Reply>, log: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let ok = |len: usize, extra: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{extra}\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = match routes.get(&path) {
        Some(Reply::Body(b)) => stream
            .write_all(ok(b.len(), "").as_bytes())
            .and_then(|_| stream.write_all(b)),
        Some(Reply::Encoded(b)) => stream
            .write_all(ok(b.len(), "Content-Encoding: gzip\r\n").as_bytes())
            .and_then(|_| stream.write_all(b)),
        Some(Reply::DropAfter(b, n)) => stream
            .write_all(ok(b.len(), "").as_bytes())
            .and_then(|_| stream.write_all(&b[..*n]))
            .and_then(|_| stream.flush()),
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
    // Dropping the stream closes the connection.
}
