//! Builds the trading page (`web/`, through `scripts/web.sh build`) and embeds its files in
//! the binary, so `fulgur` serves it with nothing beside it. It runs again only when the
//! page's sources or its lockfile change. A machine that cannot build it (no Node.js and no
//! way to install it, no npm registry) still builds `fulgur`, with a page that says why.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for p in [
        "web/src",
        "web/index.html",
        "web/build.mjs",
        "web/package.json",
        "web/package-lock.json",
        "scripts/web.sh",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let site = out.join("web");
    let built = Command::new("bash")
        .arg("scripts/web.sh")
        .arg("build")
        .arg(&site)
        .output();
    let failure = match built {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => Some(format!("bash scripts/web.sh: {e}")),
    };
    if let Some(why) = failure {
        for line in why.lines().filter(|l| !l.trim().is_empty()).take(20) {
            println!("cargo:warning=web page not built: {line}");
        }
        let _ = std::fs::remove_dir_all(&site);
        std::fs::create_dir_all(&site).expect("OUT_DIR is writable");
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Fulgur</title><link rel=icon href=\"data:,\">\
             <h1>The trading page was not built</h1><p>Run <code>scripts/web.sh deps</code> \
             (it needs Node.js 20 and the npm registry), then build again.</p><pre>{}</pre>",
            why.replace('&', "&amp;").replace('<', "&lt;")
        );
        std::fs::write(site.join("index.html"), page).expect("OUT_DIR is writable");
    }
    let mut files = Vec::new();
    collect(&site, &site, &mut files);
    files.sort();
    let mut code = String::from(
        "/// The page's files: path below the site root, content type, bytes.\n\
         pub static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        code += &format!(
            "    ({rel:?}, {:?}, include_bytes!({:?})),\n",
            content_type(rel),
            abs.display().to_string()
        );
    }
    code += "];\n";
    std::fs::write(out.join("web_files.rs"), code).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("the built page is readable") {
        let path = entry.expect("the built page is readable").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).expect("below the root");
            files.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
