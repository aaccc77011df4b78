//! A stand-in web service for the scenario containers: std only, built
//! statically by scripts/docker-up.sh. Faults are injected over HTTP and live
//! in this process's memory (a restart clears them) or in its filesystem
//! (only a recreate clears those):
//!   GET /healthz        200 "ok", unless a fault says otherwise
//!   GET /break          every /healthz answers 500 until restart
//!   GET /break-disk     writes /tmp/broken: 500 until the container is recreated
//!   GET /wedge          accepts connections and never answers, until restart
//!   GET /slow?ms=N      every answer waits N ms, until restart
//!   GET /blip           the next /healthz answers 500, then all is well
//!   GET /crash          exits with status 3

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static BROKEN: AtomicBool = AtomicBool::new(false);
static WEDGED: AtomicBool = AtomicBool::new(false);
static BLIP: AtomicBool = AtomicBool::new(false);
static SLOW_MS: AtomicU64 = AtomicU64::new(0);
const DISK_MARK: &str = "/tmp/broken";

fn answer(mut s: TcpStream, status: &str, body: &str) {
    let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

fn handle(mut s: TcpStream) {
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
    println!("{}", req.lines().next().unwrap_or(""));
    if WEDGED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(3600));
        return;
    }
    std::thread::sleep(Duration::from_millis(SLOW_MS.load(Ordering::SeqCst)));
    let route = path.split('?').next().unwrap_or("/");
    match route {
        "/break" => BROKEN.store(true, Ordering::SeqCst),
        "/break-disk" => {
            let _ = std::fs::write(DISK_MARK, "broken");
        }
        "/wedge" => WEDGED.store(true, Ordering::SeqCst),
        "/blip" => BLIP.store(true, Ordering::SeqCst),
        "/slow" => {
            let ms = path.split("ms=").nth(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
            SLOW_MS.store(ms, Ordering::SeqCst);
        }
        "/crash" => std::process::exit(3),
        _ => {
            let bad = BROKEN.load(Ordering::SeqCst) || BLIP.swap(false, Ordering::SeqCst) || std::path::Path::new(DISK_MARK).exists();
            if bad {
                return answer(s, "500 Internal Server Error", "broken");
            }
            return answer(s, "200 OK", "ok");
        }
    }
    answer(s, "200 OK", "done")
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    println!("standin listening on {port}");
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || handle(s));
    }
}
