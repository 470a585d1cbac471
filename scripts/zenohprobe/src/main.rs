use std::time::{Duration, Instant};
use zenoh::{Config, Wait};

fn cfg(mode: &str, listen: Option<&str>, connect: Option<&str>) -> Config {
    let mut c = Config::default();
    c.insert_json5("mode", &format!("\"{mode}\"")).unwrap();
    c.insert_json5("scouting/multicast/enabled", "false")
        .unwrap();
    if let Some(l) = listen {
        c.insert_json5("listen/endpoints", &format!("[\"{l}\"]"))
            .unwrap();
    } else {
        c.insert_json5("listen/endpoints", "[]").unwrap();
    }
    if let Some(e) = connect {
        c.insert_json5("connect/endpoints", &format!("[\"{e}\"]"))
            .unwrap();
    }
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // zenoh::Session::info().locators() is unstable, so pick a free port ourselves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let idle = std::env::args().any(|a| a == "--idle");
    let t0 = Instant::now();

    // Session A: peer, explicit TCP listener, no multicast scouting.
    let a = zenoh::open(cfg("peer", Some(&ep), None)).await.unwrap();
    let t_open = t0.elapsed();
    let _token = a.liveliness().declare_token("fleet/nodes/a").await.unwrap();
    let qable = a.declare_queryable("fleet/nodes/a/status").await.unwrap();
    tokio::spawn(async move {
        while let Ok(q) = qable.recv_async().await {
            q.reply(q.key_expr().clone(), "status:ok").await.unwrap();
        }
    });
    let publisher = a.declare_publisher("fleet/nodes/a/events").await.unwrap();
    if idle {
        println!("pid {} listening on {ep}; idling", std::process::id());
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }

    for mode in ["client", "peer"] {
        let t1 = Instant::now();
        // Session B: connects to A over TCP.
        let b = zenoh::open(cfg(mode, None, Some(&ep))).await.unwrap();
        let t_bopen = t1.elapsed();
        let sub = b.declare_subscriber("fleet/nodes/a/events").await.unwrap();
        // Liveliness: query current tokens.
        let toks = b.liveliness().get("fleet/nodes/*").await.unwrap();
        let mut seen = vec![];
        while let Ok(r) = toks.recv_async().await {
            seen.push(r.result().unwrap().key_expr().to_string());
        }
        let t_live = t1.elapsed();
        // Queryable round trip.
        let replies = b
            .get("fleet/nodes/a/status")
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        let r = replies.recv_async().await.unwrap();
        let body = r
            .result()
            .unwrap()
            .payload()
            .try_to_string()
            .unwrap()
            .into_owned();
        let t_reply = t1.elapsed();
        // Pub/sub.
        tokio::time::sleep(Duration::from_millis(100)).await; // let subscriber declaration propagate
        publisher.put("hello").await.unwrap();
        let s = tokio::time::timeout(Duration::from_secs(5), sub.recv_async())
            .await
            .unwrap()
            .unwrap();
        println!(
            "[{mode}] tokens={seen:?} reply={body:?} sample={:?} | B open {:?}, +liveliness {:?}, +reply {:?} (A open {:?})",
            s.payload().try_to_string().unwrap(), t_bopen, t_live, t_reply, t_open
        );
        b.close().wait().unwrap();
    }
    a.close().await.unwrap();
    println!("total {:?}", t0.elapsed());
}
