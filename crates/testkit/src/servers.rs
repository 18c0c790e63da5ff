//! Servers of one test's own, which the test may stop and start again to play an outage:
//! Redis and PostgreSQL on free ports of 127.0.0.1.

use tempfile::TempDir;

/// A Redis server of one test's own (the `redis-server` the test setup installs), on a
/// free port of 127.0.0.1, that the test may stop and start again to play an outage.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): connections drop, nothing answers on the port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test-services.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not listen on port {}", self.port);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL server of one test's own (the installed PostgreSQL binaries), in a
/// temporary directory, on a free port of 127.0.0.1, that the test may stop and start
/// again to play an outage. Trust authentication; the database `postgres`.
pub struct PrivatePostgres {
    dir: TempDir,
    bin: std::path::PathBuf,
    port: u16,
    running: bool,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (scripts/test-services.sh)")
            .filter_map(Result::ok)
            .map(|version| version.path().join("bin"))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            dir,
            bin,
            port,
            running: false,
        };
        server.own_directory();
        let data = server.data_dir();
        server.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections drop, nothing
    /// answers on the port.
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data_dir();
            self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
            self.running = false;
        }
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let data = self.data_dir();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["start", "-D", &data, "-l", &log, "-w", "-o", &options],
        );
        self.running = true;
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// PostgreSQL refuses to run as root: as root, the directory goes to `postgres`.
    fn own_directory(&self) {
        if !running_as_root() {
            return;
        }
        let ids = |flag: &str| -> u32 {
            let output = std::process::Command::new("id")
                .args([flag, "postgres"])
                .output()
                .expect("id");
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .expect("the postgres system user exists")
        };
        std::os::unix::fs::chown(self.dir.path(), Some(ids("-u")), Some(ids("-g")))
            .expect("giving the directory to postgres");
    }

    /// Runs one PostgreSQL program (as `postgres` when this process is root).
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .expect("running a PostgreSQL program");
        assert!(
            output.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
