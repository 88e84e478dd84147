//! Fault injection on the Graph side, through the real host: transient failures are
//! retried and delivered once, permanent ones are given up, visible in logs and
//! metrics, and not retried after a restart.

use std::time::Duration;

use e2e::{fake_graph, fixture, sign, Host, HostBuilder, Scripted, APP_SECRET};
use serde_json::{json, Value};

use crate::{control_in, delivery::until, post};

fn message_from(user: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("message_text")).unwrap();
    let item = &mut body["entry"][0]["messaging"][0];
    item["sender"]["id"] = user.into();
    item["message"]["mid"] = format!("m_fault_{user}").into();
    item["message"]["text"] = format!("to {user}").into();
    serde_json::to_vec(&body).unwrap()
}

async fn sends(host: &Host) -> f64 {
    host.sends("messenger", "ok").await + host.sends("messenger", "permanent").await
}

fn ok() -> Scripted {
    Scripted {
        status: 200,
        body: json!({ "recipient_id": "x", "message_id": "m" }),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_delivered_once_and_permanent_ones_given_up() {
    let graph = fake_graph().await;
    let builder = HostBuilder::new(&graph.url);
    let mut host = builder.start();
    let usage = r#"{"1":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":0}]}"#;
    let plan: Vec<(&str, Vec<Scripted>, usize)> = vec![
        (
            "u500",
            vec![Scripted::graph_error(500, 0, 0, "server error"), ok()],
            2,
        ),
        (
            "u1200",
            vec![
                Scripted::graph_error(400, 1200, 0, "temporary"),
                Scripted::graph_error(400, 1200, 0, "temporary"),
                ok(),
            ],
            3,
        ),
        (
            "u613",
            vec![
                Scripted::graph_error(400, 613, 0, "rate")
                    .header("x-business-use-case-usage", usage),
                ok(),
            ],
            2,
        ),
        (
            "u190",
            vec![Scripted::graph_error(
                400,
                190,
                0,
                "Invalid OAuth access token",
            )],
            1,
        ),
        (
            "u551",
            vec![Scripted::graph_error(
                400,
                551,
                0,
                "This person isn't available right now",
            )],
            1,
        ),
    ];
    let mut expected_calls = 0;
    for (i, (user, script, calls)) in plan.iter().enumerate() {
        graph.script(script.clone());
        let body = message_from(user);
        assert_eq!(
            post(&host, &body, Some(&sign(APP_SECRET, &body))).await.0,
            200
        );
        until(&format!("{user} to finish"), || async {
            sends(&host).await >= (i + 1) as f64
        })
        .await;
        expected_calls += calls;
        assert_eq!(
            graph.calls().len(),
            expected_calls,
            "{user}: wrong number of tries"
        );
    }
    assert_eq!(host.sends("messenger", "ok").await, 3.0);
    assert_eq!(host.sends("messenger", "permanent").await, 2.0);
    assert_eq!(
        host.metric("dmflow_send_retries_total{channel=\"messenger\"}")
            .await,
        4.0
    );
    let log = host.log();
    assert!(
        log.contains("reply failed for good")
            && log.contains("code 190")
            && log.contains("code 551"),
        "{log}"
    );
    assert!(
        log.contains("SandboxTrace"),
        "the fbtrace_id is logged:\n{log}"
    );
    let status = tokio::task::block_in_place(|| host.terminate(Duration::from_secs(30)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", host.log());

    // Given up means given up: a restart does not try them again. The controls,
    // later in the same conversations, are answered after any retry would have been.
    let restarted = builder.start();
    for user in ["u190", "u551"] {
        control_in(&restarted, &graph, "1", user).await;
    }
    let tries = |text: &str| {
        graph
            .calls()
            .iter()
            .filter(|c| c.text() == Some(text))
            .count()
    };
    assert_eq!(tries("to u190"), 1, "{}", restarted.log());
    assert_eq!(tries("to u551"), 1, "{}", restarted.log());
    assert!(
        !restarted.log().contains("resuming events"),
        "{}",
        restarted.log()
    );
}
