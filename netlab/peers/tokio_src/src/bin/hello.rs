// A Tokio hello server, as netlab runs it: `tokio-hello PORT FLAVOR`, FLAVOR "multi" (what
// #[tokio::main] gives: one worker thread per core, each in epoll_wait, sharing one I/O driver)
// or "current" (one thread: the same design as netlab's epoll model and Node's libuv loop).
//
// Each connection is a task: read until a blank line ends a request head, answer netlab's
// default body with a Content-Length, keep the connection unless the client asked to close it
// (or spoke HTTP/1.0 without keep-alive). Request bodies are not read: the load sends none.
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"Hello from netlab!\n";

fn keeps_alive(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let http10 = text.lines().next().map_or(false, |l| l.ends_with("http/1.0"));
    let conn = text.lines().find_map(|l| l.strip_prefix("connection:")).map(|v| v.trim().to_string());
    match conn {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => !http10,
    }
}

async fn serve(mut sock: TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 65536];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut close = false;
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let keep = keeps_alive(&buf[..end]);
            buf.drain(..end + 4);
            out.extend_from_slice(format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
                BODY.len(), if keep { "keep-alive" } else { "close" }).as_bytes());
            out.extend_from_slice(BODY);
            if !keep {
                close = true;
                break;
            }
        }
        if buf.len() > 8192 {
            close = true; // a head larger than 8 KiB: netlab's limit too
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
        if close {
            return sock.shutdown().await;
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let flavor = args.get(2).map(String::as_str).unwrap_or("multi");
    let rt = match flavor {
        "current" => tokio::runtime::Builder::new_current_thread().enable_io().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_io().build()?,
    };
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("Listening on 127.0.0.1:{} ({} runtime)", listener.local_addr()?.port(), flavor);
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    tokio::spawn(async move {
                        let _ = serve(sock).await;
                    });
                }
                // out of fds, say: the server stays up and takes the next one when it can
                Err(e) => {
                    eprintln!("accept: {}", e);
                    tokio::task::yield_now().await;
                }
            }
        }
    })
}
