//! A real OpenAI-compatible server for tests: llama.cpp's, as `llama-cpp-python[server]`, built
//! from its PyPI sdist by `install.sh` into a virtual environment under the target folder (once;
//! `.ci/run` starts that build early so it overlaps compilation). It listens on 127.0.0.1 only.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The venv's interpreter, with the server installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llama-server");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/llama_server/install.sh");
        let base = ucoder_flow::sandbox::real_python().expect("a Python 3 interpreter");
        let out = Command::new("bash")
            .arg(script)
            .arg(&venv)
            .env("PYTHON", base)
            .output()
            .expect("run install.sh");
        assert!(
            out.status.success(),
            "building llama-cpp-python[server] failed (it needs PyPI and a C++ compiler):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv.join("bin/python")
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server and its log.
pub struct Server {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts the server on `port` with `model` and waits until it answers `GET /v1/models`.
    pub fn start(model: &Path, port: u16, log: PathBuf) -> Server {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(python())
            .args([
                "-m",
                "llama_cpp.server",
                "--host",
                "127.0.0.1",
                "--n_ctx",
                "4096",
            ])
            .args(["--n_threads", "2", "--port", &port.to_string(), "--model"])
            .arg(model)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the llama.cpp server");
        let mut server = Server { child, log, port };
        server.wait_ready(Duration::from_secs(180));
        server
    }

    fn wait_ready(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited ({status}):\n{}", self.log_text());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "the server did not come up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The base URL of its OpenAI API.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Completion requests it answered so far (from its access log).
    pub fn completions_served(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("POST /v1/completions") && l.contains(" 200"))
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
