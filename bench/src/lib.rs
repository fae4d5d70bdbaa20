//! Shared pieces of the benchmark binaries: a minimal HTTP/1.1 reader and writer
//! (keep-alive, `Content-Length` and chunked bodies), and resident-memory sums read
//! from `/proc`. Host only; nothing here is part of the Worker.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed HTTP head: the first line split on spaces and lower-cased header names.
#[derive(Debug, Default)]
pub struct Head {
    pub first: Vec<String>,
    pub headers: HashMap<String, String>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Bytes read from a stream but not consumed yet.
#[derive(Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
}

impl ReadBuf {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(8192),
        }
    }

    /// True when nothing is buffered beyond what was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one head. `Ok(None)` is a clean end of stream before any byte of it.
    pub async fn read_head<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return parse_head(&text).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                bail!("HTTP head over {MAX_HEAD} bytes");
            }
            if self.fill(s).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside an HTTP head");
            }
        }
    }

    async fn take<S: AsyncRead + Unpin>(&mut self, s: &mut S, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill(s).await? == 0 {
                bail!("connection closed inside an HTTP body");
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(text);
            }
            if self.fill(s).await? == 0 {
                bail!("connection closed inside a chunk header");
            }
        }
    }

    /// Reads the body that `head` announces (`Content-Length` or chunked; none otherwise).
    pub async fn read_body<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
        head: &Head,
    ) -> Result<Vec<u8>> {
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let line = self.line(s).await?;
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .with_context(|| format!("bad chunk size {size_text:?}"))?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !self.line(s).await?.is_empty() {}
                    return Ok(body);
                }
                body.extend(self.take(s, size).await?);
                self.take(s, 2).await?;
            }
        }
        let len = match head.header("content-length") {
            Some(v) => v.trim().parse::<usize>().context("bad content-length")?,
            None => 0,
        };
        self.take(s, len).await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(text: &str) -> Result<Head> {
    let mut lines = text.split("\r\n");
    let first = lines
        .next()
        .ok_or_else(|| anyhow!("empty HTTP head"))?
        .split(' ')
        .map(str::to_string)
        .collect();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Head { first, headers })
}

/// Every process in the tree under `root` (itself included) whose name
/// contains `name_part`, with the fields of `/proc/<pid>/stat` after the name.
fn tree_stats(root: u32, name_part: &str) -> Result<Vec<(u32, Vec<String>)>> {
    Ok(tree_named(root, name_part)?
        .into_iter()
        .map(|(pid, _, fields)| (pid, fields))
        .collect())
}

/// Like `tree_stats`, with each process's command name.
fn tree_named(root: u32, name_part: &str) -> Result<Vec<(u32, String, Vec<String>)>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut stats: HashMap<u32, (String, Vec<String>)> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let fields: Vec<String> = stat[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let ppid = fields
            .get(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        children.entry(ppid).or_default().push(pid);
        stats.insert(pid, (comm, fields));
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
        if let Some((comm, fields)) = stats.remove(&pid) {
            if comm.contains(name_part) {
                out.push((pid, comm, fields));
            }
        }
    }
    Ok(out)
}

/// Sum of the resident memory (bytes) of `root` and its descendants whose command
/// name contains `name_part` (all of them when it is empty). Linux `/proc` only.
pub fn tree_rss(root: u32, name_part: &str) -> Result<u64> {
    let mut total = 0u64;
    for (pid, _) in tree_stats(root, name_part)? {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) {
                let kb: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                total += kb * 1024;
            }
        }
    }
    Ok(total)
}

/// CPU time (user + system, seconds) used so far by the processes under
/// `root`. `/proc` counts it in USER_HZ ticks, 100 per second on Linux.
pub fn tree_cpu_seconds(root: u32) -> Result<f64> {
    let ticks: u64 = tree_stats(root, "")?
        .iter()
        .map(|(_, f)| {
            // After the name: state(0) ppid(1) ... utime(11) stime(12).
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum();
    Ok(ticks as f64 / 100.0)
}

/// The parts of a server's process tree that the benchmark reports apart.
pub const ROLES: [&str; 3] = ["runtime", "proxy", "launcher"];

/// CPU seconds and resident bytes of one role, summed over its processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleSample {
    pub cpu_s: f64,
    pub rss: u64,
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024
}

/// The tree under `root` split by role (indexes of `ROLES`): **runtime** is the
/// workerd that runs the Worker (or the native server), **proxy** the workerd
/// that wrangler puts in front of it (the one bound to the public `port`; only
/// when there are two), **launcher** everything else (node, esbuild).
pub fn tree_roles(root: u32, port: u16) -> Result<[RoleSample; 3]> {
    let procs = tree_named(root, "")?;
    let workerds = procs.iter().filter(|(_, c, _)| c == "workerd").count();
    let bound = format!("entry=127.0.0.1:{port}");
    let mut out = [RoleSample::default(); 3];
    for (pid, comm, f) in procs {
        let role = if comm == "workerd" {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if workerds >= 2 && cmdline.contains(&bound) {
                1
            } else {
                0
            }
        } else if comm.starts_with("native-server") {
            0
        } else {
            2
        };
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out[role].cpu_s += (field(11) + field(12)) as f64 / 100.0;
        out[role].rss += rss_of(pid);
    }
    Ok(out)
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_seconds() -> Result<f64> {
    tree_cpu_seconds_of_one(std::process::id())
}

fn tree_cpu_seconds_of_one(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((field(11) + field(12)) as f64 / 100.0)
}
