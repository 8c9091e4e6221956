//! What a run may ask of the machine, checked from shapes before anything is allocated:
//! element counts must not overflow, and a tensor must fit under the memory limit
//! (`--max-memory`, default half of the machine's memory).

use std::sync::atomic::{AtomicU64, Ordering};

/// The limit set by [`set_max_memory`]; 0 while none was set.
static MAX_MEMORY: AtomicU64 = AtomicU64::new(0);

/// The memory limit when `/proc/meminfo` cannot be read: 8 GiB.
const FALLBACK_MAX_MEMORY: u64 = 8 << 30;

/// Sets the memory limit of this process (`--max-memory`), in bytes.
pub fn set_max_memory(bytes: u64) {
    MAX_MEMORY.store(bytes, Ordering::Relaxed);
}

/// The memory limit in bytes: the one set, else half of the machine's memory.
pub fn max_memory() -> u64 {
    match MAX_MEMORY.load(Ordering::Relaxed) {
        0 => default_max_memory(),
        set => set,
    }
}

/// Half of `MemTotal` in `/proc/meminfo` (8 GiB where it cannot be read), and no more than
/// half of the process's address-space limit (`ulimit -v`, RLIMIT_AS) when one is set: past
/// that limit an allocation aborts the process instead of failing. Read once.
pub fn default_max_memory() -> u64 {
    static DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let machine = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .map_or(FALLBACK_MAX_MEMORY, |total| total / 2);
        address_space_limit().map_or(machine, |cap| machine.min(cap / 2))
    })
}

/// The soft RLIMIT_AS of this process, when it is not unlimited.
#[cfg(unix)]
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    // rlim_t is u64 on Linux but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let cur = limit.rlim_cur as u64;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(cur)
}

#[cfg(not(unix))]
fn address_space_limit() -> Option<u64> {
    None
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Parses a byte count: a number with an optional suffix K, M, G or T (powers of 1024;
/// `KB`, `KiB`, … read alike), e.g. `512M`, `1.5G`, `1073741824`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let digits = upper.trim_end_matches(['B', 'I']);
    let (number, shift) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 10),
        Some('M') => (&digits[..digits.len() - 1], 20),
        Some('G') => (&digits[..digits.len() - 1], 30),
        Some('T') => (&digits[..digits.len() - 1], 40),
        _ => (digits, 0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{t:?} is not a byte count such as 4G, 512M or 1073741824"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!(
            "{t:?} is not a byte count between 1 and 2^64 such as 4G, 512M or 1073741824"
        ));
    }
    Ok(bytes as u64)
}

/// A byte count for people: `40.0 GiB`, `512.0 MiB`, `100 B`.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The number of elements of a tensor of shape `dims`, or `None` when it overflows.
pub fn elements(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Checks a float32 tensor of shape `dims` before it is allocated: its element count must
/// not overflow and its bytes must fit under [`max_memory`]. Returns the element count, or
/// why not (to be prefixed with what the tensor is and where its shape came from).
pub fn check_f32_tensor(dims: &[usize]) -> Result<usize, String> {
    check_tensor(dims, "float32", 4)
}

/// How many copies of an input batch a run holds at once: the decoded pixels, the batch in
/// model space, the backend's copy and a measure's perturbed one.
pub const INPUT_COPIES: u128 = 4;

/// Checks an input batch of shape `dims` (float32) before it is allocated: its element count
/// must not overflow, and [`INPUT_COPIES`] of it must fit under [`max_memory`].
pub fn check_input_batch(dims: &[usize]) -> Result<usize, String> {
    let n = check_f32_tensor(dims)?;
    let bytes = n as u128 * 4;
    let limit = max_memory();
    if bytes * INPUT_COPIES > u128::from(limit) {
        return Err(format!(
            "a run holds about {INPUT_COPIES} copies of a batch of float32 values of shape \
             {dims:?} ({} each), above the memory limit of {} (--max-memory; default half of \
             this machine's memory)",
            format_bytes(bytes),
            format_bytes(limit.into())
        ));
    }
    Ok(n)
}

/// [`check_f32_tensor`] for a tensor of `elem_bytes`-byte elements of type `type_name`.
pub fn check_tensor(dims: &[usize], type_name: &str, elem_bytes: usize) -> Result<usize, String> {
    let shape = || {
        let d: Vec<String> = dims.iter().map(usize::to_string).collect();
        format!("[{}]", d.join(", "))
    };
    let Some(n) = elements(dims) else {
        return Err(format!(
            "a tensor of {type_name} values of shape {} has more elements than memory can address",
            shape()
        ));
    };
    let bytes = n as u128 * elem_bytes as u128;
    let limit = max_memory();
    if bytes > u128::from(limit) {
        return Err(format!(
            "a tensor of {type_name} values of shape {} needs {}, above the memory limit of {} \
             (--max-memory; default half of this machine's memory)",
            shape(),
            format_bytes(bytes),
            format_bytes(limit.into())
        ));
    }
    Ok(n)
}

/// Checks every tensor of a tract model whose shape is known (after its input shape was
/// fixed) against the memory limit, before tract optimises the graph, which allocates some
/// of them (the offsets of a padded convolution, constants it folds). The error names the
/// node.
pub fn check_typed_model(model: &tract_onnx::prelude::TypedModel) -> Result<(), String> {
    for node in model.nodes() {
        for output in &node.outputs {
            let Some(dims) = output.fact.shape.as_concrete() else {
                continue;
            };
            let datum = output.fact.datum_type;
            let name = format!("{datum:?}").to_lowercase();
            check_tensor(dims, &name, datum.size_of()).map_err(|why| {
                format!(
                    "node {:?} ({}) would need too much memory: {why}",
                    node.name,
                    node.op().name()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_suffixes() {
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("100KB"), Ok(100 << 10));
        for bad in ["", "lots", "-1G", "0", "nan", "1e30T"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn overflowing_and_oversized_shapes_are_refused() {
        assert_eq!(elements(&[2, 3, 4]), Some(24));
        assert_eq!(elements(&[1 << 62, 8]), None);
        let e = check_f32_tensor(&[1 << 40, 1 << 40]).unwrap_err();
        assert!(e.contains("more elements"), "{e}");
        let e = check_f32_tensor(&[100_000, 100_000, 1000]).unwrap_err();
        assert!(e.contains("--max-memory") && e.contains("TiB"), "{e}");
        assert_eq!(check_f32_tensor(&[1, 3, 28, 28]), Ok(3 * 28 * 28));
        assert_eq!(format_bytes(40 << 30), "40.0 GiB");
    }
}
