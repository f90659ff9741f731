//! A real `cargo xtask e2e` run that fails, without a cluster: kind, docker, cargo and
//! cargo-nextest are shims first on PATH, and `kind create cluster` fails. Its `report.html` is
//! opened in Debian's chromium, headless, driven over the DevTools protocol: a click on the
//! failed task's bar must open its log, the page must fetch nothing, and a screenshot is saved
//! beside it. The same run, as a GitHub Actions step, must annotate the failure, fold its log
//! tail and append its summary to the step summary.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The failed run: its report directory, its stderr, the step summary it appended to.
struct FailedRun {
    dir: PathBuf,
    stderr: String,
    code: Option<i32>,
    step_summary: PathBuf,
}

const KIND: &str = r#"#!/bin/sh
# kind for this test: every create fails, after saying what kind says.
case "$1 $2" in
"version ") echo "kind v0.23.0 go1.22.5 linux/amd64" ;;
"get clusters") echo "No kind clusters found." >&2 ;;
"create cluster")
    echo "Creating cluster \"$4\" ..."
    echo " • Ensuring node image (kindest/node:v1.30.0) ..."
    echo "ERROR: failed to create cluster: could not pull kindest/node: <no network> & no cache"
    exit 1 ;;
*) echo "kind shim: $*" ;;
esac
"#;

const DOCKER: &str = r#"#!/bin/sh
# docker for this test: the engine answers, and has no container or image.
case "$1" in
version) echo "27.0.1" ;;
*) echo "Error: No such object" >&2; exit 1 ;;
esac
"#;

/// cargo and cargo-nextest: a build that takes until it is cancelled.
const BUILD: &str = "#!/bin/sh\necho \"shim: $0 $*\"\nexec sleep 120\n";

fn shim(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `cargo xtask e2e datastorage` once for every test here, as a GitHub Actions step.
fn failed_run() -> &'static FailedRun {
    static RUN: OnceLock<FailedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_in_browser");
        let _ = std::fs::remove_dir_all(&scratch);
        let (bin, history, dir) = (scratch.join("bin"), scratch.join("history"), scratch.join("report"));
        for d in [&bin, &history] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (name, script) in [("kind", KIND), ("docker", DOCKER), ("cargo", BUILD), ("cargo-nextest", BUILD)] {
            shim(&bin, name, script);
        }
        // Three earlier runs here, so the summary compares this one with them.
        let past = json!({
            "version": 1,
            "tasks": {"delete-cluster": {"done": [3.0, 3.2, 2.8], "cached": [], "last_cached": false}},
            "runs": [150.0, 160.0, 170.0],
        });
        std::fs::write(history.join("datastorage-kind-fresh.json"), past.to_string()).unwrap();
        let step_summary = scratch.join("step-summary.md");
        std::fs::write(&step_summary, "# an earlier step's summary\n").unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["e2e", "datastorage", "--engine", "docker", "--report-dir"])
            .arg(&dir)
            .current_dir(root())
            .env("PATH", path)
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", &step_summary)
            .env("REMEDY_STATE_DIR", scratch.join("state"))
            .env("REMEDY_HISTORY_DIR", &history)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(dir.join("report.html").is_file(), "the run wrote no report.html:\n{stderr}");
        FailedRun { dir, stderr, code: output.status.code(), step_summary }
    })
}

#[test]
fn a_failed_run_on_github_actions_annotates_folds_and_summarizes() {
    let run = failed_run();
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(1), "{stderr}");
    let annotation = "::error title=datastorage end-to-end%3A cluster/cluster failed::`KIND_EXPERIMENTAL_PROVIDER=docker kind create cluster";
    assert!(stderr.lines().any(|l| l.starts_with(annotation)), "{stderr}");
    let group = stderr.find("::group::log tail of cluster/cluster\n").expect(stderr);
    let end = group + stderr[group..].find("::endgroup::\n").expect(stderr);
    assert!(stderr[group..end].contains("ERROR: failed to create cluster"), "{stderr}");
    assert!(!stderr.contains("    | "), "a log line printed outside its group: {stderr}");
    // Three successful runs are on record, but a run that stopped early took no usual time.
    assert!(!stderr.contains("usually 2m40s"), "a failed run was compared with successful ones: {stderr}");

    let summary = std::fs::read_to_string(&run.step_summary).unwrap();
    assert!(summary.starts_with("# an earlier step's summary\n# datastorage end-to-end\n"), "appended: {summary}");
    assert!(summary.contains("**failed 1 of 14, cancelled 1, not started 9**"), "{summary}");
    assert!(summary.contains("## cluster failed") && summary.contains("ERROR: failed to create cluster"), "{summary}");
    assert!(!summary.contains("Against the previous runs"), "{summary}");
    assert!(!summary.contains("timeline.svg"), "an image the summary cannot show: {summary}");
}

#[test]
fn a_failed_runs_page_opens_the_log_from_its_bar_and_fetches_nothing() {
    let Some(chromium) = ["chromium", "chromium-browser"].iter().find_map(|p| which(p)) else {
        println!("skipped: chromium is not installed (Debian: apt-get install chromium; cargo xtask test installs it)");
        return;
    };
    let run = failed_run();
    let page = run.dir.join("report.html");
    let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let mut browser = Browser::start(&chromium, &profile);

    let session = browser.open_page();
    browser.call(Some(&session), "Network.enable", json!({}));
    browser.call(Some(&session), "Page.enable", json!({}));
    browser.call(
        Some(&session),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );
    let url = format!("file://{}", page.display());
    browser.call(Some(&session), "Page.navigate", json!({"url": url}));
    browser.wait_for(&session, "Page.loadEventFired");

    let screenshot = browser.call(Some(&session), "Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD.decode(screenshot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(run.dir.join("report.png"), &png).unwrap();

    let open = "document.getElementById('log-cluster').open";
    let in_view = "(() => { const r = document.getElementById('log-cluster').getBoundingClientRect(); \
                   return r.top >= 0 && r.top < window.innerHeight; })()";
    assert_eq!(browser.evaluate(&session, open), json!(false), "the log starts collapsed");
    // Where the failed task's bar is on the screen, then a real click there.
    let centre = browser.evaluate(
        &session,
        "(() => { const bar = document.querySelector('rect.bar[data-log=\"log-cluster\"]'); \
         bar.scrollIntoView({block: 'center'}); const r = bar.getBoundingClientRect(); \
         return [r.left + r.width / 2, r.top + r.height / 2]; })()",
    );
    let (x, y) = (centre[0].as_f64().unwrap(), centre[1].as_f64().unwrap());
    assert_eq!(browser.evaluate(&session, in_view), json!(false), "the log is out of sight before the click");
    for kind in ["mousePressed", "mouseReleased"] {
        let event = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
        browser.call(Some(&session), "Input.dispatchMouseEvent", event);
    }
    assert_eq!(browser.evaluate(&session, open), json!(true), "a click on the bar opens the task's log");
    assert_eq!(browser.evaluate(&session, in_view), json!(true), "the opened log is scrolled to");
    let log = browser.evaluate(&session, "document.querySelector('#log-cluster pre').textContent");
    assert!(log.as_str().unwrap().contains("could not pull kindest/node: <no network> & no cache"), "{log}");

    // From the keyboard: the bar in focus says its times under the chart, Enter opens its log.
    let build = "document.getElementById('log-build-binaries').open";
    assert_eq!(browser.evaluate(&session, build), json!(false));
    browser.evaluate(&session, "document.querySelector('rect.bar[data-log=\"log-build-binaries\"]').focus()");
    let said = browser.evaluate(&session, "document.querySelector('svg').nextElementSibling.textContent");
    assert!(said.as_str().unwrap().starts_with("images/build-binaries cancelled: "), "{said}");
    for kind in ["keyDown", "keyUp"] {
        let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13});
        browser.call(Some(&session), "Input.dispatchKeyEvent", key);
    }
    assert_eq!(browser.evaluate(&session, build), json!(true), "Enter on a focused bar opens its log");

    browser.close();
    let fetched: Vec<&String> = browser
        .requests
        .iter()
        .filter(|url| !["file:", "data:", "about:"].iter().any(|scheme| url.starts_with(scheme)))
        .collect();
    assert!(
        browser.requests.iter().any(|u| u.starts_with("file:")),
        "the page itself was seen: {:?}",
        browser.requests
    );
    assert!(fetched.is_empty(), "the page fetched from the network: {fetched:?}");
    let _ = std::fs::remove_dir_all(&profile);
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var("PATH").ok()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// Headless chromium and a DevTools protocol connection to it.
struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Every URL a page asked for (`Network.requestWillBeSent`).
    requests: Vec<String>,
    /// Events read while waiting for an answer.
    events: Vec<Value>,
}

/// How long any one step may take.
const PATIENCE: Duration = Duration::from_secs(60);

impl Browser {
    fn start(chromium: &Path, profile: &Path) -> Browser {
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium");
        // It says where it listens, `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID`,
        // and goes on writing to stderr, which is read to the end.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in stderr.lines().map_while(Result::ok) {
                match line.strip_prefix("DevTools listening on ") {
                    Some(found) => {
                        let _ = tx.send(Ok(found.trim().to_owned()));
                    }
                    None => said.push(line),
                }
            }
            let _ = tx.send(Err(said.join("\n")));
        });
        let address = match rx.recv_timeout(PATIENCE) {
            Ok(Ok(address)) => address,
            Ok(Err(said)) => panic!("chromium did not start its DevTools server:\n{said}"),
            Err(_) => panic!("chromium did not say where its DevTools server listens"),
        };
        let host = address.trim_start_matches("ws://").split('/').next().unwrap().to_owned();
        let stream = TcpStream::connect(&host).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (socket, _) = tungstenite::client(address.as_str(), stream).expect("cannot open the DevTools websocket");
        Browser { child, socket, next_id: 0, requests: Vec::new(), events: Vec::new() }
    }

    /// A new tab, attached: the session its commands go to.
    fn open_page(&mut self) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached =
            self.call(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    /// Sends a command and returns its result, keeping the events that come meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(message.to_string())).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let message = self.read();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method} failed: {message}");
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    /// Waits for the event `method` of `session`.
    fn wait_for(&mut self, session: &str, method: &str) {
        let seen = |e: &Value| e["method"] == method && e["sessionId"] == session;
        if self.events.iter().any(seen) {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no {method}");
            let event = self.read();
            if seen(&event) {
                return;
            }
            self.events.push(event);
        }
    }

    fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let result =
            self.call(Some(session), "Runtime.evaluate", json!({"expression": expression, "returnByValue": true}));
        assert!(result.get("exceptionDetails").is_none(), "{expression} threw: {result}");
        result["result"]["value"].clone()
    }

    /// The next protocol message; every request a page makes is noted.
    fn read(&mut self) -> Value {
        loop {
            match self.socket.read().expect("the DevTools connection broke") {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["method"] == "Network.requestWillBeSent" {
                        self.requests.push(message["params"]["request"]["url"].as_str().unwrap_or_default().to_owned());
                    }
                    return message;
                }
                Message::Close(_) => panic!("chromium closed the DevTools connection"),
                _ => continue,
            }
        }
    }

    /// Closes the browser, reading what it still sends (a request made late is counted too).
    fn close(&mut self) {
        self.next_id += 1;
        let message = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.socket.send(Message::text(message.to_string()));
        while let Ok(message) = self.socket.read() {
            if let Message::Text(text) = message {
                let message: Value = serde_json::from_str(&text).unwrap_or_default();
                if message["method"] == "Network.requestWillBeSent" {
                    self.requests.push(message["params"]["request"]["url"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
