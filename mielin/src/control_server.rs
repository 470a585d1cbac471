//! The node's side of the control socket (`DATA/control.sock`, mode 0600; format in
//! [`mielin::control`]): each connection carries one request, read within
//! [`MAX_REQUEST`](mielin::control::MAX_REQUEST), and its replies.

use crate::metrics::Metrics;
use mielin::control::{frame_len, Reply, Request, MAX_REQUEST};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

/// Connections served at once: with [`MAX_REQUEST`] each, the socket holds at most 8 × 16 MiB
/// of requests in memory.
const MAX_CONNECTIONS: usize = 8;
/// A request's bytes must arrive within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A request for the node's loop, with where its replies go.
pub struct Command {
    pub request: Request,
    pub reply: mpsc::Sender<Reply>,
}

/// The socket's path in a data directory.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("control.sock")
}

/// Binds the socket with mode 0600. A socket left by a node that is gone is replaced; one
/// that answers belongs to a running node, and is an error.
pub fn bind(data: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "another node is running on {} (its control socket {} answers): stop it first, \
                 or give this node its own --data DIR",
                data.display(),
                path.display()
            ));
        }
        std::fs::remove_file(&path)
            .map_err(|e| format!("removing the stale socket {}: {e}", path.display()))?;
    }
    let l =
        UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    Ok(l)
}

/// Accepts connections and hands their requests to the loop through `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Command>, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tx, metrics) = (tx.clone(), metrics.clone());
        tokio::spawn(async move {
            connection(stream, tx, metrics).await;
            drop(permit);
        });
    }
}

async fn write(stream: &mut UnixStream, reply: &Reply) -> bool {
    stream.write_all(&reply.encode()).await.is_ok()
}

async fn connection(mut stream: UnixStream, tx: mpsc::Sender<Command>, metrics: Arc<Metrics>) {
    let read = async {
        let mut prefix = [0u8; 4];
        stream
            .read_exact(&mut prefix)
            .await
            .map_err(|e| (None, format!("reading the request: {e}")))?;
        let len = frame_len(prefix, MAX_REQUEST).map_err(|e| {
            (
                Some("control_oversized"),
                format!("request refused: {e} (a deploy carries a module of at most 16 MiB)"),
            )
        })?;
        // Allocated only after the bound was checked.
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| (None, format!("reading the request: {e}")))?;
        Request::decode(&body)
            .map_err(|e| (Some("control_malformed"), format!("request refused: {e}")))
    };
    let request = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(r)) => r,
        Ok(Err((reason, msg))) => {
            if let Some(r) = reason {
                metrics.refusal(r);
                tracing::warn!("control socket: {msg}");
            }
            let _ = write(&mut stream, &Reply::Err(msg)).await;
            return;
        }
        Err(_) => {
            let _ = write(
                &mut stream,
                &Reply::Err(format!(
                    "request refused: not complete within {} s",
                    READ_TIMEOUT.as_secs()
                )),
            )
            .await;
            return;
        }
    };
    metrics.control_request();
    let (rtx, mut rrx) = mpsc::channel(64);
    if tx
        .send(Command {
            request,
            reply: rtx,
        })
        .await
        .is_err()
    {
        let _ = write(&mut stream, &Reply::Err("the node is shutting down".into())).await;
        return;
    }
    while let Some(r) = rrx.recv().await {
        let last = r.is_final();
        if !write(&mut stream, &r).await || last {
            break;
        }
    }
    let _ = stream.shutdown().await;
}
