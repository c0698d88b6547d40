//! The files under `deploy/`: the systemd unit passes `systemd-analyze verify` (and stays
//! hardened), the example config passes `check-config`, and `install.sh` stages an installation
//! idempotently without overwriting an operator's config or secrets.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lienwatch");

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether `systemd-analyze` can run. Missing, a local run skips the unit checks with a message;
/// under CI (`CI=true`, which CI services set and .ci/run installs the tool for) it fails, so
/// a broken install never passes as a skip.
fn have_systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is not installed, and CI=true: the unit cannot be verified"
        );
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (apt-get install systemd); the unit was not verified"
        );
    }
    found
}

/// The unit with ExecStart pointing at the binary under test: `verify` insists that the
/// executable exists, and the installed path does not exist on a build machine.
fn unit_copy(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let unit = read(&deploy("lienwatch.service"));
    assert!(unit
        .contains("ExecStart=/usr/local/bin/lienwatch run --config /etc/lienwatch/lienwatch.toml"));
    let unit = edit(unit.replace("/usr/local/bin/lienwatch", BIN));
    let p = dir.join("lienwatch.service");
    std::fs::write(&p, unit).expect("write unit copy");
    p
}

/// `systemd-analyze verify`: problems in the unit are printed (prefixed with the unit's path or
/// name) even when the exit status is 0, so any output naming the unit counts as a failure.
/// Messages about other units (this machine's own) are ignored.
fn verify(unit: &Path) -> Result<(), String> {
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ours: Vec<&str> = all.lines().filter(|l| l.contains("lienwatch")).collect();
    if o.status.success() && ours.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {}:\n{}",
            unit.display(),
            text(&o)
        ))
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), |u| u);
    if let Err(e) = verify(&unit) {
        panic!("{e}");
    }

    // The check itself catches the mistakes `verify` only warns about.
    let typo = unit_copy(dir.path(), |u| {
        u.replace("ProtectSystem=strict", "ProtectSystm=strict")
    });
    let e = verify(&typo).expect_err("a misspelt directive must fail the check");
    assert!(e.contains("ProtectSystm"), "{e}");
    let bad = unit_copy(dir.path(), |u| {
        u.replace("RestrictRealtime=yes", "RestrictRealtime=maybe")
    });
    assert!(verify(&bad).is_err(), "a bad value must fail the check");
}

#[test]
fn unit_hardening_exposure_stays_low() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), |u| u);
    // Exposure is scored 0.0 (locked down) .. 10.0; the unit scores about 1.2.
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let out = text(&o);
    if out.contains("unrecognized option") || out.contains("Unknown option") {
        eprintln!("SKIPPED: this systemd-analyze has no offline security scoring (systemd < 250)");
        return;
    }
    assert!(o.status.success(), "exposure above 2.0:\n{out}");
}

/// `Key=value` lines of the unit, in order (repeated keys kept).
fn unit_settings() -> Vec<(String, String)> {
    read(&deploy("lienwatch.service"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn unit_has_what_the_daemon_and_operations_rely_on() {
    let s = unit_settings();
    let get = |k: &str| -> Vec<&str> {
        s.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |k: &str| -> &str {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}= should be set exactly once: {v:?}");
        v[0]
    };
    // Readiness and the watchdog are what lienwatch implements (src/service.rs).
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert!(one("WatchdogSec").ends_with('s'));
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/lienwatch run --config /etc/lienwatch/lienwatch.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(
        one("RestartPreventExitStatus"),
        "2",
        "bad config: no restart loop"
    );
    assert!(!one("TimeoutStopSec").is_empty());
    // Where the example config puts things.
    assert_eq!(one("StateDirectory"), "lienwatch");
    assert_eq!(one("ConfigurationDirectory"), "lienwatch");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    // Runs as the sysusers.d user.
    assert_eq!(one("User"), "lienwatch");
    let sysusers = read(&deploy("lienwatch.sysusers"));
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "lienwatch"])),
        "{sysusers}"
    );
    // Hardening a reviewer expects.
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert_eq!(
        get("SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );
    assert!(
        get("ReadWritePaths").is_empty(),
        "StateDirectory= is the only writable path"
    );
}

fn check_config(path: &Path) -> Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("LIENWATCH_CONFIG")
        .output()
        .expect("run lienwatch check-config")
}

/// A real (self-signed) CA certificate: `ca_file`s are parsed as PEM, not only read.
const EXAMPLE_CA: &str = include_str!("../common/example-ca.pem");

/// The example with its product paths moved under `root` (as if installed there), and the
/// secret files it names created. `all` also enables every commented-out `#key = value` line.
fn example_under(root: &Path, all: bool) -> PathBuf {
    let text = read(&deploy("lienwatch.toml"));
    for p in [
        "path = \"/var/lib/lienwatch\"",
        "token_file = \"/etc/lienwatch/admin.token\"",
        "secret_file = \"/etc/lienwatch/webhook.secret\"",
    ] {
        assert!(text.contains(p), "the example should say {p}");
    }
    let etc = root.join("etc/lienwatch");
    std::fs::create_dir_all(&etc).unwrap();
    for (f, content) in [
        ("admin.token", "0123456789abcdef0123456789abcdef\n"),
        ("webhook.secret", "fedcba9876543210fedcba9876543210\n"),
        ("mqtt.password", "broker-password\n"),
        ("mqtt-ca.pem", EXAMPLE_CA),
        ("collections-ca.pem", EXAMPLE_CA),
    ] {
        std::fs::write(etc.join(f), content).unwrap();
    }
    let mut text = text
        .replace("/etc/lienwatch/", &format!("{}/", etc.display()))
        .replace(
            "/var/lib/lienwatch",
            &root.join("data").display().to_string(),
        );
    if all {
        text = uncomment_all(&text);
    }
    let p = etc.join(if all { "all.toml" } else { "lienwatch.toml" });
    std::fs::write(&p, text).unwrap();
    p
}

/// `#key = value` and `#[table]` lines become settings; `# prose` stays a comment.
fn uncomment_all(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty()
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                    }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_config_passes_check_config() {
    let root = tempfile::tempdir().unwrap();
    for all in [false, true] {
        let p = example_under(root.path(), all);
        let o = check_config(&p);
        assert_eq!(o.status.code(), Some(0), "{}:\n{}", p.display(), text(&o));
    }

    // The shipped file itself, as it is: valid wherever its secret files exist (an installed
    // host); elsewhere, the only complaint is the first secret file it cannot read.
    let shipped = deploy("lienwatch.toml");
    let o = check_config(&shipped);
    let installed = [
        "/etc/lienwatch/admin.token",
        "/etc/lienwatch/webhook.secret",
    ]
    .iter()
    .all(|f| std::fs::read_to_string(f).is_ok_and(|s| !s.trim().is_empty()));
    if installed {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            err.contains("token_file") && err.contains("/etc/lienwatch/admin.token")
                || err.contains("secret_file") && err.contains("/etc/lienwatch/webhook.secret"),
            "the shipped example failed for another reason than a missing secret file:\n{}",
            text(&o)
        );
    }
}

/// Dotted paths of every key in a TOML document (`listener.bind`, `mqtt.subscription.topic`).
fn keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if matches!(v, toml::Value::Table(_))
                    || matches!(v, toml::Value::Array(a) if a.first().is_some_and(toml::Value::is_table))
                {
                    keys(v, &path, out);
                } else {
                    out.insert(path);
                }
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                keys(v, prefix, out);
            }
        }
        _ => {}
    }
}

#[test]
fn example_config_documents_every_key() {
    let root = tempfile::tempdir().unwrap();
    let all: toml::Value = toml::from_str(&read(&example_under(root.path(), true))).unwrap();
    let mut found = BTreeSet::new();
    keys(&all, "", &mut found);
    // Every key of src/config.rs, except the inline-secret alternatives (`admin.token`,
    // `webhook.secret`, `mqtt.password`), which the example mentions in prose only so that an
    // operator does not enable both forms at once.
    let expected: BTreeSet<String> = [
        "storage.path",
        "storage.cache_mb",
        "storage.commit_window",
        "ingest.accept_unknown",
        "ingest.jt808_auth_key",
        "ingest.idle_timeout",
        "ingest.max_connections",
        "ingest.max_frame",
        "listener.protocol",
        "listener.bind",
        "listener.transport",
        "listener.utc_offset",
        "listener.idle_timeout",
        "listener.max_connections",
        "mqtt.url",
        "mqtt.client_id",
        "mqtt.username",
        "mqtt.password_file",
        "mqtt.ca_file",
        "mqtt.keep_alive",
        "mqtt.max_inflight",
        "mqtt.session_expiry",
        "mqtt.max_packet_size",
        "mqtt.subscription.topic",
        "mqtt.subscription.format",
        "admin.bind",
        "admin.token_file",
        "rules.silence_after",
        "rules.silence_after_wireless",
        "rules.geofence_margin_m",
        "rules.startup_grace",
        "rules.risk_zone_dwell_after",
        "rules.separation_m",
        "rules.timezone",
        "rules.stay_radius_m",
        "rules.stay_min",
        "rules.long_stay_after",
        "storage.history_retention",
        "risk.points.silent_overdue",
        "console.tile_url",
        "webhook.url",
        "webhook.secret_file",
        "webhook.types",
        "webhook.name",
        "webhook.timeout",
        "webhook.max_age",
        "webhook.max_in_flight",
        "log.level",
        "log.format",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    let text = read(&deploy("lienwatch.toml"));
    for inline in ["`token = ", "`secret = ", "`password = "] {
        assert!(text.contains(inline), "the example should mention {inline}");
    }

    // Listeners: every protocol, and Teltonika over UDP too.
    let cfg =
        lienwatch::config::Config::parse(&read(&example_under(root.path(), false)), "example")
            .expect("parses");
    let ls = &cfg.listeners;
    let names: BTreeSet<_> = ls.iter().map(|l| l.protocol.name()).collect();
    for p in ["gt06", "jt808", "teltonika", "h02"] {
        assert!(
            names.iter().any(|n| n.starts_with(p)),
            "no {p} listener: {names:?}"
        );
    }
    assert!(ls
        .iter()
        .any(|l| l.transport == lienwatch::config::Transport::Udp));
    assert_eq!(cfg.storage.path, root.path().join("data"));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn install(stage: &Path) -> Output {
    Command::new("bash")
        .arg(deploy("install.sh"))
        .args(["--bin", BIN, "--prefix", "/opt/lienwatch", "--destdir"])
        .arg(stage)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .env_remove("LIENWATCH_BIN")
        .output()
        .expect("run install.sh")
}

#[test]
fn install_script_stages_idempotently_and_keeps_config() {
    let stage = tempfile::tempdir().unwrap();
    let s = stage.path();
    let o = install(s);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Next steps"));

    let bin = s.join("opt/lienwatch/bin/lienwatch");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    let unit = read(&s.join("etc/systemd/system/lienwatch.service"));
    assert!(
        unit.contains(
            "\nExecStart=/opt/lienwatch/bin/lienwatch run --config /etc/lienwatch/lienwatch.toml\n"
        ),
        "ExecStart follows --prefix:\n{unit}"
    );
    assert_eq!(
        read(&s.join("usr/lib/sysusers.d/lienwatch.conf")),
        read(&deploy("lienwatch.sysusers"))
    );
    let etc = s.join("etc/lienwatch");
    let config = etc.join("lienwatch.toml");
    assert_eq!(read(&config), read(&deploy("lienwatch.toml")));
    assert_eq!(mode(&config), 0o640);
    let mut secrets = Vec::new();
    for f in ["admin.token", "webhook.secret"] {
        let p = etc.join(f);
        assert_eq!(mode(&p), 0o640, "{f}");
        let v = read(&p).trim().to_string();
        assert!(
            v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()),
            "{f}: {v:?}"
        );
        secrets.push(v);
    }
    assert_ne!(secrets[0], secrets[1]);

    // The staged config, with its paths pointing into the stage, is valid with these secrets.
    let staged_cfg = etc.join("staged.toml");
    std::fs::write(
        &staged_cfg,
        read(&config)
            .replace("/etc/lienwatch/", &format!("{}/", etc.display()))
            .replace(
                "/var/lib/lienwatch",
                &s.join("var/lib/lienwatch").display().to_string(),
            ),
    )
    .unwrap();
    let o = check_config(&staged_cfg);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Upgrade: an edited config and existing secrets are kept; the new example lands beside it.
    let edited = format!("{}\n# local edit\n", read(&config));
    std::fs::write(&config, &edited).unwrap();
    let o = install(s);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read(&config), edited, "install.sh overwrote the config");
    assert_eq!(
        read(&etc.join("lienwatch.toml.example")),
        read(&deploy("lienwatch.toml"))
    );
    for (f, v) in ["admin.token", "webhook.secret"].iter().zip(&secrets) {
        assert_eq!(read(&etc.join(f)).trim(), v, "install.sh replaced {f}");
    }
    let leftovers: Vec<_> = walk(s)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Refuses bad usage instead of guessing.
    let o = Command::new("bash")
        .arg(deploy("install.sh"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
