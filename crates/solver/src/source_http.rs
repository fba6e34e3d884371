//! HTTP(S) sources: one file fetched into a new snapshot, as BuildKit's HTTP source does for
//! `ADD <url>`. The file's mtime comes from `Last-Modified` when the server sends one.

use kiln_oci::{Digest, Sha256Writer};
use std::fs::{File, FileTimes};
use std::io::{self, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};
use ureq::Agent;

/// What a fetch wrote.
pub(crate) struct Fetched {
    pub digest: Digest,
    pub size: u64,
}

/// Fetches `url` into `dir/filename` with `mode`, checking `checksum` when given.
pub(crate) fn fetch(
    url: &str,
    dir: &Path,
    filename: &str,
    mode: u32,
    checksum: Option<&Digest>,
    timeout: Duration,
) -> Result<Fetched, String> {
    let t = Some(timeout);
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(t)
        .timeout_connect(t)
        .timeout_send_request(t)
        .timeout_recv_response(t)
        .timeout_per_read(t)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("{url}: {}", transport_error(e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "{url}: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string());
    }
    let mtime = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let name = filename.trim_start_matches('/');
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("{url}: invalid file name {filename:?}"));
    }
    let path = dir.join(name);
    let file = File::create(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut w = Sha256Writer::new(BufWriter::new(file));
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    io::copy(&mut reader, &mut w).map_err(|e| format!("{url}: reading the response: {e}"))?;
    let (digest, size, buf) = w.finish();
    let file = buf
        .into_inner()
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    if let Some(want) = checksum {
        if *want != digest {
            return Err(format!(
                "{url}: digest mismatch: the --checksum is {want} but the content is {digest}"
            ));
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(t) = mtime {
        file.set_times(FileTimes::new().set_modified(t).set_accessed(t))
            .map_err(|e| format!("setting the mtime of {}: {e}", path.display()))?;
    }
    file.sync_all().ok();
    Ok(Fetched { digest, size })
}

fn transport_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            "connection refused".to_string()
        }
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => "timed out".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 7231's IMF-fixdate).
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days as u64 * 86400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        let t = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH);
        assert!(parse_http_date("yesterday").is_none());
        assert!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT").is_none());
    }
}
