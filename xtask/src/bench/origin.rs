//! The nginx origin every HTTP suite forwards to (CPU 1: /small, /1k, /100k) and the nginx
//! process plumbing the l7 suite's nginx proxy shares with it.

use super::l7::{HOST, ORIGIN, ORIGIN_2};
use super::proc::{spawn_pinned, wait_http};
use super::{portable, save_config, Env};
use anyhow::{Context, Result};
use lb_tests::process::ChildGuard;
use std::path::Path;
use std::time::Duration;

/// The nginx origin on CPU 1 serving /small (3 B), /1k and /100k; ready when it returns.
pub(super) fn start_origin(env: &Env) -> Result<ChildGuard> {
    let www = env.scratch.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("1k"), vec![b'x'; 1024])?;
    std::fs::write(www.join("100k"), vec![b'x'; 100 * 1024])?;
    let origin = start_nginx(env, "origin", 1, &origin_conf(env, &www))?;
    wait_http(ORIGIN.parse()?, HOST, "/small", Duration::from_secs(10))?;
    Ok(origin)
}

pub(super) fn start_nginx(env: &Env, name: &str, cpu: usize, conf: &str) -> Result<ChildGuard> {
    let path = save_config(env, &format!("{name}.conf"), &portable(conf, &env.scratch))?;
    let live = env.scratch.join(format!("{name}.conf"));
    std::fs::write(&live, conf)?;
    let live_s = live.display().to_string();
    spawn_pinned(
        cpu,
        Path::new("/usr/sbin/nginx"),
        &["-c", &live_s, "-g", "daemon off;"],
        &env.scratch.join(format!("{name}.log")),
    )
    .with_context(|| format!("nginx with {}", path.display()))
}

pub(super) fn nginx_common(env: &Env, name: &str) -> String {
    let s = env.scratch.display();
    format!(
        "worker_processes 1;\nerror_log {s}/{name}-error.log warn;\npid {s}/{name}.pid;\nevents {{ worker_connections 4096; }}\n"
    ) + &format!(
        "http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {s}/{name}-body;\n  proxy_temp_path {s}/{name}-proxy;\n  fastcgi_temp_path {s}/{name}-fcgi;\n  uwsgi_temp_path {s}/{name}-uwsgi;\n  scgi_temp_path {s}/{name}-scgi;\n"
    )
}

fn origin_conf(env: &Env, www: &Path) -> String {
    nginx_common(env, "origin")
        + &format!(
            "  server {{\n    listen {ORIGIN};\n    listen {ORIGIN_2};\n    root {};\n    location = /small {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            www.display()
        )
}
