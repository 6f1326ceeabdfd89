//! The SQL both backends run. PostgreSQL and SQLite accept the same statements here (`$N`
//! placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`, row values, integer times), so the
//! [`Store`](super::Store) implementation is written once, as a macro instantiated for each
//! backend's pool type: sqlx's traits generic over the database make a generic function
//! unreadable, while the macro keeps one readable body checked by the compiler twice.

/// The alert columns every alert query selects, in [`alert_from_row`]'s order.
pub(super) const ALERT_COLS: &str = "id, fingerprint, rule_id, rule_name, rule_description, \
     severity, title, tags, node, group_values, status, occurrences, first_seen, last_seen, \
     created_at, updated_at, correlation_id, remediation, playbook_url, silenced, raw_event";

/// The archive columns a read selects, in [`stored_row`]'s names.
pub(super) const ARCHIVE_COLS: &str = "id, node, ts_min, ts_max, n, created_at, frame";

/// `text` as a LIKE pattern matching it anywhere, lower-cased, with `\` as the escape.
pub(super) fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// What the text filter searches: title, rule, node and group values, lower-cased.
pub(super) fn search_text(f: &crate::detect::Firing) -> String {
    search_text_of(
        &f.title,
        &f.rule_id,
        &f.rule_name,
        &f.node,
        f.group.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// [`search_text`] of an alert made elsewhere than from a firing (an imported one).
pub(super) fn alert_search_text(a: &super::Alert) -> String {
    let values: Vec<(&str, String)> = a
        .group
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    search_text_of(
        &a.title,
        &a.rule_id,
        &a.rule_name,
        &a.node,
        values.iter().map(|(k, v)| (*k, v.as_str())),
    )
}

fn search_text_of<'a>(
    title: &str,
    rule_id: &str,
    rule_name: &str,
    node: &str,
    group: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut s = format!("{title}\n{rule_id}\n{rule_name}\n{node}");
    for (k, v) in group {
        s.push('\n');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s.to_lowercase()
}

/// Implements [`Store`](super::Store) for a type with fields `pool` (writes) and `read`
/// (reads) of one sqlx pool type, and `channels: Vec<Channel>`. The body, in order:
///
/// * row decoders: `alert_from_row`, `silence_from_row`;
/// * one alert by id: `find_alert`;
/// * writes: `commit_at` (firings folded into alerts, with their events and outbox rows, one
///   transaction), `record_heartbeats`;
/// * reads: `list_alerts` (keyset pages with filters), `list_alerts_offset` (the legacy
///   API), `alert` (one alert with its events, history and deliveries);
/// * operators' actions: `transition`;
/// * silences: `add_silence`, `silences`, `expire_silence`;
/// * fleet and statistics: `agents`, `stats`, `rule_counts`;
/// * notification outbox: `claim_outbox`, `delivered`, `delivery_failed`, `delivery_skipped`;
/// * history copied in: `import_alerts` (the legacy notification service's alerts);
/// * health: `ping`.
macro_rules! impl_store {
    ($store:ty, $row:ty) => {
        /// Adds `n` firings of `rule`, the newest at `newest`, to `rule_counts`. Callers go
        /// through rules in order (a BTreeMap), so two transactions lock these rows in the
        /// same order and cannot deadlock on them.
        async fn add_rule_counts(
            tx: &mut sqlx::Transaction<'_, <$row as sqlx::Row>::Database>,
            rule: &str,
            n: i64,
            newest: Option<i64>,
        ) -> anyhow::Result<()> {
            sqlx::query(
                "INSERT INTO rule_counts (rule_id, firings, last_fired) VALUES ($1, $2, $3)
                 ON CONFLICT (rule_id) DO UPDATE SET
                     firings = rule_counts.firings + excluded.firings,
                     last_fired = CASE WHEN rule_counts.last_fired IS NULL
                         OR excluded.last_fired > rule_counts.last_fired
                         THEN excluded.last_fired ELSE rule_counts.last_fired END",
            )
            .bind(rule)
            .bind(n)
            .bind(newest)
            .execute(&mut **tx)
            .await
            .context("count firings per rule")?;
            Ok(())
        }

        /// Takes deleted firings (their rule ids) off `rule_counts`; returns how many.
        async fn forget_firings(
            tx: &mut sqlx::Transaction<'_, <$row as sqlx::Row>::Database>,
            gone: Vec<(String,)>,
        ) -> anyhow::Result<u64> {
            let n = gone.len() as u64;
            let mut per_rule = std::collections::BTreeMap::<String, i64>::new();
            for (rule,) in gone {
                *per_rule.entry(rule).or_default() += 1;
            }
            for (rule, k) in per_rule {
                add_rule_counts(tx, &rule, -k, None).await?;
            }
            Ok(n)
        }

        fn alert_from_row(row: &$row) -> anyhow::Result<$crate::store::Alert> {
            use sqlx::Row;
            use sqlx::types::Json;
            let status: String = row.try_get("status")?;
            let group: Json<serde_json::Map<String, serde_json::Value>> =
                row.try_get("group_values")?;
            Ok($crate::store::Alert {
                id: row.try_get("id")?,
                fingerprint: row.try_get("fingerprint")?,
                rule_id: row.try_get("rule_id")?,
                rule_name: row.try_get("rule_name")?,
                rule_description: row.try_get("rule_description")?,
                severity: row.try_get("severity")?,
                title: row.try_get("title")?,
                tags: row.try_get::<Json<Vec<String>>, _>("tags")?.0,
                node: row.try_get("node")?,
                group: group.0,
                status: $crate::store::Status::parse(&status)
                    .ok_or_else(|| anyhow::anyhow!("unknown alert status {status:?}"))?,
                occurrences: row.try_get("occurrences")?,
                first_seen: row.try_get("first_seen")?,
                last_seen: row.try_get("last_seen")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                correlation_id: row.try_get("correlation_id")?,
                remediation: row.try_get("remediation")?,
                playbook_url: row.try_get("playbook_url")?,
                silenced: row.try_get("silenced")?,
                raw_event: row.try_get::<Json<serde_json::Value>, _>("raw_event")?.0,
            })
        }

        /// Inserts archive rows written at `created_at` (Unix ms), 256 a statement.
        async fn insert_archive_rows(
            tx: &mut sqlx::Transaction<'_, <$row as sqlx::Row>::Database>,
            rows: &[$crate::archive::Row],
            created_at: i64,
        ) -> anyhow::Result<()> {
            for chunk in rows.chunks(256) {
                let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                    "INSERT INTO event_batches (node, ts_min, ts_max, kinds, n, created_at,
                         packed, frame) ",
                );
                b.push_values(chunk, |mut row, r| {
                    row.push_bind(&r.node)
                        .push_bind(r.ts_min)
                        .push_bind(r.ts_max)
                        .push_bind(r.kinds)
                        .push_bind(r.n)
                        .push_bind(created_at)
                        .push_bind(r.packed())
                        .push_bind(&r.frame);
                });
                b.build().persistent(false).execute(&mut **tx).await?;
            }
            Ok(())
        }

        fn stored_row(row: &$row) -> anyhow::Result<$crate::archive::StoredRow> {
            use sqlx::Row;
            Ok($crate::archive::StoredRow {
                id: row.try_get("id")?,
                node: row.try_get("node")?,
                ts_min: row.try_get("ts_min")?,
                ts_max: row.try_get("ts_max")?,
                n: row.try_get("n")?,
                created_at: row.try_get("created_at")?,
                frame: row.try_get("frame")?,
            })
        }

        fn silence_from_row(row: &$row) -> anyhow::Result<$crate::store::Silence> {
            use sqlx::Row;
            use sqlx::types::Json;
            Ok($crate::store::Silence {
                id: row.try_get("id")?,
                matchers: row.try_get::<Json<Vec<$crate::store::Matcher>>, _>("matchers")?.0,
                comment: row.try_get("comment")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            // ── One alert by id ──

            async fn find_alert(
                &self,
                id: uuid::Uuid,
            ) -> anyhow::Result<Option<$crate::store::Alert>> {
                let sql =
                    format!("SELECT {} FROM alerts WHERE id = $1", $crate::store::sql::ALERT_COLS);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await
                    .context("read alert")?;
                row.as_ref().map(alert_from_row).transpose()
            }

            // ── Writes: detection's firings folded into alerts, agents' heartbeats ──

            async fn commit_batch_at(
                &self,
                firings: &[$crate::detect::Firing],
                archive: &[$crate::archive::Row],
                now: i64,
            ) -> anyhow::Result<$crate::store::Committed> {
                use sqlx::types::Json;
                use $crate::store::{ChangeKind, Committed, evidence_json, sql::search_text};
                let mut out = Committed::default();
                if firings.is_empty() && archive.is_empty() {
                    return Ok(out);
                }
                let mut tx = self.pool.begin().await.context("begin")?;
                // The batch's events go into the archive in the firings' transaction: what
                // is acknowledged is archived, and a retried batch archives nothing twice
                // unless it was committed before (then compaction keeps one copy).
                insert_archive_rows(&mut tx, archive, now).await.context("archive events")?;
                if firings.is_empty() {
                    tx.commit().await.context("commit")?;
                    return Ok(out);
                }
                let silences = {
                    let rows = sqlx::query("SELECT * FROM silences WHERE expires_at > $1")
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await
                        .context("read silences")?;
                    rows.iter().map(silence_from_row).collect::<anyhow::Result<Vec<_>>>()?
                };
                // A few statements for the whole batch, whatever its size (one round trip
                // per firing made firing-heavy streams, such as the legacy failure stream,
                // wait on the database). Each firing row is written once, with its alert:
                // which firings are new and which alerts are open are read first (no locks),
                // the firings are inserted, and the alerts, the rows every batch of a busy
                // group updates, are upserted last, so their row locks are held only from
                // there to the commit (two consumers or replicas writing the same alerts wait
                // on each other that long, not for the whole batch). Rows go in a fixed order
                // (firing id, fingerprint), so that overlapping batches lock them in the same
                // order.
                const CHUNK: usize = 512;
                let mut by_id: Vec<&$crate::detect::Firing> = firings.iter().collect();
                by_id.sort_by_key(|f| f.id);
                by_id.dedup_by_key(|f| f.id);
                let mut stored = std::collections::HashSet::<uuid::Uuid>::new();
                for chunk in by_id.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "SELECT id FROM firings WHERE id IN (",
                    );
                    let mut list = b.separated(", ");
                    for f in chunk {
                        list.push_bind(f.id);
                    }
                    b.push(")");
                    let ids: Vec<(uuid::Uuid,)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("look up firings")?;
                    stored.extend(ids.into_iter().map(|(id,)| id));
                }
                // The new firings by fingerprint, in the batch's order: the first of a group
                // creates the alert when none is open, the rest fold into it.
                let mut groups = std::collections::BTreeMap::<&str, Vec<&$crate::detect::Firing>>::new();
                // Firings inserted per rule: (count, newest event time), for rule_counts.
                let mut fired = std::collections::BTreeMap::<&str, (i64, i64)>::new();
                let mut fresh: std::collections::HashSet<uuid::Uuid> =
                    by_id.iter().map(|f| f.id).filter(|id| !stored.contains(id)).collect();
                for f in firings {
                    // Removed when counted: the same firing twice in one batch (an event
                    // evaluated twice, such as a rebased spool record next to its first
                    // delivery) is one firing and one duplicate.
                    if !fresh.remove(&f.id) {
                        out.duplicates += 1;
                        continue;
                    }
                    let ts = f.event.ts.as_nanos() / 1_000_000;
                    let c = fired.entry(&*f.rule_id).or_insert((0, i64::MIN));
                    *c = (c.0 + 1, c.1.max(ts));
                    groups.entry(f.fingerprint.as_str()).or_default().push(f);
                }
                let groups: Vec<(&str, Vec<&$crate::detect::Firing>)> = groups.into_iter().collect();
                // The alert each group will fold into: the open one, else the one its first
                // firing creates (an alert's id is its first firing's).
                let mut open = std::collections::HashMap::<String, uuid::Uuid>::new();
                for chunk in groups.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "SELECT fingerprint, id FROM alerts WHERE status <> 'resolved'
                             AND fingerprint IN (",
                    );
                    let mut list = b.separated(", ");
                    for (fingerprint, _) in chunk {
                        list.push_bind(*fingerprint);
                    }
                    b.push(")");
                    let rows: Vec<(String, uuid::Uuid)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("look up open alerts")?;
                    open.extend(rows);
                }
                let expected = |fingerprint: &str, g: &[&$crate::detect::Firing]| {
                    open.get(fingerprint).copied().unwrap_or(g[0].id)
                };
                let mut new_firings: Vec<(&$crate::detect::Firing, uuid::Uuid)> = groups
                    .iter()
                    .flat_map(|(fp, g)| {
                        let alert = expected(fp, g);
                        g.iter().map(move |f| (*f, alert))
                    })
                    .collect();
                new_firings.sort_by_key(|(f, _)| f.id);
                let mut inserted = 0usize;
                for chunk in new_firings.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO firings (id, rule_id, fingerprint, ts, count, node, event_id,
                             event, created_at, alert_id) ",
                    );
                    b.push_values(chunk, |mut row, (f, alert)| {
                        row.push_bind(f.id)
                            .push_bind(&*f.rule_id)
                            .push_bind(&f.fingerprint)
                            .push_bind(f.event.ts.as_nanos() / 1_000_000)
                            .push_bind(i64::from(f.count))
                            .push_bind(&f.node)
                            .push_bind(f.event_id)
                            .push_bind(Json(evidence_json(f)))
                            .push_bind(now)
                            .push_bind(*alert);
                    });
                    b.push(" ON CONFLICT (id) DO NOTHING");
                    inserted += b
                        .build()
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .context("insert firings")?
                        .rows_affected() as usize;
                }
                // Another replica stored one of them since the look-up (a redelivery it
                // processes at the same time): retried, the batch finds them stored.
                anyhow::ensure!(
                    inserted == new_firings.len(),
                    "{} of this batch's firings were stored by another writer meanwhile; retrying",
                    new_firings.len() - inserted
                );
                let mut alert_ids = std::collections::HashMap::<String, uuid::Uuid>::new();
                for chunk in groups.chunks(CHUNK / 2) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description,
                             severity, title, tags, node, group_values, occurrences, first_seen,
                             last_seen, created_at, updated_at, correlation_id, raw_event,
                             remediation, playbook_url, silenced, search_text) ",
                    );
                    b.push_values(chunk, |mut row, (_, g)| {
                        let (first, last) = (g[0], g[g.len() - 1]);
                        let times = g.iter().map(|f| f.event.ts.as_nanos() / 1_000_000);
                        let group: serde_json::Map<String, serde_json::Value> = first
                            .group
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone().into()))
                            .collect();
                        row.push_bind(first.id)
                            .push_bind(&first.fingerprint)
                            .push_bind(&*first.rule_id)
                            .push_bind(&*first.rule_name)
                            .push_bind(&*first.rule_description)
                            .push_bind(first.severity.as_legacy())
                            // As if folded one by one: the latest firing's title.
                            .push_bind(&last.title)
                            .push_bind(Json(first.tags.to_vec()))
                            .push_bind(&first.node)
                            .push_bind(Json(group))
                            .push_bind(g.len() as i64)
                            .push_bind(times.clone().min().unwrap_or(0))
                            .push_bind(times.max().unwrap_or(0))
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(first.event_id)
                            .push_bind(Json(evidence_json(first)))
                            .push_bind(first.remediation.as_deref().map(str::to_owned))
                            .push_bind(first.playbook_url.as_deref().map(str::to_owned))
                            .push_bind(silences.iter().any(|s| s.silences(first, now)))
                            .push_bind(search_text(first));
                    });
                    b.push(
                        " ON CONFLICT (fingerprint) WHERE status <> 'resolved' DO UPDATE SET
                             occurrences = alerts.occurrences + excluded.occurrences,
                             last_seen = CASE WHEN excluded.last_seen > alerts.last_seen
                                 THEN excluded.last_seen ELSE alerts.last_seen END,
                             first_seen = CASE WHEN excluded.first_seen < alerts.first_seen
                                 THEN excluded.first_seen ELSE alerts.first_seen END,
                             title = excluded.title,
                             updated_at = excluded.updated_at
                         RETURNING id, fingerprint",
                    );
                    let rows: Vec<(uuid::Uuid, String)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("upsert alerts")?;
                    alert_ids.extend(rows.into_iter().map(|(id, fp)| (fp, id)));
                }
                // Which alert each firing went to, what was created, what folded.
                let mut links: Vec<(uuid::Uuid, uuid::Uuid)> = Vec::new();
                let mut outbox_rows: Vec<(uuid::Uuid, &str, bool)> = Vec::new();
                let mut folded_into: Vec<uuid::Uuid> = Vec::new();
                for (fingerprint, g) in &groups {
                    let alert_id = *alert_ids
                        .get(*fingerprint)
                        .with_context(|| format!("no alert came back for {fingerprint}"))?;
                    // Resolved or opened by another writer since the look-up: the firings
                    // go to the alert that took them.
                    if alert_id != expected(fingerprint, g) {
                        links.extend(g.iter().map(|f| (f.id, alert_id)));
                    }
                    // The alert's id is its first firing's: it was created now exactly when
                    // the id that came back is this group's first.
                    let created = alert_id == g[0].id;
                    if created {
                        out.created += 1;
                        out.changed.push((alert_id, ChangeKind::Created));
                        let silenced = silences.iter().any(|s| s.silences(g[0], now));
                        for ch in &self.channels {
                            outbox_rows.push((alert_id, ch.name.as_str(), silenced && ch.silenceable));
                        }
                    }
                    let folds = g.len() - usize::from(created);
                    if folds > 0 {
                        out.folded += folds;
                        out.changed.push((alert_id, ChangeKind::Folded));
                        if !created {
                            folded_into.push(alert_id);
                        }
                    }
                }
                // VALUES columns are column1, column2 in both PostgreSQL and SQLite.
                for chunk in links.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "UPDATE firings SET alert_id = v.column2 FROM (",
                    );
                    b.push_values(chunk, |mut row, (firing, alert)| {
                        row.push_bind(*firing).push_bind(*alert);
                    });
                    b.push(") AS v WHERE firings.id = v.column1");
                    b.build().persistent(false).execute(&mut *tx).await.context("link firings")?;
                }
                for chunk in outbox_rows.chunks(CHUNK / 2) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO outbox (alert_id, channel, state, next_at, last_error,
                             created_at) ",
                    );
                    b.push_values(chunk, |mut row, (alert, channel, skipped)| {
                        row.push_bind(*alert)
                            .push_bind(*channel)
                            .push_bind(if *skipped { "skipped" } else { "pending" })
                            .push_bind(now)
                            .push_bind(skipped.then_some("silenced"))
                            .push_bind(now);
                    });
                    b.push(" ON CONFLICT (alert_id, channel) DO NOTHING");
                    b.build()
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .context("queue notifications")?;
                }
                // The channels that heard of them look again (notify/policy.rs).
                for chunk in folded_into.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "UPDATE outbox SET state = 'pending', attempts = 0, next_at = ",
                    );
                    b.push_bind(now).push(" WHERE state = 'delivered' AND alert_id IN (");
                    let mut list = b.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    b.push(")");
                    b.build().persistent(false).execute(&mut *tx).await.context("queue updates")?;
                }
                for (rule, (n, newest)) in fired {
                    add_rule_counts(&mut tx, rule, n, Some(newest)).await?;
                }
                tx.commit().await.context("commit")?;
                Ok(out)
            }

            async fn record_heartbeats(
                &self,
                beats: &[wire::model::Heartbeat],
                at: i64,
            ) -> anyhow::Result<()> {
                use sqlx::types::Json;
                if beats.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.context("begin")?;
                for h in beats {
                    let drops: serde_json::Map<String, serde_json::Value> = h
                        .dropped
                        .iter()
                        .map(|(r, n)| (r.as_str().to_owned(), n.into()))
                        .collect();
                    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    sqlx::query(
                        "INSERT INTO agents (node, version, rules_version, first_seen, last_seen,
                             uptime_secs, spool_bytes, events_sent, dropped, drops,
                             prev_events_sent, prev_seen)
                         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $7, $4)
                         ON CONFLICT (node) DO UPDATE SET
                             prev_events_sent = agents.events_sent,
                             prev_seen = agents.last_seen,
                             version = excluded.version,
                             rules_version = excluded.rules_version,
                             last_seen = excluded.last_seen,
                             uptime_secs = excluded.uptime_secs,
                             spool_bytes = excluded.spool_bytes,
                             events_sent = excluded.events_sent,
                             dropped = excluded.dropped,
                             drops = excluded.drops",
                    )
                    .bind(&h.node_id)
                    .bind(&h.version)
                    .bind(&h.rules_version)
                    .bind(at)
                    .bind(clamp(h.uptime_secs))
                    .bind(clamp(h.spool_bytes))
                    .bind(clamp(h.events_sent))
                    .bind(clamp(h.dropped.total()))
                    .bind(Json(&drops))
                    .execute(&mut *tx)
                    .await
                    .context("record heartbeat")?;
                }
                tx.commit().await.context("commit")?;
                Ok(())
            }

            async fn record_source_reports(
                &self,
                reports: &[$crate::store::SourceReport],
                at: i64,
            ) -> anyhow::Result<()> {
                use sqlx::types::Json;
                if reports.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.context("begin")?;
                for r in reports {
                    sqlx::query(
                        "INSERT INTO agent_sources (node, source, reported_at, stats)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (node, source) DO UPDATE SET
                             reported_at = excluded.reported_at, stats = excluded.stats",
                    )
                    .bind(&r.node)
                    .bind(r.source)
                    .bind(at)
                    .bind(Json(&r.stats))
                    .execute(&mut *tx)
                    .await
                    .context("record a source report")?;
                }
                tx.commit().await.context("commit")?;
                Ok(())
            }

            // ── Reads: alert lists and one alert with its events, history and deliveries ──

            async fn list_alerts(
                &self,
                q: &$crate::store::AlertQuery,
            ) -> anyhow::Result<$crate::store::AlertPage> {
                use $crate::store::{AlertPage, Cursor, sql::{ALERT_COLS, like_pattern}};
                // The filters other than the text, and the cursor, as a WHERE clause.
                fn push_filters(
                    b: &mut sqlx::QueryBuilder<<$row as sqlx::Row>::Database>,
                    q: &$crate::store::AlertQuery,
                ) {
                    b.push(" WHERE 1 = 1");
                    if !q.status.is_empty() {
                        b.push(" AND status IN (");
                        let mut list = b.separated(", ");
                        for s in &q.status {
                            list.push_bind(s.as_str());
                        }
                        b.push(")");
                    }
                    if !q.severity.is_empty() {
                        b.push(" AND severity IN (");
                        let mut list = b.separated(", ");
                        for s in &q.severity {
                            list.push_bind(s.clone());
                        }
                        b.push(")");
                    }
                    if let Some(node) = &q.node {
                        b.push(" AND node = ").push_bind(node.clone());
                    }
                    if let Some(rule) = &q.rule {
                        b.push(" AND rule_id = ").push_bind(rule.clone());
                    }
                    if let Some(since) = q.since {
                        b.push(" AND last_seen >= ").push_bind(since);
                    }
                    if let Some(until) = q.until {
                        b.push(" AND last_seen < ").push_bind(until);
                    }
                    // A row value, which both backends compare through the (last_seen, id) index.
                    if let Some(c) = q.after {
                        b.push(" AND (last_seen, id) < (").push_bind(c.last_seen);
                        b.push(", ").push_bind(c.id);
                        b.push(")");
                    }
                }
                // Every list query is planned for its values (no prepared statement kept): a
                // plan made for any `LIKE $n`, which PostgreSQL switches to after five runs of
                // a kept statement, cannot know the pattern is rare and walks every alert.
                async fn fetch(
                    mut b: sqlx::QueryBuilder<<$row as sqlx::Row>::Database>,
                    pool: &sqlx::Pool<<$row as sqlx::Row>::Database>,
                ) -> anyhow::Result<Vec<$row>> {
                    b.build().persistent(false).fetch_all(pool).await.context("list alerts")
                }
                const ORDER: &str = " ORDER BY last_seen DESC, id DESC LIMIT ";
                let page = |rows: Vec<$row>| -> anyhow::Result<AlertPage> {
                    let mut alerts =
                        rows.iter().map(alert_from_row).collect::<anyhow::Result<Vec<_>>>()?;
                    let more = alerts.len() as i64 > q.limit;
                    alerts.truncate(q.limit.max(0) as usize);
                    let next = if more {
                        alerts.last().map(|a| Cursor { last_seen: a.last_seen, id: a.id })
                    } else {
                        None
                    };
                    Ok(AlertPage { alerts, next })
                };
                if let Some(text) = &q.text {
                    let pattern = like_pattern(text);
                    // A text that many alerts contain is found among the newest alerts of the
                    // list: look there first (Self::TEXT_WINDOW rows in the list's order). The
                    // matches are the page when there are enough of them, since every alert
                    // outside the window is older. A trigram index, which the full query
                    // below uses, is what suits a rare text, and PostgreSQL's estimate cannot
                    // tell the two apart (a node name: 5,000 heap rows read for 50).
                    if let Some(window) = Self::TEXT_WINDOW {
                        let mut b = sqlx::QueryBuilder::new(format!(
                            "SELECT {ALERT_COLS} FROM (SELECT {ALERT_COLS}, search_text FROM alerts"
                        ));
                        push_filters(&mut b, q);
                        b.push(ORDER).push_bind(window);
                        b.push(") w WHERE search_text LIKE ").push_bind(pattern.clone());
                        b.push(" ESCAPE '\\'");
                        b.push(ORDER).push_bind(q.limit + 1);
                        let rows = fetch(b, &self.read).await?;
                        if rows.len() as i64 > q.limit {
                            return page(rows);
                        }
                    }
                    let candidates = self.text_candidates(text).await?;
                    if candidates.as_ref().is_some_and(Vec::is_empty) {
                        return Ok(AlertPage { alerts: Vec::new(), next: None });
                    }
                    let mut b = sqlx::QueryBuilder::new(format!("SELECT {ALERT_COLS} FROM alerts"));
                    push_filters(&mut b, q);
                    if let Some(ids) = candidates {
                        b.push(" AND id IN (");
                        let mut list = b.separated(", ");
                        for id in ids {
                            list.push_bind(id);
                        }
                        b.push(")");
                    }
                    b.push(" AND search_text LIKE ").push_bind(pattern);
                    b.push(" ESCAPE '\\'");
                    b.push(ORDER).push_bind(q.limit + 1);
                    return page(fetch(b, &self.read).await?);
                }
                let mut b = sqlx::QueryBuilder::new(format!("SELECT {ALERT_COLS} FROM alerts"));
                push_filters(&mut b, q);
                b.push(ORDER).push_bind(q.limit + 1);
                page(fetch(b, &self.read).await?)
            }

            async fn list_alerts_offset(
                &self,
                limit: i64,
                offset: i64,
            ) -> anyhow::Result<Vec<$crate::store::Alert>> {
                let sql = format!(
                    "SELECT {} FROM alerts ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
                    $crate::store::sql::ALERT_COLS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.read)
                    .await
                    .context("list alerts")?;
                rows.iter().map(alert_from_row).collect()
            }

            async fn alert(
                &self,
                id: uuid::Uuid,
            ) -> anyhow::Result<Option<$crate::store::AlertDetail>> {
                use sqlx::Row;
                use sqlx::types::Json;
                use $crate::store::{AlertDetail, Delivery, HistoryEntry};
                let Some(alert) = self.find_alert(id).await? else {
                    return Ok(None);
                };
                let evidence = sqlx::query(
                    "SELECT event FROM firings WHERE alert_id = $1 ORDER BY ts DESC, id DESC LIMIT $2",
                )
                .bind(id)
                .bind($crate::store::EVIDENCE_KEPT)
                .fetch_all(&self.read)
                .await
                .context("read evidence")?
                .iter()
                .map(|r| r.try_get::<Json<serde_json::Value>, _>("event").map(|j| j.0))
                .collect::<Result<Vec<_>, _>>()?;
                let history: Vec<HistoryEntry> = sqlx::query_as(
                    "SELECT at, actor, action, from_status, to_status, comment
                     FROM alert_history WHERE alert_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(&self.read)
                .await
                .context("read history")?;
                let deliveries: Vec<Delivery> = sqlx::query_as(
                    "SELECT channel, state, attempts, last_error, delivered_at
                     FROM outbox WHERE alert_id = $1 ORDER BY channel",
                )
                .bind(id)
                .fetch_all(&self.read)
                .await
                .context("read deliveries")?;
                Ok(Some(AlertDetail { alert, evidence, history, deliveries }))
            }

            // ── Operators' actions: acknowledge, resolve, reopen, with history ──

            async fn transition(
                &self,
                id: uuid::Uuid,
                action: $crate::store::Action,
                actor: &str,
                comment: &str,
                now: i64,
            ) -> anyhow::Result<$crate::store::Transitioned> {
                use $crate::store::{Status, Transitioned};
                let mut tx = self.pool.begin().await.context("begin")?;
                let current: Option<(String, String)> =
                    sqlx::query_as("SELECT status, fingerprint FROM alerts WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("read alert")?;
                let Some((status, fingerprint)) = current else {
                    return Ok(Transitioned::NotFound);
                };
                let (from, to) = action.transition();
                if !from.iter().any(|s| s.as_str() == status) {
                    return Ok(Transitioned::Conflict(format!(
                        "cannot {} an alert that is {status}",
                        action.as_str()
                    )));
                }
                if to == Status::Open && status == Status::Resolved.as_str() {
                    let other: Option<(uuid::Uuid,)> = sqlx::query_as(
                        "SELECT id FROM alerts WHERE fingerprint = $1 AND status <> 'resolved'",
                    )
                    .bind(&fingerprint)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("read alert")?;
                    if let Some((other,)) = other {
                        return Ok(Transitioned::Conflict(format!(
                            "alert {other} with the same fingerprint is open; it collects new firings"
                        )));
                    }
                }
                let changed = sqlx::query(
                    "UPDATE alerts SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
                )
                .bind(to.as_str())
                .bind(now)
                .bind(id)
                .bind(&status)
                .execute(&mut *tx)
                .await
                .context("update alert")?
                .rows_affected();
                if changed == 0 {
                    return Ok(Transitioned::Conflict("the alert changed meanwhile; retry".into()));
                }
                sqlx::query(
                    "INSERT INTO alert_history (alert_id, at, actor, action, from_status, to_status,
                         comment)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(now)
                .bind(actor)
                .bind(action.as_str())
                .bind(&status)
                .bind(to.as_str())
                .bind(comment)
                .execute(&mut *tx)
                .await
                .context("record history")?;
                // Every channel looks again, at once: a pending row waiting out its
                // group_interval or a re-send included. Given-up and skipped rows stay.
                sqlx::query(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_at = $1
                     WHERE alert_id = $2 AND state IN ('delivered', 'pending')",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .context("queue the change's notifications")?;
                tx.commit().await.context("commit")?;
                match self.find_alert(id).await? {
                    Some(alert) => Ok(Transitioned::Done(Box::new(alert))),
                    None => Ok(Transitioned::NotFound),
                }
            }

            // ── Silences ──

            async fn add_silence(&self, s: &$crate::store::Silence) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO silences (id, matchers, comment, created_by, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(s.id)
                .bind(sqlx::types::Json(&s.matchers))
                .bind(&s.comment)
                .bind(&s.created_by)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&self.pool)
                .await
                .context("add silence")?;
                Ok(())
            }

            async fn silences(
                &self,
                include_expired: bool,
                now: i64,
            ) -> anyhow::Result<Vec<$crate::store::Silence>> {
                let floor = if include_expired { i64::MIN } else { now };
                let rows = sqlx::query(
                    "SELECT * FROM silences WHERE expires_at > $1 ORDER BY created_at DESC, id",
                )
                .bind(floor)
                .fetch_all(&self.read)
                .await
                .context("read silences")?;
                rows.iter().map(silence_from_row).collect()
            }

            async fn expire_silence(&self, id: uuid::Uuid, now: i64) -> anyhow::Result<bool> {
                let changed = sqlx::query(
                    "UPDATE silences SET expires_at = CASE WHEN expires_at < $1 THEN expires_at
                         ELSE $1 END WHERE id = $2",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .context("expire silence")?
                .rows_affected();
                Ok(changed > 0)
            }

            // ── Fleet and statistics ──

            async fn agents(&self) -> anyhow::Result<Vec<$crate::store::Agent>> {
                use sqlx::Row;
                use sqlx::types::Json;
                let rows = sqlx::query("SELECT * FROM agents ORDER BY node")
                    .fetch_all(&self.read)
                    .await
                    .context("read agents")?;
                let mut sources: std::collections::HashMap<String, serde_json::Map<_, _>> =
                    std::collections::HashMap::new();
                let reports = sqlx::query("SELECT node, source, reported_at, stats FROM agent_sources")
                    .fetch_all(&self.read)
                    .await
                    .context("read agent sources")?;
                for r in &reports {
                    let mut stats = r.try_get::<Json<serde_json::Value>, _>("stats")?.0;
                    let at: i64 = r.try_get("reported_at")?;
                    if let Some(o) = stats.as_object_mut() {
                        o.insert("reported_at".into(), $crate::store::rfc3339(at).into());
                    }
                    sources
                        .entry(r.try_get("node")?)
                        .or_default()
                        .insert(r.try_get("source")?, stats);
                }
                rows.iter()
                    .map(|r| {
                        let sent: i64 = r.try_get("events_sent")?;
                        let prev_sent: i64 = r.try_get("prev_events_sent")?;
                        let last: i64 = r.try_get("last_seen")?;
                        let prev: i64 = r.try_get("prev_seen")?;
                        // A restarted agent counts from zero again: no rate for that interval.
                        let events_per_s = if last > prev && sent >= prev_sent {
                            (sent - prev_sent) as f64 * 1000.0 / (last - prev) as f64
                        } else {
                            0.0
                        };
                        Ok($crate::store::Agent {
                            node: r.try_get("node")?,
                            version: r.try_get("version")?,
                            rules_version: r.try_get("rules_version")?,
                            first_seen: r.try_get("first_seen")?,
                            last_seen: last,
                            uptime_secs: r.try_get("uptime_secs")?,
                            spool_bytes: r.try_get("spool_bytes")?,
                            events_sent: sent,
                            events_per_s,
                            dropped: r.try_get("dropped")?,
                            drops: r.try_get::<Json<serde_json::Value>, _>("drops")?.0,
                            sources: sources
                                .remove(&r.try_get::<String, _>("node")?)
                                .unwrap_or_default()
                                .into(),
                        })
                    })
                    .collect()
            }

            async fn retain_batch(
                &self,
                what: $crate::store::Retain,
                cutoff: i64,
                batch: i64,
            ) -> anyhow::Result<u64> {
                use $crate::store::Retain;
                let mut tx = self.pool.begin().await.context("begin")?;
                let deleted = match what {
                    Retain::ResolvedAlerts => {
                        // The same oldest resolved alerts, chosen again by each statement inside
                        // the one transaction; their dependants first.
                        const PICK: &str = "SELECT id FROM alerts WHERE status = 'resolved'
                             AND updated_at < $1 ORDER BY updated_at, id LIMIT $2";
                        for table in ["outbox", "alert_history"] {
                            let sql = format!("DELETE FROM {table} WHERE alert_id IN ({PICK})");
                            sqlx::query(sqlx::AssertSqlSafe(sql))
                                .bind(cutoff)
                                .bind(batch)
                                .execute(&mut *tx)
                                .await
                                .with_context(|| format!("delete old {table} rows"))?;
                        }
                        let sql = format!(
                            "DELETE FROM firings WHERE alert_id IN ({PICK}) RETURNING rule_id"
                        );
                        let gone: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .bind(cutoff)
                            .bind(batch)
                            .fetch_all(&mut *tx)
                            .await
                            .context("delete old firings rows")?;
                        forget_firings(&mut tx, gone).await?;
                        let sql = format!("DELETE FROM alerts WHERE id IN ({PICK})");
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(cutoff)
                            .bind(batch)
                            .execute(&mut *tx)
                            .await
                            .context("delete old alerts")?
                            .rows_affected()
                    }
                    Retain::Firings => {
                        let gone: Vec<(String,)> = sqlx::query_as(
                            "DELETE FROM firings WHERE id IN (SELECT id FROM firings
                                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)
                             RETURNING rule_id",
                        )
                        .bind(cutoff)
                        .bind(batch)
                        .fetch_all(&mut *tx)
                        .await
                        .context("delete old firings")?;
                        forget_firings(&mut tx, gone).await?
                    }
                    Retain::Agents => {
                        const PICK: &str = "SELECT node FROM agents WHERE last_seen < $1
                             ORDER BY last_seen LIMIT $2";
                        let sql = format!("DELETE FROM agent_sources WHERE node IN ({PICK})");
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(cutoff)
                            .bind(batch)
                            .execute(&mut *tx)
                            .await
                            .context("delete old source reports")?;
                        let sql = format!("DELETE FROM agents WHERE node IN ({PICK})");
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(cutoff)
                            .bind(batch)
                            .execute(&mut *tx)
                            .await
                            .context("delete retired agents")?
                            .rows_affected()
                    }
                    Retain::Events => sqlx::query(
                        "DELETE FROM event_batches WHERE id IN (SELECT id FROM event_batches
                             WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                    )
                    .bind(cutoff)
                    .bind(batch)
                    .execute(&mut *tx)
                    .await
                    .context("delete old archive rows")?
                    .rows_affected(),
                };
                tx.commit().await.context("commit")?;
                Ok(deleted)
            }

            // ── The event archive (archive.rs) ──

            async fn alert_firings(
                &self,
                id: uuid::Uuid,
                max: i64,
            ) -> anyhow::Result<Vec<$crate::store::FiringRef>> {
                sqlx::query_as(
                    "SELECT id, ts, node, event_id, count FROM firings WHERE alert_id = $1
                     ORDER BY ts DESC, id DESC LIMIT $2",
                )
                .bind(id)
                .bind(max)
                .fetch_all(&self.read)
                .await
                .context("read an alert's firings")
            }

            async fn archive_rows(
                &self,
                q: &$crate::store::ArchiveScan,
            ) -> anyhow::Result<Vec<$crate::archive::StoredRow>> {
                let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(format!(
                    "SELECT {} FROM event_batches WHERE ts_min >= ",
                    $crate::store::sql::ARCHIVE_COLS
                ));
                b.push_bind(q.from.saturating_sub($crate::archive::MAX_ROW_SPAN_MS));
                b.push(" AND ts_min <= ").push_bind(q.to);
                b.push(" AND ts_max >= ").push_bind(q.from);
                if let Some(node) = &q.node {
                    b.push(" AND node = ").push_bind(node.clone());
                }
                if q.kinds != 0 {
                    b.push(" AND (kinds & ").push_bind(q.kinds).push(") <> 0");
                }
                if let Some((ts, id)) = q.after {
                    b.push(if q.desc { " AND (ts_min, id) < (" } else { " AND (ts_min, id) > (" });
                    b.push_bind(ts).push(", ").push_bind(id).push(")");
                }
                b.push(if q.desc {
                    " ORDER BY ts_min DESC, id DESC LIMIT "
                } else {
                    " ORDER BY ts_min, id LIMIT "
                });
                b.push_bind(q.max);
                let rows = b
                    .build()
                    .persistent(false)
                    .fetch_all(&self.read)
                    .await
                    .context("read archive rows")?;
                rows.iter().map(stored_row).collect()
            }

            async fn archive_unpacked_rows(
                &self,
                before: i64,
                max: i64,
            ) -> anyhow::Result<Vec<$crate::archive::StoredRow>> {
                let sql = format!(
                    "SELECT {} FROM event_batches WHERE NOT packed AND created_at < $1
                     ORDER BY node, id LIMIT $2",
                    $crate::store::sql::ARCHIVE_COLS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before)
                .bind(max)
                .fetch_all(&self.read)
                .await
                .context("read unpacked archive rows")?;
                rows.iter().map(stored_row).collect()
            }

            async fn archive_written_since(
                &self,
                since: i64,
                after_id: i64,
                max: i64,
            ) -> anyhow::Result<Vec<$crate::archive::StoredRow>> {
                let sql = format!(
                    "SELECT {} FROM event_batches WHERE created_at >= $1 AND id > $2
                     ORDER BY id LIMIT $3",
                    $crate::store::sql::ARCHIVE_COLS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(since)
                    .bind(after_id)
                    .bind(max)
                    .fetch_all(&self.read)
                    .await
                    .context("read archive rows written since")?;
                rows.iter().map(stored_row).collect()
            }

            async fn archive_replace(
                &self,
                gone: &[i64],
                rows: &[$crate::archive::Row],
                created_at: i64,
            ) -> anyhow::Result<bool> {
                let mut tx = self.pool.begin().await.context("begin")?;
                let mut deleted = 0;
                for chunk in gone.chunks(500) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "DELETE FROM event_batches WHERE id IN (",
                    );
                    let mut list = b.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    b.push(")");
                    deleted += b
                        .build()
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .context("delete compacted archive rows")?
                        .rows_affected();
                }
                if deleted != gone.len() as u64 {
                    // Another replica merged some of them meanwhile: inserting ours would
                    // archive those events twice.
                    tx.rollback().await.context("rollback")?;
                    return Ok(false);
                }
                insert_archive_rows(&mut tx, rows, created_at)
                    .await
                    .context("insert compacted archive rows")?;
                tx.commit().await.context("commit")?;
                Ok(true)
            }

            async fn live_bytes(&self) -> anyhow::Result<i64> {
                self.backend_live_bytes().await
            }

            fn size_follows_deletes(&self) -> bool {
                Self::SIZE_FOLLOWS_DELETES
            }

            async fn reclaim(&self) -> anyhow::Result<()> {
                self.backend_reclaim().await
            }

            async fn channel_states(&self) -> anyhow::Result<Vec<$crate::store::ChannelState>> {
                let rows: Vec<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT channel,
                         SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END),
                         SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END),
                         SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END),
                         MAX(delivered_at)
                     FROM outbox GROUP BY channel ORDER BY channel",
                )
                .fetch_all(&self.read)
                .await
                .context("read channel states")?;
                let mut out = Vec::with_capacity(rows.len());
                for (channel, pending, failed, delivered, last_delivered_at) in rows {
                    let last_error: Option<(String,)> = sqlx::query_as(
                        "SELECT last_error FROM outbox WHERE channel = $1 AND last_error IS NOT NULL
                             AND state IN ('pending', 'failed')
                         ORDER BY id DESC LIMIT 1",
                    )
                    .bind(&channel)
                    .fetch_optional(&self.read)
                    .await
                    .context("read a channel's last error")?;
                    out.push($crate::store::ChannelState {
                        channel,
                        pending,
                        failed,
                        delivered,
                        last_delivered_at,
                        last_error: last_error.map(|(e,)| e),
                    });
                }
                Ok(out)
            }

            async fn stats(
                &self,
                from: i64,
                to: i64,
                bucket: i64,
            ) -> anyhow::Result<Vec<$crate::store::Bucket>> {
                if Self::STATS_PER_BUCKET {
                    // One row per bucket (at most 2,001, the API's bound) with its cells
                    // packed as "SEVERITY alerts firings,…" (severities are single words).
                    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
                        "WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k
                             WHERE $1 + (b + 1) * $3 < $2)
                         SELECT b, (SELECT group_concat(severity || ' ' || c || ' ' || f, ',')
                             FROM (SELECT severity, COUNT(*) AS c, SUM(occurrences) AS f
                                 FROM alerts WHERE first_seen >= $1 + k.b * $3
                                     AND first_seen < MIN($1 + (k.b + 1) * $3, $2)
                                 GROUP BY severity ORDER BY severity))
                         FROM k",
                    )
                    .bind(from)
                    .bind(to)
                    .bind(bucket)
                    .fetch_all(&self.read)
                    .await
                    .context("read stats")?;
                    let mut out = Vec::new();
                    for (b, cells) in rows {
                        for cell in cells.iter().flat_map(|c| c.split(',')) {
                            let mut parts = cell.split(' ');
                            let (Some(severity), Some(alerts), Some(firings), None) =
                                (parts.next(), parts.next(), parts.next(), parts.next())
                            else {
                                anyhow::bail!("read stats: unexpected cell {cell:?}");
                            };
                            out.push($crate::store::Bucket {
                                start: from + b * bucket,
                                severity: severity.to_owned(),
                                alerts: alerts.parse().context("read stats: alerts")?,
                                firings: firings.parse().context("read stats: firings")?,
                            });
                        }
                    }
                    return Ok(out);
                }
                // The window's rows come from the covering first_seen index. The subquery is
                // kept apart from the grouping (Self::FENCE): a planner that sees through it
                // expects one group per alert and sorts them all instead of hashing a few
                // hundred buckets.
                let sql = format!(
                    "SELECT b, severity, CAST(COUNT(*) AS BIGINT), CAST(SUM(occurrences) AS BIGINT)
                     FROM (SELECT CAST((first_seen - $1) / $3 AS BIGINT) AS b, severity, occurrences
                         FROM alerts WHERE first_seen >= $1 AND first_seen < $2 {}) w
                     GROUP BY b, severity ORDER BY b, severity",
                    Self::FENCE
                );
                let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .bind(bucket)
                .fetch_all(&self.read)
                .await
                .context("read stats")?;
                Ok(rows
                    .into_iter()
                    .map(|(b, severity, alerts, firings)| $crate::store::Bucket {
                        start: from + b * bucket,
                        severity,
                        alerts,
                        firings,
                    })
                    .collect())
            }

            async fn rule_counts(&self) -> anyhow::Result<Vec<$crate::store::RuleCount>> {
                let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT rule_id, firings, last_fired FROM rule_counts
                     WHERE firings > 0 ORDER BY rule_id",
                )
                .fetch_all(&self.read)
                .await
                .context("read rule counts")?;
                Ok(rows
                    .into_iter()
                    .map(|(rule_id, firings, last_fired)| $crate::store::RuleCount {
                        rule_id,
                        firings,
                        last_fired,
                    })
                    .collect())
            }

            // ── Notification outbox: claim, delivered, failed, skipped ──

            async fn claim_outbox(
                &self,
                now: i64,
                lease: i64,
                max: i64,
            ) -> anyhow::Result<Vec<$crate::store::OutboxItem>> {
                type Due = (i64, uuid::Uuid, String, i64, i64, Option<String>, i64, i64, Option<i64>, Option<i64>, Option<uuid::Uuid>);
                let due: Vec<Due> = sqlx::query_as(
                    "SELECT id, alert_id, channel, attempts, next_at, sent_status, sent_occurrences,
                         updates_sent, delivered_at, sent_firing_at, sent_firing_id
                     FROM outbox
                     WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2",
                )
                .bind(now)
                .bind(max)
                .fetch_all(&self.pool)
                .await
                .context("read outbox")?;
                let mut claimed = Vec::with_capacity(due.len());
                for (id, alert_id, channel, attempts, next_at, sent_status, sent_occurrences, updates_sent, delivered_at, firing_at, firing_id) in due {
                    // Another replica may have claimed it since the read: the guard on
                    // `next_at` makes exactly one claim win.
                    let won = sqlx::query(
                        "UPDATE outbox SET next_at = $1 WHERE id = $2 AND next_at = $3
                             AND state = 'pending'",
                    )
                    .bind(now + lease)
                    .bind(id)
                    .bind(next_at)
                    .execute(&self.pool)
                    .await
                    .context("claim outbox row")?
                    .rows_affected();
                    if won == 1 {
                        claimed.push($crate::store::OutboxItem {
                            id,
                            alert_id,
                            channel,
                            attempts,
                            sent_status,
                            sent_occurrences,
                            updates_sent,
                            delivered_at,
                            sent_firing: firing_at.zip(firing_id),
                        });
                    }
                }
                Ok(claimed)
            }

            async fn delivered(&self, id: i64, sent: &$crate::store::Sent) -> anyhow::Result<()> {
                // A message counts as an attempt; a re-send to come (Alertmanager) starts its
                // own count, so that a long-firing alert's re-sends do not run out of attempts.
                // The alert may have changed while the message was being sent (a firing
                // folded in, an acknowledgement): the store left the claimed row pending and
                // this would mark it delivered, so the change would never be announced. The
                // row stays pending, due at once, when the alert is past what was sent.
                sqlx::query(
                    "UPDATE outbox SET
                         state = CASE WHEN EXISTS (SELECT 1 FROM alerts a WHERE a.id = outbox.alert_id
                                 AND (a.occurrences > $5 OR a.status <> $4))
                             THEN 'pending' ELSE $1 END,
                         next_at = CASE WHEN EXISTS (SELECT 1 FROM alerts a WHERE a.id = outbox.alert_id
                                 AND (a.occurrences > $5 OR a.status <> $4))
                             THEN 0 ELSE COALESCE($2, next_at) END,
                         attempts = CASE WHEN $2 IS NOT NULL THEN 0
                             WHEN $3 IS NOT NULL THEN attempts + 1 ELSE attempts END,
                         last_error = NULL, delivered_at = COALESCE($3, delivered_at),
                         sent_status = $4, sent_occurrences = $5,
                         updates_sent = updates_sent + $6,
                         sent_firing_at = COALESCE($8, sent_firing_at),
                         sent_firing_id = COALESCE($9, sent_firing_id)
                     WHERE id = $7",
                )
                .bind(if sent.again_at.is_some() { "pending" } else { "delivered" })
                .bind(sent.again_at)
                .bind(sent.messaged_at)
                .bind(sent.status.as_str())
                .bind(sent.occurrences)
                .bind(i64::from(sent.update))
                .bind(id)
                .bind(sent.firing.map(|f| f.0))
                .bind(sent.firing.map(|f| f.1))
                .execute(&self.pool)
                .await
                .context("mark delivered")?;
                Ok(())
            }

            async fn defer_delivery(&self, id: i64, at: i64) -> anyhow::Result<()> {
                sqlx::query("UPDATE outbox SET next_at = $1 WHERE id = $2 AND state = 'pending'")
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .context("defer delivery")?;
                Ok(())
            }

            async fn delivery_failed(
                &self,
                id: i64,
                error: &str,
                retry_at: Option<i64>,
            ) -> anyhow::Result<()> {
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1, state = $2,
                         next_at = $3 WHERE id = $4",
                )
                .bind(error)
                .bind(if retry_at.is_some() { "pending" } else { "failed" })
                .bind(retry_at.unwrap_or(i64::MAX))
                .bind(id)
                .execute(&self.pool)
                .await
                .context("record delivery failure")?;
                Ok(())
            }

            async fn delivery_skipped(&self, id: i64, why: &str) -> anyhow::Result<()> {
                sqlx::query("UPDATE outbox SET state = 'skipped', last_error = $1 WHERE id = $2")
                    .bind(why)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .context("mark delivery skipped")?;
                Ok(())
            }

            async fn feed_firings(
                &self,
                alert: uuid::Uuid,
                after: Option<(i64, uuid::Uuid)>,
                limit: i64,
            ) -> anyhow::Result<Vec<$crate::store::FeedFiring>> {
                use sqlx::Row;
                use sqlx::types::Json;
                let (at, id) = after.unwrap_or((i64::MIN, uuid::Uuid::nil()));
                // Row values read the index firings_feed (alert_id, created_at, id) in order.
                sqlx::query(
                    "SELECT id, event_id, event, created_at FROM firings
                     WHERE alert_id = $1 AND (created_at, id) > ($2, $3)
                     ORDER BY created_at, id LIMIT $4",
                )
                .bind(alert)
                .bind(at)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .context("read the feed's firings")?
                .iter()
                .map(|r| {
                    Ok($crate::store::FeedFiring {
                        id: r.try_get("id")?,
                        event_id: r.try_get("event_id")?,
                        event: r.try_get::<Json<serde_json::Value>, _>("event")?.0,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
            }

            async fn feed_progress(
                &self,
                id: i64,
                firing: (i64, uuid::Uuid),
                next_at: i64,
            ) -> anyhow::Result<()> {
                sqlx::query(
                    "UPDATE outbox SET sent_firing_at = $1, sent_firing_id = $2, next_at = $3,
                         last_error = NULL
                     WHERE id = $4 AND state = 'pending'",
                )
                .bind(firing.0)
                .bind(firing.1)
                .bind(next_at)
                .bind(id)
                .execute(&self.pool)
                .await
                .context("record the feed's progress")?;
                Ok(())
            }

            // ── History copied in: the legacy notification service's alerts ──

            async fn import_alerts(
                &self,
                alerts: &[$crate::store::Alert],
                note: &$crate::store::HistoryEntry,
            ) -> anyhow::Result<usize> {
                use sqlx::types::Json;
                use $crate::store::sql::alert_search_text;
                if alerts.is_empty() {
                    return Ok(0);
                }
                const CHUNK: usize = 256;
                let mut tx = self.pool.begin().await.context("begin")?;
                // The record of imported ids first: a second run (or a concurrent one, which
                // waits on these rows) finds them here, even after retention deleted the
                // alerts themselves.
                let mut recorded = std::collections::HashSet::<uuid::Uuid>::new();
                for chunk in alerts.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO legacy_imports (alert_id, imported_at) ",
                    );
                    b.push_values(chunk, |mut row, a| {
                        row.push_bind(a.id).push_bind(note.at);
                    });
                    b.push(" ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id");
                    let ids: Vec<(uuid::Uuid,)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("record imported ids")?;
                    recorded.extend(ids.into_iter().map(|(id,)| id));
                }
                let fresh: Vec<&$crate::store::Alert> =
                    alerts.iter().filter(|a| recorded.contains(&a.id)).collect();
                // A legacy row the legacy service stored from AuditFlow's own feed has the
                // alert's id (feed `alert`) or a firing's (feed `firing`): already here.
                let mut ours = std::collections::HashSet::<uuid::Uuid>::new();
                for chunk in fresh.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "WITH ids (id) AS (",
                    );
                    b.push_values(chunk, |mut row, a| {
                        row.push_bind(a.id);
                    });
                    b.push(
                        ") SELECT id FROM alerts WHERE id IN (SELECT id FROM ids)
                         UNION SELECT id FROM firings WHERE id IN (SELECT id FROM ids)",
                    );
                    let ids: Vec<(uuid::Uuid,)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("look for AuditFlow's own alerts")?;
                    ours.extend(ids.into_iter().map(|(id,)| id));
                }
                let new: Vec<&$crate::store::Alert> =
                    fresh.into_iter().filter(|a| !ours.contains(&a.id)).collect();
                let mut stored = Vec::with_capacity(new.len());
                for chunk in new.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description,
                             severity, title, tags, node, group_values, status, occurrences,
                             first_seen, last_seen, created_at, updated_at, correlation_id,
                             raw_event, remediation, playbook_url, silenced, search_text) ",
                    );
                    b.push_values(chunk, |mut row, a| {
                        row.push_bind(a.id)
                            .push_bind(&a.fingerprint)
                            .push_bind(&a.rule_id)
                            .push_bind(&a.rule_name)
                            .push_bind(&a.rule_description)
                            .push_bind(&a.severity)
                            .push_bind(&a.title)
                            .push_bind(Json(&a.tags))
                            .push_bind(&a.node)
                            .push_bind(Json(&a.group))
                            .push_bind(a.status.as_str())
                            .push_bind(a.occurrences)
                            .push_bind(a.first_seen)
                            .push_bind(a.last_seen)
                            .push_bind(a.created_at)
                            .push_bind(a.updated_at)
                            .push_bind(a.correlation_id)
                            .push_bind(Json(&a.raw_event))
                            .push_bind(a.remediation.as_deref())
                            .push_bind(a.playbook_url.as_deref())
                            .push_bind(a.silenced)
                            .push_bind(alert_search_text(a));
                    });
                    b.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                    let ids: Vec<(uuid::Uuid,)> = b
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut *tx)
                        .await
                        .context("insert imported alerts")?;
                    stored.extend(ids.into_iter().map(|(id,)| id));
                }
                for chunk in stored.chunks(CHUNK) {
                    let mut b = sqlx::QueryBuilder::<<$row as sqlx::Row>::Database>::new(
                        "INSERT INTO alert_history (alert_id, at, actor, action, from_status,
                             to_status, comment) ",
                    );
                    b.push_values(chunk, |mut row, id| {
                        row.push_bind(*id)
                            .push_bind(note.at)
                            .push_bind(&note.actor)
                            .push_bind(&note.action)
                            .push_bind(&note.from_status)
                            .push_bind(&note.to_status)
                            .push_bind(&note.comment);
                    });
                    b.build()
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .context("record imported alerts' history")?;
                }
                tx.commit().await.context("commit")?;
                Ok(stored.len())
            }

            // ── Health ──

            async fn ping(&self) -> anyhow::Result<()> {
                sqlx::query("SELECT 1").execute(&self.read).await?;
                Ok(())
            }
        }
    };
}

pub(super) use impl_store;
