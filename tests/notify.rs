//! Notifications against a real HTTP receiver on 127.0.0.1 (tests/support/webhook.rs): the JSON
//! and Slack bodies, failure → recovery, the rate limit, retries (after a 500, not after a 400),
//! `stale` once, and `lifeboat notify test` as an operator runs it on this headless host (desktop
//! notifications skipped with one log line, the webhook URL never printed).

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lifeboat::config::Config;
use lifeboat::notify::{DeliveryStatus, JobOutcome, JobResult, Notifier, Sink};
use support::webhook::Receiver;

/// The path part of the test webhooks: a stand-in for the token a real webhook URL carries.
const TOKEN_PATH: &str = "/hooks/T0KEN-s3cr3t-abc123";
const TOKEN: &str = "T0KEN-s3cr3t-abc123";

fn config(notify: &str) -> Config {
    let text = format!(
        "[cluster]\nname = \"main\"\n\n[audit]\npath = \"/tmp/lifeboat-notify-audit.jsonl\"\n\n[notify]\n{notify}\n"
    );
    Config::from_toml(&text, Path::new("/test/lifeboat.toml"), &|_| None).unwrap()
}

fn webhook_notifier(receiver: &Receiver, extra: &str) -> Notifier {
    let config = config(&format!("webhook = \"{}\"\ndesktop = false\n{extra}", receiver.url(TOKEN_PATH)));
    Notifier::new(&config.notify, "main")
}

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

fn outcome(job: &str, result: JobResult, at: DateTime<Utc>) -> JobOutcome {
    JobOutcome {
        job: job.into(),
        result,
        error: (result == JobResult::Failed).then(|| "cannot reach the repository: connection refused".into()),
        ids: vec!["20270115T080000Z-F".into()],
        duration: Duration::from_millis(12_500),
        finished_at: at,
    }
}

#[tokio::test]
async fn webhook_json_body_has_the_documented_fields() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "");
    notifier.job_finished(&outcome("copy:offsite", JobResult::Failed, t(0))).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, TOKEN_PATH);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["event"], "failure");
    assert_eq!(body["cluster"], "main");
    assert_eq!(body["job"], "copy:offsite");
    assert_eq!(body["result"], "failed");
    assert_eq!(body["error"], "cannot reach the repository: connection refused");
    assert_eq!(body["ids"], serde_json::json!(["20270115T080000Z-F"]));
    assert_eq!(body["duration_seconds"], 12.5);
    assert_eq!(body["host"], lifeboat::catalog::lease::hostname());
    assert_eq!(body["at"], "2027-01-15T08:00:00Z");
    assert_eq!(body["suppressed"], 0);
    assert_eq!(body["test"], false);
    assert_eq!(body["lifeboat_version"], env!("CARGO_PKG_VERSION"));
    assert!(body["text"].as_str().unwrap().starts_with("lifeboat: copy:offsite failed on main"), "{body}");
}

#[tokio::test]
async fn slack_format_sends_text_and_blocks() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "format = \"slack\"");
    notifier.job_finished(&outcome("backup", JobResult::Failed, t(0))).await;
    let body = receiver.received()[0].json();
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("lifeboat: backup failed on main\n"), "{text}");
    assert!(text.contains("Error: cannot reach the repository"), "{text}");
    assert!(body["blocks"].as_array().is_some_and(|blocks| !blocks.is_empty()), "{body}");
    assert!(body.get("event").is_none(), "a Slack body has only Slack's keys: {body}");
}

#[tokio::test]
async fn failure_then_recovery_and_successes_only_when_asked_for() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "");
    notifier.job_finished(&outcome("backup", JobResult::Succeeded, t(0))).await;
    notifier.job_finished(&outcome("backup", JobResult::Failed, t(60))).await;
    notifier.job_finished(&outcome("dump", JobResult::Succeeded, t(90))).await;
    notifier.job_finished(&outcome("backup", JobResult::Succeeded, t(120))).await;
    notifier.job_finished(&outcome("backup", JobResult::Succeeded, t(180))).await;
    let events: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|request| request.json())
        .map(|body| (body["event"].as_str().unwrap().to_string(), body["job"].as_str().unwrap().to_string()))
        .collect();
    // Successes are not in the default `on`; the recovery is.
    assert_eq!(events, [("failure".into(), "backup".into()), ("recovery".into(), "backup".into())]);

    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "on = [\"success\"]");
    notifier.job_finished(&outcome("verify", JobResult::Succeeded, t(0))).await;
    notifier.job_finished(&outcome("verify", JobResult::Failed, t(60))).await;
    notifier.job_finished(&outcome("verify", JobResult::Succeeded, t(120))).await;
    let events: Vec<serde_json::Value> =
        receiver.received().iter().map(|request| request.json()["event"].clone()).collect();
    assert_eq!(events, ["success"], "only the events of `on` are sent");
}

#[tokio::test]
async fn a_reloaded_configuration_keeps_the_failing_jobs() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "");
    notifier.job_finished(&outcome("backup", JobResult::Failed, t(0))).await;
    let reloaded = notifier.reconfigured(
        &config(&format!("webhook = \"{}\"\nformat = \"slack\"\ndesktop = false", receiver.url("/new"))).notify,
        "main",
    );
    reloaded.job_finished(&outcome("backup", JobResult::Succeeded, t(60))).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].path, "/new", "the reloaded webhook is used");
    let text = received[1].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("lifeboat: backup recovered on main"),
        "the failure before the reload is remembered: {text}"
    );
}

#[tokio::test]
async fn a_flapping_job_sends_one_message_then_one_counting_the_held_back_ones() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "min_interval = \"15m\"");
    for minute in 0..20 {
        notifier.job_finished(&outcome("backup", JobResult::Failed, t(minute * 30))).await;
    }
    assert_eq!(receiver.received().len(), 1, "20 failures within 10 minutes send one message");
    notifier.job_finished(&outcome("backup", JobResult::Failed, t(16 * 60))).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let body = received[1].json();
    assert_eq!(body["suppressed"], 19);
    assert!(body["text"].as_str().unwrap().contains("19 more messages about this job were held back"), "{body}");
}

#[tokio::test]
async fn webhook_is_retried_after_a_500_and_delivered() {
    let receiver = Receiver::start().await;
    receiver.answer(&[500]);
    let notifier = webhook_notifier(&receiver, "");
    notifier.job_finished(&outcome("backup", JobResult::Failed, t(0))).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one 500, then the retry");
    assert_eq!(received[0].body, received[1].body, "the retry sends the same message");
    let pause = received[1].at - received[0].at;
    assert!(pause >= Duration::from_millis(900), "the retry waited {pause:?}, not the 1 s backoff");
}

#[tokio::test]
async fn webhook_is_not_retried_after_a_400_and_the_failure_hides_the_url() {
    let receiver = Receiver::start().await;
    receiver.answer(&[400, 400, 400, 400, 400, 400, 400, 400]);
    let notifier = webhook_notifier(&receiver, "attempts = 5");
    let deliveries = notifier.send_test().await;
    assert_eq!(receiver.received().len(), 4, "one request per kind, none retried");
    assert_eq!(deliveries.len(), 4);
    for delivery in &deliveries {
        assert_eq!(delivery.sink, Sink::Webhook { origin: receiver.url(""), format: "json" });
        let DeliveryStatus::Failed(reason) = &delivery.status else { panic!("delivered despite a 400: {delivery:?}") };
        assert!(reason.contains("answered 400 after 1 attempt"), "{reason}");
        assert!(!reason.contains(TOKEN), "the webhook's token leaked: {reason}");
    }
}

#[tokio::test]
async fn stale_is_sent_once_until_a_fresh_backup_goes_stale_again() {
    let receiver = Receiver::start().await;
    let notifier = webhook_notifier(&receiver, "stale_after = \"26h\"");
    let now = Utc::now();
    let hours = |h: i64| chrono::Duration::hours(h);
    notifier.check_stale(Some(now - hours(2)), now).await;
    assert!(receiver.received().is_empty(), "a 2 h old verified backup is fresh");
    for step in 0..5 {
        notifier.check_stale(Some(now - hours(30)), now + chrono::Duration::minutes(step)).await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 1, "stale is sent once, not on every check");
    let body = received[0].json();
    assert_eq!(body["event"], "stale");
    assert_eq!(body["job"], serde_json::Value::Null);
    assert_eq!(body["stale_after_seconds"], 26 * 3600);
    assert!(body["newest_verified_at"].is_string(), "{body}");
    // A newer verified backup makes it fresh; once that one is stale too, one more message.
    notifier.check_stale(Some(now + hours(1)), now + hours(2)).await;
    notifier.check_stale(Some(now + hours(1)), now + hours(28)).await;
    notifier.check_stale(Some(now + hours(1)), now + hours(29)).await;
    assert_eq!(receiver.received().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// `lifeboat notify test`

/// Runs the binary with `args`, as on a headless server: no session bus in the environment.
async fn lifeboat(config: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command.arg("--config").arg(config).args(args);
    for variable in ["DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "LIFEBOAT_LOG"] {
        command.env_remove(variable);
    }
    command.output().await.unwrap()
}

fn write_config(dir: &Path, notify: &str) -> std::path::PathBuf {
    let path = dir.join("lifeboat.toml");
    let text = format!(
        "[cluster]\nname = \"main\"\n\n[audit]\npath = \"{}/audit.jsonl\"\n\n[notify]\n{notify}\n",
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn notify_test_sends_each_kind_and_skips_the_desktop_with_one_log_line() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("webhook = \"{}\"\ndesktop = true", receiver.url(TOKEN_PATH)));
    let output = lifeboat(&config, &["-v", "notify", "test"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let events: Vec<String> =
        receiver.received().iter().map(|request| request.json()["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events.len(), 4, "{stdout}");
    for kind in ["failure", "recovery", "success", "stale"] {
        assert!(events.iter().any(|event| event == kind), "no {kind} message: {events:?}");
        assert!(stdout.contains(&format!("ok   {kind:<8} -> webhook {} (json)", receiver.url(""))), "{stdout}");
        assert!(stdout.contains(&format!("--   {kind:<8} -> desktop: skipped, no D-Bus session bus")), "{stdout}");
    }
    assert!(receiver.received().iter().all(|request| request.json()["test"] == true));
    let skipped_lines = stderr.lines().filter(|line| line.contains("desktop notifications skipped")).count();
    assert_eq!(skipped_lines, 1, "one log line for the process, not one per message:\n{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the webhook's token leaked:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn notify_test_fails_when_the_webhook_refuses_and_json_says_why() {
    let receiver = Receiver::start().await;
    receiver.answer(&[403, 403, 403, 403]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("webhook = \"{}\"\ndesktop = false", receiver.url(TOKEN_PATH)));
    let output = lifeboat(&config, &["notify", "test", "--json"]).await;
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["schema"], "notify-test/1");
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    for delivery in deliveries {
        assert_eq!(delivery["sink"], "webhook");
        assert_eq!(delivery["status"], "failed");
        assert!(delivery["reason"].as_str().unwrap().contains("answered 403"), "{delivery}");
    }
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!all.contains(TOKEN), "the webhook's token leaked:\n{all}");
}

#[tokio::test]
async fn notify_test_without_a_sink_says_how_to_configure_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "desktop = false");
    let output = lifeboat(&config, &["notify", "test"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("configures no notification sink") && stderr.contains("webhook = \"https://"), "{stderr}");

    // Desktop only, on a host without a session bus: nothing can be delivered, which is a failure too.
    let config = write_config(dir.path(), "desktop = true");
    let output = lifeboat(&config, &["notify", "test"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no test message could be delivered") && stderr.contains("notify.webhook"), "{stderr}");
}
