//! Kubernetes-style resource quantities: memory (`256Mi`, `1G`) and CPU (`0.5`, `500m`);
//! and durations (`5s`, `10m`).

use std::time::Duration;

use crate::FieldError;

const MEMORY_UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

/// Smallest memory limit accepted: below this no interpreter starts.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// Parses a memory quantity into bytes.
pub fn parse_memory(field: &str, text: &str) -> Result<u64, FieldError> {
    let bytes = parse_bytes(field, text)?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(FieldError::new(
            field,
            format!("{:?} is below the minimum of 4Mi", text.trim()),
        ));
    }
    Ok(bytes)
}

/// Parses a size in bytes with the memory suffixes (`512Mi`, `1G`), any size.
pub fn parse_bytes(field: &str, text: &str) -> Result<u64, FieldError> {
    let text = text.trim();
    let (number, multiplier) = MEMORY_UNITS
        .iter()
        .find_map(|(suffix, m)| text.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((text, 1));
    let value: u64 = number.parse().map_err(|_| {
        FieldError::new(
            field,
            format!("{text:?} is not a memory quantity; use bytes or a suffix Ki, Mi, Gi, K, M, G (e.g. 256Mi)"),
        )
    })?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| FieldError::new(field, format!("{text:?} is too large")))
}

/// Most CPU a limit may name, in millicores (1024 cores), however it is written.
pub const MAX_CPU_MILLIS: u32 = 1024 * 1000;

/// Parses a CPU quantity into millicores.
pub fn parse_cpu(field: &str, text: &str) -> Result<u32, FieldError> {
    let text = text.trim();
    let invalid = || {
        FieldError::new(
            field,
            format!("{text:?} is not a CPU quantity; use cores (0.5, 2) or millicores (500m)"),
        )
    };
    let millis = if let Some(m) = text.strip_suffix('m') {
        m.parse::<u32>().map_err(|_| invalid())?
    } else {
        let cores: f64 = text.parse().map_err(|_| invalid())?;
        if !cores.is_finite() || cores < 0.0 {
            return Err(invalid());
        }
        (cores * 1000.0).round().min(f64::from(u32::MAX)) as u32
    };
    if millis < 10 {
        return Err(FieldError::new(field, format!("{text:?} is below the minimum of 10m")));
    }
    if millis > MAX_CPU_MILLIS {
        return Err(FieldError::new(
            field,
            format!("{text:?} is above the maximum of 1024 cores"),
        ));
    }
    Ok(millis)
}

/// Formats bytes back into the shortest exact binary quantity.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, m) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes.is_multiple_of(m) {
            return format!("{}{suffix}", bytes / m);
        }
    }
    bytes.to_string()
}

pub fn format_cpu(millis: u32) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Durations like `5s`, `10m`, `1h30m`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        FieldError::new(
            field,
            format!("{text:?} is not a duration ({e}); use e.g. 500ms, 5s, 10m"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bounds_hold_for_cores_and_millicores_alike() {
        // Found by the quantity_duration fuzz target: 155552000m was taken, and its
        // own formatting (155552 cores) was then refused.
        for text in ["155552000m", "1025", "1024001m", "4294967295m", "1e300"] {
            assert!(
                parse_cpu("cpu", text).unwrap_err().message.contains("maximum"),
                "{text}"
            );
        }
        for millis in [10, 500, 1000, 1_024_000] {
            assert_eq!(parse_cpu("cpu", &format_cpu(millis)).unwrap(), millis);
        }
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("memory", "256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_memory("memory", "1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("memory", "8388608").unwrap(), 8 << 20);
        assert_eq!(format_memory(256 << 20), "256Mi");
        assert_eq!(format_memory(3 << 30), "3Gi");
        let err = parse_memory("memory", "lots").unwrap_err();
        assert_eq!(err.field, "memory");
        assert!(err.message.contains("256Mi"));
        assert!(parse_memory("memory", "1Ki").is_err());
        assert!(parse_memory("memory", "99999999999Ti").is_err());
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("cpu", "0.5").unwrap(), 500);
        assert_eq!(parse_cpu("cpu", "250m").unwrap(), 250);
        assert_eq!(parse_cpu("cpu", "2").unwrap(), 2000);
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(2000), "2");
        assert!(parse_cpu("cpu", "-1").is_err());
        assert!(parse_cpu("cpu", "1m").is_err());
        assert!(parse_cpu("cpu", "fast").is_err());
    }
}
