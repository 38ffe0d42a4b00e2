// The course notes' Tokio example, runnable here: a mini-redis-style client that connects to a
// Redis server, sets "hello" to "world" and reads it back. mini-redis is not packaged, so the
// few lines of RESP it needs are written out: a command is an array of bulk strings, a reply
// is a line (+OK, -ERR, :1) or a bulk string ($5\r\nworld\r\n).
//
//     tokio-redis-client 127.0.0.1:6379          (the address of netlab's private Redis)
use std::io;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    out
}

async fn reply(conn: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let line = line.trim_end().to_string();
    match line.chars().next() {
        Some('$') => {
            let n: i64 = line[1..].parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            if n < 0 {
                return Ok("(nil)".into());
            }
            let mut data = vec![0u8; n as usize + 2];
            conn.read_exact(&mut data).await?;
            Ok(String::from_utf8_lossy(&data[..n as usize]).into_owned())
        }
        Some('-') => Err(io::Error::new(io::ErrorKind::Other, line)),
        _ => Ok(line.get(1..).unwrap_or("").to_string()),
    }
}

// The notes write `#[tokio::main] async fn main()`; that macro builds this same multi-thread
// runtime (Debian packages the macro separately, so it is spelled out here).
fn main() -> io::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6379".into());
    // Open a connection to the mini-redis address.
    let mut conn = BufReader::new(TcpStream::connect(&addr).await?);
    // Set the key "hello" with value "world"
    conn.get_mut().write_all(&command(&["SET", "hello", "world"])).await?;
    println!("SET hello world -> {}", reply(&mut conn).await?);
    // Get key "hello"
    conn.get_mut().write_all(&command(&["GET", "hello"])).await?;
    println!("got value from the server; result={:?}", reply(&mut conn).await?);
    Ok(())
}
