//! Choosing one platform's manifest from an index, the way containerd's platform matcher
//! does: compare normalised os/architecture/variant (`arm64/v8` is `arm64`, `arm` is
//! `arm/v7`), and let an ARM machine fall back to older variants it can run.

use kiln_oci::{Descriptor, Platform};

/// The index entry for `wanted`: an exact match if there is one, else the newest compatible
/// ARM variant (`arm/v7` runs `arm/v6` and `arm/v5`).
pub fn select<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let wanted = normalise(wanted);
    let found = compatible_variants(&wanted).find_map(|variant| {
        manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                let p = normalise(p);
                p.os == wanted.os && p.architecture == wanted.architecture && p.variant == variant
            })
        })
    });
    found
}

/// The platforms an index offers, for error messages; attestation entries
/// (`unknown/unknown`) are left out.
pub fn available(manifests: &[Descriptor]) -> String {
    let names: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Variants `wanted` can run, best first.
fn compatible_variants(wanted: &Platform) -> impl Iterator<Item = Option<String>> + '_ {
    let older: &[&str] = match (wanted.architecture.as_str(), wanted.variant.as_deref()) {
        ("arm", Some("v8")) => &["v7", "v6", "v5"],
        ("arm", Some("v7")) => &["v6", "v5"],
        ("arm", Some("v6")) => &["v5"],
        _ => &[],
    };
    std::iter::once(wanted.variant.clone()).chain(older.iter().map(|v| Some(v.to_string())))
}

/// Folds the spellings of one platform into one: Go architecture names, `arm64/v8` as plain
/// `arm64`, plain `arm` as `arm/v7`, `amd64/v1` as plain `amd64`.
fn normalise(p: &Platform) -> Platform {
    let architecture = match p.architecture.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "armhf" => "arm".to_string(),
        "i386" | "i686" => "386".to_string(),
        other => other.to_string(),
    };
    let variant = p.variant.as_deref().map(str::to_ascii_lowercase);
    let variant = match (architecture.as_str(), variant.as_deref()) {
        ("arm64", Some("v8" | "8")) | ("amd64", Some("v1")) => None,
        ("arm", None) => Some("v7".to_string()),
        ("arm", Some(v)) if !v.starts_with('v') => Some(format!("v{v}")),
        _ => variant,
    };
    Platform {
        os: p.os.to_ascii_lowercase(),
        architecture,
        variant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::Digest;

    fn entry(platform: &str) -> Descriptor {
        let p: Platform = platform.parse().unwrap();
        let mut d = Descriptor::new(
            kiln_oci::media_types::OCI_MANIFEST,
            Digest::of(platform.as_bytes()),
            1,
        );
        // Raw, unnormalised, as registries may serve them.
        let parts: Vec<&str> = platform.split('/').collect();
        d.platform = Some(Platform {
            os: p.os,
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        });
        d
    }

    fn pick(index: &[&str], wanted: &str) -> Option<String> {
        let entries: Vec<Descriptor> = index.iter().map(|p| entry(p)).collect();
        let wanted: Platform = Platform {
            os: wanted.split('/').next().unwrap().into(),
            architecture: wanted.split('/').nth(1).unwrap().into(),
            variant: wanted.split('/').nth(2).map(Into::into),
        };
        select(&entries, &wanted).map(|d| {
            let i = entries.iter().position(|e| e.digest == d.digest).unwrap();
            index[i].to_string()
        })
    }

    #[test]
    fn selects_by_os_arch_and_variant() {
        let index = [
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/ppc64le",
            "windows/amd64",
        ];
        let table = [
            ("linux/amd64", Some("linux/amd64")),
            ("linux/x86_64", Some("linux/amd64")),
            ("windows/amd64", Some("windows/amd64")),
            ("linux/arm64", Some("linux/arm64/v8")),
            ("linux/arm64/v8", Some("linux/arm64/v8")),
            ("linux/aarch64", Some("linux/arm64/v8")),
            ("linux/arm/v7", Some("linux/arm/v7")),
            ("linux/arm", Some("linux/arm/v7")),
            ("linux/arm/v6", Some("linux/arm/v6")),
            ("linux/arm/v5", None),
            ("linux/s390x", None),
            ("darwin/amd64", None),
        ];
        for (wanted, want) in table {
            assert_eq!(pick(&index, wanted).as_deref(), want, "{wanted}");
        }
    }

    #[test]
    fn arm_falls_back_to_older_variants_and_arm64_ignores_v8() {
        assert_eq!(
            pick(&["linux/arm/v5", "linux/arm/v6"], "linux/arm/v7").as_deref(),
            Some("linux/arm/v6")
        );
        assert_eq!(
            pick(&["linux/arm64"], "linux/arm64/v8").as_deref(),
            Some("linux/arm64")
        );
        assert_eq!(
            pick(&["linux/arm"], "linux/arm/v7").as_deref(),
            Some("linux/arm")
        );
        assert_eq!(pick(&["linux/arm64/v9"], "linux/arm64"), None);
    }

    #[test]
    fn lists_what_is_available() {
        let mut attestation = entry("linux/amd64");
        attestation.platform = Some(Platform {
            os: "unknown".into(),
            architecture: "unknown".into(),
            variant: None,
        });
        let entries = vec![entry("linux/amd64"), entry("linux/arm/v7"), attestation];
        assert_eq!(available(&entries), "linux/amd64, linux/arm/v7");
        assert_eq!(available(&[]), "none");
    }
}
