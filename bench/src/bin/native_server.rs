//! The machine's ceiling without workerd: a tokio broadcast server that speaks the
//! gateway's subscribe and publish shapes (welcome, command frames, the publish
//! answer), with exact-topic filters (`>` = everything), seq kept in memory and
//! nothing stored. One writer task and unbounded queue per socket; a publish
//! serializes its frame once and queues the same bytes for every matching socket.

use anyhow::{bail, Result};
use bench::{Head, ReadBuf};
use clap::Parser;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8903")]
    listen: String,
}

struct Sub {
    id: u64,
    topics: Vec<String>,
    tx: mpsc::UnboundedSender<Message>,
}

#[derive(Default)]
struct Room {
    seq: u64,
    subs: Vec<Sub>,
}

#[derive(Default)]
struct State {
    rooms: DashMap<String, Arc<Mutex<Room>>>,
    next_id: AtomicU64,
    epoch: String,
}

impl State {
    fn room(&self, character: &str) -> Arc<Mutex<Room>> {
        self.rooms
            .entry(character.to_string())
            .or_default()
            .value()
            .clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock(room: &Mutex<Room>) -> std::sync::MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen).await?;
    let state = Arc::new(State {
        epoch: format!("native-{}", now_ms()),
        ..State::default()
    });
    eprintln!("native-server listening on {}", args.listen);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, state).await {
                let text = e.to_string();
                if !text.contains("reset") && !text.contains("closed") {
                    eprintln!("connection: {text}");
                }
            }
        });
    }
}

/// `/v1/characters/{c}/{action}` with the query string split off.
fn route(target: &str) -> Option<(String, String, String)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix("/v1/characters/")?;
    let (character, action) = rest.split_once('/')?;
    Some((character.to_string(), action.to_string(), query.to_string()))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await?;
    Ok(())
}

async fn serve(mut stream: TcpStream, state: Arc<State>) -> Result<()> {
    let mut rb = ReadBuf::new();
    while let Some(head) = rb.read_head(&mut stream).await? {
        let method = head.first.first().cloned().unwrap_or_default();
        let target = head.first.get(1).cloned().unwrap_or_default();
        let Some((character, action, query)) = route(&target) else {
            rb.read_body(&mut stream, &head).await?;
            // What scripts/server.mjs waits for, as on the gateway.
            if target == "/healthz" {
                respond(&mut stream, "200 OK", r#"{"status":"ok"}"#).await?;
            } else {
                respond(&mut stream, "404 Not Found", "{}").await?;
            }
            continue;
        };
        if action == "subscribe" && head.header("upgrade").is_some() {
            if !rb.is_empty() {
                bail!("bytes after a WebSocket upgrade request");
            }
            return subscriber(stream, &head, state, character, &query).await;
        }
        let body = rb.read_body(&mut stream, &head).await?;
        if action == "commands" && method == "POST" {
            let answer = publish(&state, &character, &body);
            respond(&mut stream, "200 OK", &answer.to_string()).await?;
        } else {
            respond(&mut stream, "404 Not Found", "{}").await?;
        }
    }
    Ok(())
}

fn publish(state: &State, character: &str, body: &[u8]) -> Value {
    let cmd: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let topic = cmd
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or("main")
        .to_string();
    let room = state.room(character);
    let mut room = lock(&room);
    room.seq += 1;
    let seq = room.seq;
    let frame = json!({
        "type": "command",
        "character": character,
        "topic": topic,
        "seq": seq,
        "epoch": state.epoch,
        "ts": now_ms(),
        "name": cmd.get("name").cloned().unwrap_or(Value::Null),
        "params": cmd.get("params").cloned().unwrap_or_else(|| json!({})),
        "duration_ms": cmd.get("duration_ms").cloned().unwrap_or(Value::Null),
        "id": cmd.get("id").cloned().unwrap_or(Value::Null),
    });
    let message = Message::text(frame.to_string());
    let mut delivered = 0u64;
    for sub in &room.subs {
        if sub.topics.iter().any(|t| t == ">" || *t == topic)
            && sub.tx.send(message.clone()).is_ok()
        {
            delivered += 1;
        }
    }
    json!({"character": character, "epoch": state.epoch, "seqs": [seq], "delivered": delivered})
}

async fn subscriber(
    mut stream: TcpStream,
    head: &Head,
    state: Arc<State>,
    character: String,
    query: &str,
) -> Result<()> {
    let key = head.header("sec-websocket-key").unwrap_or("");
    let accept = derive_accept_key(key.as_bytes());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(reply.as_bytes()).await?;
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();

    let topics: Vec<String> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("topics="))
        .map(|t| t.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec![">".to_string()]);
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let room = state.room(&character);
    {
        let mut room = lock(&room);
        let welcome = json!({
            "type": "welcome",
            "client_id": format!("n{id}"),
            "character": character,
            "epoch": state.epoch,
            "seq": room.seq,
            "topics": topics,
        });
        // Queued under the lock, so it precedes every command sent after the join.
        let _ = tx.send(Message::text(welcome.to_string()));
        room.subs.push(Sub { id, topics, tx });
    }
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(frame) = source.next().await {
        match frame {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    lock(&room).subs.retain(|s| s.id != id);
    writer.abort();
    Ok(())
}
