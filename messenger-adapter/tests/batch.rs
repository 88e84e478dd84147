//! Send API calls that are ready together go out as Graph batch requests, against the
//! sandbox Graph API on 127.0.0.1: what each request carries, the batch size limit,
//! and every call keeping its own outcome (success, error, retry, no answer).
//!
//! The Graph client is driven directly on a current-thread runtime, where spawned
//! sends run in order: the first owns the batch and the others join it, every time.

use std::{sync::Arc, time::Duration};

use adapter_api::{Adapter, OutboundMessage};
use messenger_adapter::{
    error::{Error, ErrorClass},
    send::graph::Graph,
    settings::Settings,
    Log,
};
use sandbox::{GraphCall, SandboxGraph, Scripted};
use serde_json::{json, Value};
use tokio::task::JoinSet;

const PAGE: &str = "111";
const TOKEN: &str = "page-token";

fn settings_json(graph: &str, extra: &str) -> String {
    format!(
        r#"{{"app_secret":"s","verify_token":"v","graph_api_base":"{graph}",
            "pages":[{{"id":"{PAGE}","access_token":"{TOKEN}"}}],
            "backoff_base_ms":5,"backoff_max_ms":50,"send_rate_per_second":0{extra}}}"#
    )
}

fn body(user: usize) -> Value {
    json!({
        "recipient": { "id": user.to_string() },
        "messaging_type": "RESPONSE",
        "message": { "text": format!("hello & welcome, {user}") }
    })
}

/// Sends `n` texts to users 0..n at once; each result with its tries, by user.
async fn send_together(
    graph: &SandboxGraph,
    extra: &str,
    n: usize,
) -> Vec<(Result<Value, Error>, u32)> {
    let settings = Settings::from_json(&settings_json(&graph.url, extra)).unwrap();
    let page = settings.pages[0].clone();
    let client = Arc::new(Graph::new(settings, Log::default()).unwrap());
    let mut sends = JoinSet::new();
    for user in 0..n {
        let (client, page) = (Arc::clone(&client), page.clone());
        sends.spawn(async move { (user, client.send(&page, &body(user), false).await) });
    }
    let mut results: Vec<_> = sends.join_all().await;
    results.sort_by_key(|(user, _)| *user);
    results.into_iter().map(|(_, result)| result).collect()
}

fn user_of(call: &GraphCall) -> usize {
    call.recipient().parse().unwrap()
}

#[tokio::test]
async fn calls_ready_together_go_out_as_one_batch_request() {
    let graph = SandboxGraph::start().await.unwrap();
    let results = send_together(&graph, "", 10).await;
    let calls = graph.calls();
    assert_eq!(calls.len(), 10);
    for call in &calls {
        assert_eq!(call.batch, Some(10), "one request carried all ten");
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            ("POST", "/v25.0/me/messages")
        );
        assert_eq!(call.query["access_token"], TOKEN);
        assert_eq!(call.query["appsecret_proof"].len(), 64);
        assert_eq!(
            call.body,
            body(user_of(call)),
            "the body survives the form encoding"
        );
    }
    let mut ids: Vec<_> = results
        .iter()
        .map(|(result, tries)| {
            assert_eq!(*tries, 1);
            result.as_ref().unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each call gets its own answer");
    for (user, (result, _)) in results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap()["recipient_id"], user.to_string());
    }
}

#[tokio::test]
async fn batches_hold_at_most_batch_size_calls() {
    let graph = SandboxGraph::start().await.unwrap();
    let results = send_together(&graph, r#","batch_size":4"#, 10).await;
    assert!(results.iter().all(|(r, _)| r.is_ok()));
    let mut sizes: Vec<_> = graph.calls().iter().map(|c| c.batch.unwrap()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 2, 4, 4, 4, 4, 4, 4, 4, 4]);
}

#[tokio::test]
async fn batch_size_1_sends_every_call_alone() {
    let graph = SandboxGraph::start().await.unwrap();
    let results = send_together(&graph, r#","batch_size":1"#, 5).await;
    assert!(results.iter().all(|(r, _)| r.is_ok()));
    let calls = graph.calls();
    assert_eq!(calls.len(), 5);
    assert!(calls.iter().all(|c| c.batch.is_none()), "{calls:?}");
}

#[tokio::test]
async fn a_lone_call_is_a_plain_send_api_call() {
    let graph = SandboxGraph::start().await.unwrap();
    let results = send_together(&graph, "", 1).await;
    assert_eq!(results[0].1, 1);
    let calls = graph.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].batch, None);
    assert_eq!(calls[0].path, "/v25.0/me/messages");
    assert_eq!(calls[0].body, body(0));
}

#[tokio::test]
async fn each_call_of_a_batch_keeps_its_own_outcome() {
    let graph = SandboxGraph::start().await.unwrap();
    // Items 0 to 3 of the batch: a permanent error, a transient one, no answer, and a
    // rate limit whose wait comes in the item's own usage header.
    graph.script([
        Scripted::graph_error(
            400,
            551,
            1_545_041,
            "This person isn't available right now.",
        ),
        Scripted::graph_error(500, 1200, 0, "Temporary send message failure"),
        Scripted::no_answer(),
        Scripted::graph_error(400, 613, 0, "Calls to this api have exceeded the rate limit.")
            .header(
                "x-business-use-case-usage",
                r#"{"111":[{"type":"messenger","call_count":100,"estimated_time_to_regain_access":5}]}"#,
            ),
    ]);
    let results = send_together(&graph, "", 6).await;

    let (unavailable, tries) = &results[0];
    let Err(Error::Graph(error)) = unavailable else {
        panic!("551 is an error: {unavailable:?}");
    };
    assert_eq!(
        (error.code, error.class, *tries),
        (551, ErrorClass::Permanent, 1)
    );

    let (retried, tries) = &results[1];
    assert!(retried.is_ok(), "1200 is retried: {retried:?}");
    assert_eq!(*tries, 2);

    let (unanswered, tries) = &results[2];
    let Err(Error::Transport { not_sent, .. }) = unanswered else {
        panic!("no answer is an unknown outcome: {unanswered:?}");
    };
    assert!(
        !not_sent && *tries == 1,
        "it may have been delivered: not resent"
    );

    let (limited, tries) = &results[3];
    let Err(Error::Graph(error)) = limited else {
        panic!("613 is an error: {limited:?}");
    };
    assert_eq!(
        (error.class, error.retry_after_ms, *tries),
        (ErrorClass::RateLimited, 300_000, 1),
        "a wait of minutes is reported, not waited out"
    );

    assert!(results[4..].iter().all(|(r, t)| r.is_ok() && *t == 1));
    let calls = graph.calls();
    assert_eq!(calls.len(), 7, "six in the batch, one retry");
    let retry = &calls[6];
    assert_eq!(
        (retry.batch, user_of(retry)),
        (None, 1),
        "the retry goes alone"
    );
}

#[tokio::test]
async fn a_failed_batch_request_fails_every_call_with_its_error() {
    let graph = SandboxGraph::start().await.unwrap();
    graph.script_batches([Scripted::graph_error(
        400,
        190,
        0,
        "Invalid OAuth access token.",
    )]);
    let results = send_together(&graph, "", 3).await;
    for (result, tries) in &results {
        let Err(Error::Graph(error)) = result else {
            panic!("{result:?}");
        };
        assert_eq!((error.code, *tries), (190, 1));
    }
    assert_eq!(graph.calls().len(), 3, "a bad token is not retried");

    // A transient failure of the whole request: each call is retried on its own.
    let graph = SandboxGraph::start().await.unwrap();
    graph.script_batches([Scripted::graph_error(
        503,
        2,
        0,
        "Service temporarily unavailable",
    )]);
    let results = send_together(&graph, "", 3).await;
    assert!(
        results.iter().all(|(r, t)| r.is_ok() && *t == 2),
        "{results:?}"
    );
    let alone = graph.calls().iter().filter(|c| c.batch.is_none()).count();
    assert_eq!(alone, 3);
}

/// Through the plugin's ABI and its own runtime, as the host sends: many sends
/// handed over at once take fewer requests than calls, and each gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn sends_through_the_plugin_share_requests() {
    let graph = SandboxGraph::start().await.unwrap();
    let settings = settings_json(&graph.url, "");
    let adapter = Arc::new(Adapter::new(
        messenger_adapter::channel::adapter(&settings, Log::default()).unwrap(),
    ));
    let mut sends = JoinSet::new();
    for user in 0..200 {
        let adapter = Arc::clone(&adapter);
        sends.spawn(async move {
            let message = OutboundMessage::text(PAGE, user.to_string(), "hi");
            (user, adapter.send(message, Duration::from_secs(20)).await)
        });
    }
    for (user, receipt) in sends.join_all().await {
        let receipt = receipt.unwrap();
        assert_eq!(receipt.recipient_id.as_str(), user.to_string());
    }
    let calls = graph.calls();
    assert_eq!(calls.len(), 200);
    let requests: f64 = calls
        .iter()
        .map(|c| 1.0 / c.batch.unwrap_or(1) as f64)
        .sum();
    assert!(requests < 150.0, "{requests} requests for 200 calls");
    assert!(calls.iter().all(|c| c.batch.unwrap_or(1) <= 50));
}

#[tokio::test]
async fn a_batch_answered_with_a_success_that_is_not_a_list_is_an_unknown_outcome_for_every_call() {
    let graph = SandboxGraph::start().await.unwrap();
    graph.script_batches([Scripted {
        status: 200,
        body: json!({ "success": true }),
        headers: Vec::new(),
    }]);
    let results = send_together(&graph, "", 3).await;
    for (result, tries) in &results {
        let Err(Error::Transport { not_sent, .. }) = result else {
            panic!("what was done is unknown: {result:?}");
        };
        assert!(!not_sent && *tries == 1, "not resent: {result:?}");
    }
    assert_eq!(graph.calls().len(), 3, "nothing sent again");
}

#[tokio::test]
async fn a_batch_whose_connection_broke_after_sending_is_an_unknown_outcome_for_every_call() {
    // A server that reads the batch request and hangs up without answering.
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0; 65536];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    let settings = Settings::from_json(&settings_json(&url, "")).unwrap();
    let page = settings.pages[0].clone();
    let client = Arc::new(Graph::new(settings, Log::default()).unwrap());
    let mut sends = JoinSet::new();
    for user in 0..3 {
        let (client, page) = (Arc::clone(&client), page.clone());
        sends.spawn(async move { client.send(&page, &body(user), false).await });
    }
    for (result, tries) in sends.join_all().await {
        let Err(Error::Transport { not_sent, .. }) = &result else {
            panic!("it may have been delivered: {result:?}");
        };
        assert!(!not_sent && tries == 1, "not resent: {result:?}");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one batch request, not resent"
    );
}
