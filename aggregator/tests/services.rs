//! The real services the cluster profile depends on are reachable and behave as the rest of
//! the code expects: a message goes through RabbitMQ with a publisher confirm, Redis keeps a
//! value, PostgreSQL answers a query. Each test fails with a message naming the service when
//! it cannot connect; none of them skips. `scripts/test.sh` brings the services up and exports
//! the URLs.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const TIMEOUT: Duration = Duration::from_secs(20);

fn url(var: &str, service: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: {service} is required for this test; run scripts/test.sh, which brings it up")
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}.{}.{nanos}", std::process::id())
}

#[tokio::test]
async fn rabbitmq_declares_publishes_with_confirm_and_consumes() {
    let url = url("AMQP_URL", "RabbitMQ");
    let conn =
        tokio::time::timeout(TIMEOUT, Connection::connect(&url, ConnectionProperties::default()))
            .await
            .expect("RabbitMQ: connect timed out")
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at AMQP_URL: {e}"));
    let channel = conn.create_channel().await.expect("RabbitMQ: open channel");
    let queue = unique("auditflow.test.services");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("RabbitMQ: declare queue");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("RabbitMQ: confirm_select");
    let body = wire::encode(&wire::Ack { epoch: 1, up_to_seq: 42 });
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(wire::CONTENT_TYPE.into()),
        )
        .await
        .expect("RabbitMQ: publish")
        .await
        .expect("RabbitMQ: publisher confirm");
    assert!(confirm.is_ack(), "RabbitMQ nacked the publish: {confirm:?}");

    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "services-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("RabbitMQ: consume");
    let delivery = tokio::time::timeout(TIMEOUT, consumer.next())
        .await
        .expect("RabbitMQ: no delivery within the timeout")
        .expect("RabbitMQ: consumer ended")
        .expect("RabbitMQ: delivery error");
    let ack: wire::Ack =
        wire::decode(&delivery.data).expect("the frame round-trips through RabbitMQ");
    assert_eq!(ack, wire::Ack { epoch: 1, up_to_seq: 42 });
    delivery.ack(BasicAckOptions::default()).await.expect("RabbitMQ: ack");
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("RabbitMQ: delete queue");
    conn.close(200, "done".into()).await.expect("RabbitMQ: close");
}

#[tokio::test]
async fn redis_sets_and_gets() {
    let url = url("REDIS_URL", "Redis");
    let client =
        redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("Redis: bad REDIS_URL: {e}"));
    let mut conn = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("Redis: connect timed out")
        .unwrap_or_else(|e| panic!("cannot connect to Redis at REDIS_URL: {e}"));
    let key = unique("auditflow:test:services");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("ok")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("Redis: SET");
    let got: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.expect("Redis: GET");
    assert_eq!(got, "ok");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.expect("Redis: TTL");
    assert!((1..=60).contains(&ttl), "Redis kept no TTL: {ttl}");
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("Redis: DEL");
}

#[tokio::test]
async fn postgres_answers_a_query() {
    let url = url("DATABASE_URL", "PostgreSQL");
    let pool = tokio::time::timeout(TIMEOUT, sqlx::PgPool::connect(&url))
        .await
        .expect("PostgreSQL: connect timed out")
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at DATABASE_URL: {e}"));
    let (sum, version): (i32, String) =
        sqlx::query_as("SELECT 40 + 2, current_setting('server_version')")
            .fetch_one(&pool)
            .await
            .expect("PostgreSQL: query");
    assert_eq!(sum, 42);
    assert!(!version.is_empty());
    let mut tx = pool.begin().await.expect("PostgreSQL: begin");
    sqlx::query("CREATE TEMP TABLE probe (v TEXT) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .expect("PostgreSQL: create");
    sqlx::query("INSERT INTO probe VALUES ($1)")
        .bind("ok")
        .execute(&mut *tx)
        .await
        .expect("PostgreSQL: insert");
    let (v,): (String,) = sqlx::query_as("SELECT v FROM probe")
        .fetch_one(&mut *tx)
        .await
        .expect("PostgreSQL: select");
    assert_eq!(v, "ok");
    tx.commit().await.expect("PostgreSQL: commit");
}
