#![allow(unreachable_pub, dead_code)]
//! Expands `corpus.txt` into log messages with their true template, deterministically.
//! Shared by the grouping accuracy test and the grouping benchmark.

/// One generated message.
pub struct Line {
    pub system: &'static str,
    /// Index of the true template within its system.
    pub template: usize,
    pub message: String,
}

pub const CORPUS: &str = include_str!("corpus.txt");

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The templates of each system, in file order.
pub fn systems() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for line in CORPUS.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name, Vec::new()));
        } else if let Some((_, templates)) = out.last_mut() {
            templates.push(line);
        }
    }
    out
}

/// `per_template_max` messages at most per template (at least a fifth of it), shuffled
/// within each system.
pub fn generate(seed: u64, per_template_max: u64) -> Vec<Line> {
    let mut rng = Rng::new(seed);
    let mut lines = Vec::new();
    for (system, templates) in systems() {
        let start = lines.len();
        for (t, template) in templates.iter().enumerate() {
            let n = per_template_max / 5 + rng.below(per_template_max - per_template_max / 5 + 1);
            for _ in 0..n {
                lines.push(Line {
                    system,
                    template: t,
                    message: fill(template, &mut rng),
                });
            }
        }
        let part = &mut lines[start..];
        for i in (1..part.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            part.swap(i, j);
        }
    }
    lines
}

fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = at + rest[at..].find('}').expect("closed placeholder");
        let spec = &rest[at + 2..end];
        match spec.split_once(':') {
            Some(("word", choices)) => {
                let choices: Vec<&str> = choices.split('|').collect();
                out.push_str(rng.pick(&choices));
            }
            _ => value(spec, rng, &mut out),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

const USERS: &[&str] = &[
    "root", "admin", "alice", "bob", "hadoop", "oracle", "test", "guest", "ubuntu", "deploy",
    "postgres", "www-data", "nagios", "git", "ftpuser", "carol", "support",
];
const HOSTS: &[&str] = &[
    "alpha.example.org",
    "mail.corp.local",
    "db-primary",
    "web-frontend",
    "cache.internal",
    "gateway",
    "bastion.example.com",
    "lb-east",
    "proxy.cse.cuhk.edu.hk",
    "www.google.com",
    "api.github.com",
    "mesos-master",
    "storage-west",
];
const WORDS: &[&str] = &[
    "var", "log", "data", "tmp", "app", "home", "usr", "lib", "etc", "config", "cache", "user",
    "images", "index", "static", "api", "v", "release", "job",
];
const EXTS: &[&str] = &["", ".log", ".txt", ".html", ".php", ".jar", ".so", ".conf"];
const PROCS: &[&str] = &[
    "chrome.exe",
    "firefox.exe",
    "svchost.exe",
    "Dropbox.exe",
    "outlook.exe",
    "Skype.exe",
    "git-remote-https.exe",
    "putty.exe",
];
const PKGS: &[&str] = &[
    "com.android.systemui",
    "com.tencent.mm",
    "com.google.android.gms",
    "android",
    "com.whatsapp",
    "com.android.phone",
];
const CLASSES: &[&str] = &[
    "com.tencent.mm.ui.LauncherUI",
    ".MainActivity",
    "com.android.settings.Settings",
    ".plugin.sns.ui.SnsTimeLineUI",
    "com.google.android.gms.chimera.GmsIntentOperationService",
];

fn value(kind: &str, rng: &mut Rng, out: &mut String) {
    use std::fmt::Write;
    let digits = |rng: &mut Rng| 10u64.pow(1 + rng.below(9) as u32);
    let ip = |rng: &mut Rng| {
        format!(
            "{}.{}.{}.{}",
            1 + rng.below(254),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        )
    };
    let path = |rng: &mut Rng| {
        let mut p = String::new();
        for _ in 0..1 + rng.below(4) {
            p.push('/');
            p.push_str(rng.pick(WORDS));
            if rng.below(3) == 0 {
                let _ = write!(p, "{}", rng.below(1000));
            }
        }
        p.push_str(rng.pick(EXTS));
        p
    };
    let host = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            rng.pick(HOSTS).to_string()
        } else {
            format!("node-{}.cluster.local", rng.below(500))
        }
    };
    let s = match kind {
        "int" => {
            let d = digits(rng);
            rng.below(d).to_string()
        }
        "float" => format!("{}.{}", rng.below(1000), rng.below(100)),
        "hex" => format!("0x{:x}", rng.next() >> rng.below(40)),
        "ip" => ip(rng),
        "ipport" => format!("{}:{}", ip(rng), 1024 + rng.below(60000)),
        "blk" => {
            let sign = if rng.below(2) == 0 { "-" } else { "" };
            format!("blk_{sign}{}", rng.next() >> 1)
        }
        "path" => path(rng),
        "winpath" => format!(
            "C:\\Windows\\{}\\{}.dll",
            rng.pick(&["Servicing", "System32", "WinSxS\\amd64_microsoft"]),
            rng.pick(&["CbsCore", "wcp", "sqmapi"])
        ),
        "user" => rng.pick(USERS).to_string(),
        "host" => host(rng),
        "proc" => rng.pick(PROCS).to_string(),
        "pkg" => rng.pick(PKGS).to_string(),
        "cls" => rng.pick(CLASSES).to_string(),
        "uidname" => format!("u0a{}", rng.below(300)),
        "attempt" => format!(
            "attempt_{}_{:04}_{}_{:06}_{}",
            1_445_000_000_000 + rng.below(1_000_000),
            rng.below(100),
            rng.pick(&["m", "r"]),
            rng.below(100),
            rng.below(3)
        ),
        "size" => format!(
            "{}.{} {}",
            rng.below(1000),
            rng.below(10),
            rng.pick(&["B", "KB", "MB", "GB"])
        ),
        "clock" | "hms" => format!(
            "{:02}:{:02}:{:02}",
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
        "dev" => rng.pick(&["dm-0", "sda1", "nvme0n1p2"]).to_string(),
        "iface" => rng.pick(&["eth0", "eth1", "wlan0", "enp3s0"]).to_string(),
        "ver" => format!("6.1.{}.{}", 7600 + rng.below(10), rng.below(30000)),
        "uuid" => format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            rng.next() as u32,
            rng.next() as u16,
            rng.next() as u16,
            rng.next() as u16,
            rng.next() >> 16
        ),
        "apachedate" => format!(
            "{:02}/{}/2025:{:02}:{:02}:{:02} +0000",
            1 + rng.below(28),
            rng.pick(&["Jan", "Feb", "Mar", "Oct", "Nov"]),
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
        "url" => format!("http://{}:{}{}", ip(rng), 8000 + rng.below(100), path(rng)),
        "agent" => rng
            .pick(&[
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                "curl/7.68.0",
                "Go-http-client/1.1",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            ])
            .to_string(),
        "image" => format!(
            "registry.example.com/{}/{}:{}.{}.{}",
            rng.pick(&["team", "infra"]),
            rng.pick(&["api", "worker", "web"]),
            rng.below(3),
            rng.below(20),
            rng.below(10)
        ),
        "pod" => {
            let base = rng.pick(&["api", "worker", "web"]);
            let mut p = format!("{base}-");
            for _ in 0..9 {
                p.push(b"abcdefghjkmnpqrstvwxz0123456789"[rng.below(31) as usize] as char);
            }
            p
        }
        "node" => {
            if rng.below(2) == 0 {
                format!("ip-10-0-{}-{}.ec2.internal", rng.below(256), rng.below(256))
            } else {
                rng.pick(&["worker-east", "worker-west", "control-plane"])
                    .to_string()
            }
        }
        "dur" => format!("{}.{}s", rng.below(60), rng.below(1000)),
        other => panic!("unknown placeholder kind '{other}'"),
    };
    out.push_str(&s);
}
