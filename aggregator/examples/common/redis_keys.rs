//! What the benchmarks share: removing a run's Redis keys.

/// Removes every key under `prefix` (SCAN and UNLINK, so Redis frees them in the background).
pub fn unlink_prefix(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let (mut cursor, mut removed) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        if !keys.is_empty() {
            removed += keys.len();
            redis::cmd("UNLINK").arg(&keys).query::<()>(&mut conn)?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
