//! An OpenAI-compatible model server behind [`Generate`]: vLLM, SGLang, llama.cpp's server, or
//! any other that serves `POST /v1/completions`.
//!
//! Contract:
//! - Prompts are rendered here, by the model's own chat template ([`ModelText`]), and sent as raw
//!   text to `/v1/completions`, so they are byte-identical to the in-process engine's.
//! - [`OpenAiServer::connect`] probes the server once, before any work: its model name, whether
//!   it returns `n` choices per request, log-probabilities, and honours `seed`. What it lacks is
//!   said once, in plain words ([`OpenAiServer::notes`]), and the run degrades explicitly: `n`
//!   is split over several requests (each with its own derived seed), and without
//!   log-probabilities every completion's perplexity is 1, so f(r) decides no tie.
//! - Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff for
//!   up to `retry_for`; a server killed and restarted within that window costs nothing. A 400
//!   that names `n` halves the per-request `n` (remembered for the rest of the run). An answer
//!   that is not an OpenAI completion fails that request alone with an error that quotes it.
//! - At most `max_concurrency` requests are in flight over all stages together, so a slow server
//!   applies backpressure instead of growing queues.
//! - The API key is read from the environment variable the TOML names; it is sent in the
//!   `Authorization` header only and never appears in an error, a log or an artifact.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ucoder_operators::{
    BackendError, Completion, FinishReason, Generate, Generation, GenerationRequest, LogprobSummary,
};

use super::StageClock;
use super::candle::render_with;
use crate::llm::ModelText;

/// Where the server is and how to talk to it (`[model] backend = "openai"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Base URL up to and including `/v1` (e.g. `http://127.0.0.1:8000/v1`).
    pub base_url: String,
    /// The model name the server knows; `None`: the only model `GET /models` lists.
    pub model: Option<String>,
    /// The environment variable that holds the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Requests in flight at once, over all stages.
    pub max_concurrency: usize,
    /// One request's limit (connect, send and the whole answer).
    pub request_timeout: Duration,
    /// How long transient failures (connection refused, timeouts, 429, 5xx) are retried.
    pub retry_for: Duration,
    /// Ask for log-probabilities (f(r)); off for servers where they are slow to compute.
    pub logprobs: bool,
}

/// Why the server could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{url}: {why}")]
    Unusable { url: String, why: String },
    #[error(
        "the API key variable {0} is not set: export it (the key is read from the environment only)"
    )]
    MissingKey(String),
}

/// A connected server with what the probe found.
pub struct OpenAiServer {
    agent: ureq::Agent,
    settings: ServerSettings,
    model: String,
    api_key: Option<String>,
    /// Choices per request the server gives (halved when it refuses a larger `n`).
    max_n: AtomicU32,
    logprobs: bool,
    permits: Permits,
    notes: Mutex<Vec<String>>,
}

/// One failed HTTP exchange.
#[derive(Debug)]
enum CallError {
    /// Worth retrying: the server may come back.
    Transient(String),
    /// The server refused `n` (HTTP 400 naming it).
    RefusedN(String),
    /// Anything else: this request fails.
    Fatal(String),
}

impl OpenAiServer {
    /// Connects and probes the server (see the module's contract).
    pub fn connect(settings: ServerSettings) -> Result<Arc<Self>, ServerError> {
        let url = settings.base_url.trim_end_matches('/').to_string();
        let unusable = |why: String| ServerError::Unusable {
            url: url.clone(),
            why,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(unusable(
                "base_url must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)"
                    .into(),
            ));
        }
        let api_key = match &settings.api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| ServerError::MissingKey(var.clone()))?,
            ),
            None => None,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10).min(settings.request_timeout))
            .timeout(settings.request_timeout)
            .build();
        let mut server = OpenAiServer {
            agent,
            settings: ServerSettings {
                base_url: url.clone(),
                ..settings.clone()
            },
            model: String::new(),
            api_key,
            max_n: AtomicU32::new(u32::MAX),
            logprobs: true,
            permits: Permits::new(settings.max_concurrency.max(1)),
            notes: Mutex::new(Vec::new()),
        };
        server.model = match &settings.model {
            Some(m) => m.clone(),
            None => server.only_model().map_err(unusable)?,
        };
        server.probe().map_err(unusable)?;
        Ok(Arc::new(server))
    }

    /// The model name requests carry.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What the server lacks and how the run degrades, in plain words (said once at start; new
    /// ones appear if the server later refuses an `n`).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether completions carry log-probabilities (f(r) is available).
    pub fn has_logprobs(&self) -> bool {
        self.logprobs
    }

    fn note(&self, line: String) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    fn only_model(&self) -> Result<String, String> {
        let body = self
            .call_once("GET", "/models", None)
            .map_err(|e| format!("GET /models: {}", describe(&e)))?;
        let ids: Vec<String> = body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "GET /models lists no model (answer: {}); set [model] model to the name the server serves",
                quote(&body.to_string())
            )),
            many => Err(format!(
                "the server serves {} models ({}); set [model] model to one of them",
                many.len(),
                many.join(", ")
            )),
        }
    }

    /// Asks for two short samples twice with one seed: learns `n`, log-probabilities, `seed`.
    fn probe(&mut self) -> Result<(), String> {
        let body = |n: u32| {
            json!({"model": self.model, "prompt": "def add(a, b):", "max_tokens": 8,
                   "temperature": 1.0, "top_p": 1.0, "n": n, "seed": 1234, "logprobs": 1})
        };
        let first = self
            .call_once("POST", "/completions", Some(&body(2)))
            .map_err(|e| format!("probe completion: {}", describe(&e)));
        let first = match first {
            Ok(v) => v,
            Err(_) => {
                // A server that refuses n = 2 outright: try one.
                let one = self
                    .call_once("POST", "/completions", Some(&body(1)))
                    .map_err(|e| format!("probe completion: {}", describe(&e)))?;
                self.max_n.store(1, Ordering::Relaxed);
                one
            }
        };
        let choices = parse_choices(&first).map_err(|why| format!("probe completion: {why}"))?;
        if choices.len() < 2 && self.max_n.load(Ordering::Relaxed) > 1 {
            self.max_n.store(1, Ordering::Relaxed);
        }
        if self.max_n.load(Ordering::Relaxed) == 1 {
            self.note(
                "server: it returns one choice per request (n is not supported): each of a \
                 request's n samples is asked for alone, with its own derived seed"
                    .into(),
            );
        }
        let served = choices.iter().all(|c| c.logprobs.is_some());
        self.logprobs = served && self.settings.logprobs;
        if !self.logprobs {
            let why = if self.settings.logprobs {
                "it returns no log-probabilities"
            } else {
                "log-probabilities are off ([model.server] logprobs = false)"
            };
            self.note(format!(
                "server: {why}: f(r) is unavailable, every completion's perplexity is recorded \
                 as 1, and r* ties fall to the selector's next key"
            ));
        }
        let again = self
            .call_once(
                "POST",
                "/completions",
                Some(&body(self.max_n.load(Ordering::Relaxed).min(2))),
            )
            .map_err(|e| format!("probe completion: {}", describe(&e)))
            .and_then(|v| parse_choices(&v).map_err(|why| format!("probe completion: {why}")))?;
        if again.first().map(|c| &c.text) != choices.first().map(|c| &c.text) {
            self.note(
                "server: the same seed gave different samples: `seed` is not honoured, so \
                 this run's samples are not reproducible"
                    .into(),
            );
        }
        Ok(())
    }

    /// One HTTP exchange, no retry.
    fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.settings.base_url);
        let mut request = self.agent.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let answer = match body {
            Some(b) => request
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => request.call(),
        };
        match answer {
            Ok(response) => {
                let text = response
                    .into_string()
                    .map_err(|e| CallError::Transient(format!("reading the answer: {e}")))?;
                serde_json::from_str(&text).map_err(|_| {
                    CallError::Fatal(format!("the answer is not JSON: {}", quote(&text)))
                })
            }
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                let why = format!("HTTP {code}: {}", quote(&text));
                Err(if code == 429 || code >= 500 {
                    CallError::Transient(why)
                } else if code == 400 && mentions_n(&text) {
                    CallError::RefusedN(why)
                } else {
                    CallError::Fatal(why)
                })
            }
            Err(ureq::Error::Transport(t)) => Err(CallError::Transient(t.to_string())),
        }
    }

    /// One HTTP exchange, transient failures retried with backoff for up to `retry_for`.
    fn call(&self, body: &Value) -> Result<Value, CallError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            match self.call_once("POST", "/completions", Some(body)) {
                Err(CallError::Transient(why)) => {
                    if started.elapsed() + wait > self.settings.retry_for {
                        return Err(CallError::Fatal(format!(
                            "{why} (still failing after {:.0} s of retries; [model] retry_for_s)",
                            started.elapsed().as_secs_f64()
                        )));
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    /// All `request.n` completions of one request (several HTTP requests when the server gives
    /// fewer choices per request than asked).
    fn complete(&self, text: &ModelText, request: &GenerationRequest) -> Generation {
        let prompt = render_with(text, &request.prompt)?;
        let p = &request.params;
        let mut out: Vec<Completion> = Vec::with_capacity(request.n as usize);
        let mut part = 0u64;
        while out.len() < request.n as usize {
            let want = (request.n as usize - out.len()) as u32;
            let n = want.min(self.max_n.load(Ordering::Relaxed)).max(1);
            let mut body = json!({
                "model": self.model,
                "prompt": prompt,
                "n": n,
                "max_tokens": p.max_tokens,
                "temperature": p.temperature,
                "top_p": p.top_p,
                "seed": derived_seed(p.seed, part),
            });
            if self.logprobs {
                body["logprobs"] = json!(1);
            }
            if !p.stop.is_empty() {
                body["stop"] = json!(p.stop);
            }
            if p.top_k > 0 {
                body["top_k"] = json!(p.top_k);
            }
            let _permit = self.permits.take();
            match self.call(&body) {
                Ok(answer) => {
                    let choices = parse_choices(&answer).map_err(server_error)?;
                    if choices.is_empty() {
                        return Err(server_error(format!(
                            "the answer has no choices: {}",
                            quote(&answer.to_string())
                        )));
                    }
                    let got = choices.len() as u32;
                    if got < n {
                        self.cap_n(got, n, &format!("returned {got}"));
                    }
                    for c in choices.into_iter().take(want as usize) {
                        out.push(self.completion(text, c));
                    }
                }
                Err(CallError::RefusedN(why)) if n > 1 => {
                    self.cap_n(n / 2, n, &format!("refused ({why})"))
                }
                Err(
                    CallError::RefusedN(why) | CallError::Fatal(why) | CallError::Transient(why),
                ) => {
                    return Err(server_error(why));
                }
            }
            part += 1;
        }
        Ok(out)
    }

    /// Lowers the samples asked per request to `cap` (at least 1); says so when that is news.
    /// `what` is what the server did when asked for `asked`.
    fn cap_n(&self, cap: u32, asked: u32, what: &str) {
        let cap = cap.max(1);
        if cap < self.max_n.fetch_min(cap, Ordering::Relaxed) {
            self.note(format!(
                "server: asked for n = {asked}, it {what}; at most {cap} samples per request from now on"
            ));
        }
    }

    fn completion(&self, text: &ModelText, choice: Choice) -> Completion {
        let logprobs = match &choice.logprobs {
            Some(lps) => lps.iter().copied().collect(),
            None => LogprobSummary {
                tokens: text
                    .tokenizer()
                    .encode(&choice.text, false)
                    .map_or(0, |ids| ids.len() as u32),
                sum_logprob: 0.0,
            },
        };
        Completion {
            text: choice.text,
            logprobs,
            finish: choice.finish,
        }
    }
}

/// One choice of a completion answer.
#[derive(Debug, Clone, PartialEq)]
struct Choice {
    text: String,
    finish: FinishReason,
    /// Per-token log-probabilities (`logprobs.token_logprobs`), when the server gave them.
    logprobs: Option<Vec<f64>>,
}

/// The choices of a `/v1/completions` answer, in `index` order.
fn parse_choices(answer: &Value) -> Result<Vec<Choice>, String> {
    let not_completion = || {
        format!(
            "the answer is not an OpenAI completion: {}",
            quote(&answer.to_string())
        )
    };
    let choices = answer["choices"].as_array().ok_or_else(not_completion)?;
    let mut out = Vec::with_capacity(choices.len());
    for (k, c) in choices.iter().enumerate() {
        let text = c["text"].as_str().ok_or_else(not_completion)?.to_string();
        let finish = match c["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            Some(_) => FinishReason::Stop,
            None => FinishReason::Unknown,
        };
        let logprobs = c["logprobs"]["token_logprobs"].as_array().map(|a| {
            a.iter()
                .map(|v| v.as_f64().unwrap_or(0.0))
                .collect::<Vec<f64>>()
        });
        let index = c["index"].as_u64().unwrap_or(k as u64);
        out.push((
            index,
            Choice {
                text,
                finish,
                logprobs,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// The seed of the `part`-th HTTP request of one generation request (part 0 keeps the seed).
fn derived_seed(seed: u64, part: u64) -> u64 {
    // splitmix64 of (seed, part); servers take seeds up to 2^63.
    if part == 0 {
        return seed & (u64::MAX >> 1);
    }
    let mut z = seed ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & (u64::MAX >> 1)
}

fn mentions_n(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("\"n\"")
        || lower.contains("'n'")
        || lower.contains(" n ")
        || lower.contains("n must")
        || lower.contains("best_of")
}

/// At most 300 characters of a server's answer, for an error message.
fn quote(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((cut, _)) => format!("{:?}…", &t[..cut]),
        None => format!("{t:?}"),
    }
}

fn describe(e: &CallError) -> &str {
    match e {
        CallError::Transient(w) | CallError::RefusedN(w) | CallError::Fatal(w) => w,
    }
}

fn server_error(message: impl ToString) -> BackendError {
    BackendError {
        backend: "openai".into(),
        message: message.to_string(),
    }
}

/// A counting semaphore: at most `n` requests in flight.
struct Permits {
    free: Mutex<usize>,
    returned: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n),
            returned: Condvar::new(),
        }
    }

    fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// One consumer's view of a shared server: its batches go out as concurrent requests (at most
/// the server's `max_concurrency` in flight over all consumers).
pub struct OpenAiGenerator {
    server: Arc<OpenAiServer>,
    text: Arc<ModelText>,
    clock: Arc<StageClock>,
}

impl OpenAiGenerator {
    pub fn new(server: Arc<OpenAiServer>, text: Arc<ModelText>, clock: Arc<StageClock>) -> Self {
        OpenAiGenerator {
            server,
            text,
            clock,
        }
    }
}

impl Generate for OpenAiGenerator {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Generation>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let threads = self
            .server
            .settings
            .max_concurrency
            .clamp(1, requests.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(request) = requests.get(i) else {
                            return;
                        };
                        let generation = self.server.complete(&self.text, request);
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(generation);
                    }
                });
            }
        });
        let out: Vec<Generation> = results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| Err(server_error("the request was not answered")))
            })
            .collect();
        let tokens = out
            .iter()
            .flatten()
            .flatten()
            .map(|c| u64::from(c.logprobs.tokens))
            .sum();
        self.clock.record(started, requests.len(), tokens);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_read_in_index_order_with_their_logprobs() {
        let answer = json!({"choices": [
            {"index": 1, "text": "b", "finish_reason": "length", "logprobs": {"token_logprobs": [-1.0, -0.5]}},
            {"index": 0, "text": "a", "finish_reason": "stop", "logprobs": null},
        ]});
        let c = parse_choices(&answer).unwrap();
        assert_eq!(c[0].text, "a");
        assert_eq!(c[0].finish, FinishReason::Stop);
        assert_eq!(c[0].logprobs, None);
        assert_eq!(c[1].finish, FinishReason::Length);
        assert_eq!(c[1].logprobs, Some(vec![-1.0, -0.5]));
    }

    #[test]
    fn garbage_is_refused_with_the_answer_quoted() {
        for garbage in [
            json!({"error": "oops"}),
            json!([1, 2]),
            json!({"choices": [{"txt": 1}]}),
        ] {
            let why = parse_choices(&garbage).unwrap_err();
            assert!(
                why.starts_with("the answer is not an OpenAI completion"),
                "{why}"
            );
        }
        let long = "x".repeat(5000);
        assert!(quote(&long).chars().count() < 310);
    }

    #[test]
    fn derived_seeds_keep_the_first_and_differ_after() {
        assert_eq!(derived_seed(42, 0), 42);
        let seeds: std::collections::BTreeSet<u64> = (0..64).map(|k| derived_seed(42, k)).collect();
        assert_eq!(seeds.len(), 64);
        assert!(seeds.iter().all(|s| *s < 1 << 63));
    }

    /// A real HTTP server on 127.0.0.1 that serves `GET /models` and answers each completion
    /// with `answer(body)` (status, JSON text); it counts the completion requests.
    fn serve(
        answer: impl Fn(&Value) -> (u16, String) + Send + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let (status, text) = if first.starts_with("GET /v1/models") {
                    (200, r#"{"data": [{"id": "m"}]}"#.to_string())
                } else {
                    seen.fetch_add(1, Ordering::SeqCst);
                    answer(&serde_json::from_slice(&body).unwrap())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        (url, count)
    }

    fn settings(base_url: String) -> ServerSettings {
        ServerSettings {
            base_url,
            model: None,
            api_key_env: None,
            max_concurrency: 2,
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(5),
            logprobs: true,
        }
    }

    fn request(n: u32) -> GenerationRequest {
        GenerationRequest {
            prompt: ucoder_operators::Prompt::Text("x".into()),
            n,
            params: ucoder_operators::SamplingParams {
                max_tokens: 4,
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                seed: 9,
                stop: vec![],
            },
        }
    }

    fn choices(n: u64, logprobs: bool) -> String {
        let lp = if logprobs {
            json!({"token_logprobs": [-0.5, -0.5]})
        } else {
            Value::Null
        };
        let c: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "text": format!("s{i}"), "finish_reason": "stop", "logprobs": lp}))
            .collect();
        json!({"choices": c}).to_string()
    }

    #[test]
    fn a_server_that_refuses_large_n_gets_it_halved_and_the_run_is_told() {
        let (url, count) = serve(|body| {
            let n = body["n"].as_u64().unwrap();
            if n > 3 {
                (
                    400,
                    r#"{"error": {"message": "n must be at most 3"}}"#.into(),
                )
            } else {
                (200, choices(n, true))
            }
        });
        let server = OpenAiServer::connect(settings(url)).unwrap();
        let text = ModelText::load(&crate::models::test_model().unwrap()).unwrap();
        let request = request(16);
        let before = count.load(Ordering::SeqCst);
        let got = server.complete(&text, &request).unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(got[0].logprobs.tokens, 2);
        // 16 refused, 8 refused, 4 refused, then 2 per request (the cap halves to 2).
        assert_eq!(count.load(Ordering::SeqCst) - before, 3 + 8);
        assert!(
            server
                .notes()
                .iter()
                .any(|n| n.contains("n = 16") && n.contains("at most 8"))
        );
        assert!(server.notes().iter().any(|n| n.contains("at most 2")));
    }

    #[test]
    fn a_server_without_n_or_logprobs_is_said_and_still_gives_n_samples() {
        let (url, _count) = serve(|_| (200, choices(1, false)));
        let server = OpenAiServer::connect(settings(url)).unwrap();
        let notes = server.notes().join("\n");
        assert!(notes.contains("one choice per request"), "{notes}");
        assert!(notes.contains("no log-probabilities"), "{notes}");
        assert!(!server.has_logprobs());
        let text = ModelText::load(&crate::models::test_model().unwrap()).unwrap();
        let request = request(3);
        let got = server.complete(&text, &request).unwrap();
        assert_eq!(got.len(), 3);
        // Without log-probabilities the tokens are counted with the model's tokenizer.
        assert!(
            got.iter()
                .all(|c| c.logprobs.tokens > 0 && c.logprobs.sum_logprob == 0.0)
        );
    }

    #[test]
    fn logprobs_off_are_not_asked_for_and_the_run_is_told() {
        let asked = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&asked);
        let (url, _count) = serve(move |body| {
            if body.get("logprobs").is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let asked_for = body.get("logprobs").is_some();
            (200, choices(body["n"].as_u64().unwrap(), asked_for))
        });
        let mut s = settings(url);
        s.logprobs = false;
        let server = OpenAiServer::connect(s).unwrap();
        assert!(!server.has_logprobs());
        assert!(server.notes().join("\n").contains("logprobs = false"));
        let probes = asked.load(Ordering::SeqCst);
        let text = ModelText::load(&crate::models::test_model().unwrap()).unwrap();
        let got = server.complete(&text, &request(2)).unwrap();
        assert_eq!(
            asked.load(Ordering::SeqCst),
            probes,
            "completions must not ask for logprobs"
        );
        assert!(got.iter().all(|c| c.logprobs.sum_logprob == 0.0));
    }

    #[test]
    fn an_unreachable_server_and_a_missing_key_are_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = OpenAiServer::connect(settings(format!("http://127.0.0.1:{port}/v1")))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        let mut s = settings("http://127.0.0.1:1/v1".into());
        s.api_key_env = Some("UCODER_FLOW_TEST_NO_SUCH_KEY".into());
        let err = OpenAiServer::connect(s).err().unwrap().to_string();
        assert!(
            err.contains("UCODER_FLOW_TEST_NO_SUCH_KEY") && err.contains("not set"),
            "{err}"
        );
    }

    #[test]
    fn permits_bound_what_is_in_flight() {
        let permits = Arc::new(Permits::new(2));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _p = permits.take();
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
